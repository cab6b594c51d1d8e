"""Per-detector adapters: head outputs -> DensePredictions (see docs/ARCHITECTURE.md)."""

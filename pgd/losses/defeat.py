"""KD loss module: defeat (see docs/ARCHITECTURE.md)."""

"""KD loss module: frs (see docs/ARCHITECTURE.md)."""

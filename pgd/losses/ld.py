"""KD loss module: ld (see docs/ARCHITECTURE.md)."""

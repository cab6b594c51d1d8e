"""KD loss module: fgfi (see docs/ARCHITECTURE.md)."""

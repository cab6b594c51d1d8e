"""KD loss module: fgd (see docs/ARCHITECTURE.md)."""

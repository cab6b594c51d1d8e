"""KD loss module: base (see docs/ARCHITECTURE.md)."""

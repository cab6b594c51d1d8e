"""KD loss module: fkd (see docs/ARCHITECTURE.md)."""

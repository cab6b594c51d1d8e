"""KD loss module: pgd_loss (see docs/ARCHITECTURE.md)."""

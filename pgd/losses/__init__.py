"""KD losses registered in mmdet's MODELS: PGD and the baselines (FGD, DeFeat, FRS, FKD, FGFI, LD)."""
from . import base  # noqa: F401
from . import pgd_loss, fgd, defeat, frs, fkd, fgfi, ld  # noqa: F401  (registration side effects)

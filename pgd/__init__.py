"""Prediction-Guided Distillation (PGD, ECCV 2022) for dense object detectors.

`import pgd` stays light (no mmdet import): the pure-torch core is in :mod:`pgd.core`.
`import pgd.models` and `import pgd.losses` register the distiller, heads and KD losses with mmdet.
"""

__version__ = "0.1.0"

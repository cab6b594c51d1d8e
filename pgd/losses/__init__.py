"""KD losses registered in mmdet's MODELS: PGD and the baselines.

Every module of this package is imported (and so registers its losses): a new method is one loss file here and
one config in configs/distill/ (docs/adding-a-method.md), with no list to extend.
"""
import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f'{__name__}.{_module.name}')

"""mmdet-registered models: the distiller, detector adapters, the ATSS IoU-branch head, assigners, layer fixes.

Importing this package registers everything with mmdet's registries (configs name it in ``custom_imports``).
"""
from . import assigners, layers, heads  # noqa: F401  (registration side effects)
from . import adapters, distiller, feature_autocast  # noqa: F401

# Runner.resume / load_from call torch.load themselves (weights_only=True under torch >= 2.6): register the
# mmengine checkpoint allow-list for any process that builds a project config (they all custom_import pgd.models).
from ..checkpoint import install_safe_globals

install_safe_globals()

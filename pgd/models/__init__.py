"""mmdet-registered models: the distiller, detector adapters, the ATSS IoU-branch head, layer fixes.

Importing this package registers everything with mmdet's registries (configs name it in ``custom_imports``).
"""
from . import layers, heads  # noqa: F401  (registration side effects)
from . import adapters, distiller  # noqa: F401

"""Layer-level fixes registered in mmengine's MODELS (see small_input_dcn for why 'DCN' is re-registered)."""
from .small_input_dcn import SmallInputDeformConv2dPack

__all__ = ['SmallInputDeformConv2dPack']

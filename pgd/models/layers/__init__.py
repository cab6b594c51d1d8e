"""Layer-level fixes (registered in mmdet/mmcv MODELS)."""

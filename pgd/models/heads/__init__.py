"""Custom detection heads (registered in mmdet MODELS)."""

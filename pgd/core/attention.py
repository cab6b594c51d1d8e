"""Eq. 7: spatial and channel attention of a feature map (FGD's, with per-location channel attention)."""
from __future__ import annotations

import torch
from torch import Tensor


def _check(feat: Tensor, tau: float) -> None:
    if feat.dim() != 4:
        raise ValueError(f"attention: expected features (N, C, H, W), got {tuple(feat.shape)}")
    if tau <= 0:
        raise ValueError(f"attention: temperature tau must be > 0, got {tau}")


def spatial_attention(feat: Tensor, tau: float, reduce: str = "sum") -> Tensor:
    """P = H*W * softmax over (h, w) of (reduce_c |F|) / tau, (N, C, H, W) -> (N, H, W); P sums to H*W.

    reduce='sum' is the paper's Eq. 7; 'mean' is the official code (and FGD), i.e. the paper's form at temperature
    C * tau.
    """
    _check(feat, tau)
    if reduce not in ("sum", "mean"):
        raise ValueError(f"spatial_attention: reduce must be 'sum' or 'mean', got {reduce!r}")
    n, c, h, w = feat.shape
    pooled = feat.abs().sum(1) if reduce == "sum" else feat.abs().mean(1)
    return (h * w) * torch.softmax((pooled / tau).reshape(n, -1), dim=1).reshape(n, h, w)


def channel_attention(feat: Tensor, tau: float) -> Tensor:
    """A = C * softmax over channels of |F| / tau at every location (no spatial pooling), (N, C, H, W)."""
    _check(feat, tau)
    return feat.shape[1] * torch.softmax(feat.abs() / tau, dim=1)

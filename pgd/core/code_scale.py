"""Loss weights for the paper's equations that give each term the official code's magnitude.

The official alphas (and the Table 6b sweep) were tuned on the code's normalisation (docs/pgd-settings.md). Under
the paper's Eqs. 5-9 the same weights give terms of another size. With N images per GPU and C channels, for masks
and reg sets of equal size in every image of the batch, the code's terms relate to the paper's exactly as:

* cls feature, fg and bg (Eq. 5): bug B1 distils every image with the batch-summed masks, N times the mask mass
  -> alpha and beta x N;
* reg feature (Eq. 6): the code averages over channels where Eq. 6 sums -> gamma / C;
* reg attention (Eq. 9): the code sums over channels where Eq. 9 averages -> delta x C;
* cls attention (Eq. 8): the code's channel term is C x the paper's (the same delta x C matches it); its spatial
  term is H W x the paper's and cannot share that factor: with delta x C it is C / (H W) of the code's (a small
  term: at 1333x800 H W runs from 16,800 at P3 to 77 at P7).

Unequal masks across images make the code's batch-summed masks spread weight onto other images' locations, so
measured ratios scatter around these factors (x0.21 for the cls feature at N = 4, x150-160 for the reg feature).
"""
from __future__ import annotations

from .settings import PGDSettings


def paper_weights_on_code_scale(cfg: PGDSettings, images_per_gpu: int, channels: int = 256) -> PGDSettings:
    """`cfg`'s alpha / beta / gamma / delta (code-scale values) rescaled for the paper's normalisation."""
    if isinstance(images_per_gpu, bool) or not isinstance(images_per_gpu, int) or images_per_gpu < 1:
        raise ValueError(f'code scale: images_per_gpu must be a positive int, got {images_per_gpu!r}')
    if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
        raise ValueError(f'code scale: channels must be a positive int, got {channels!r}')
    if cfg.mix_masks_across_batch or cfg.reg_loss_norm != 'paper' or cfg.att_loss_norm != 'paper':
        raise ValueError('code scale: the weights are rescaled for the paper normalisation only '
                         '(mix_masks_across_batch=False, reg_loss_norm and att_loss_norm = "paper")')
    n, c = images_per_gpu, channels
    return cfg.replace(alpha=cfg.alpha * n, beta=cfg.beta * n, gamma=cfg.gamma / c, delta=cfg.delta * c)

"""A DeformConv2dPack that accepts feature maps smaller than its kernel.

mmcv's DeformConv2d.forward zero-pads inputs smaller than the kernel, but DeformConv2dPack.forward (what the 'DCN'
conv_cfg builds, e.g. the first tower conv of DDODHead) calls the op directly and fails with
"input image is smaller than kernel". At the mini profile's image sizes P7 is 1x1 or 2x2, so DDOD could not run.

The fix pads the input with zeros at the bottom/right up to the kernel's extent, runs the unchanged layer and crops
the output back to the size the unpadded input gives. This is exact, not an approximation: a zero row/column
beyond the border is what both the zero-padding of the offset conv and DCN's bilinear sampling (which reads 0
outside the map) already see there, so outputs at the original positions do not change.

Registration: DDODHead hard-codes ``conv_cfg=dict(type='DCN')`` for its first conv (its ``conv_cfg`` argument
does not reach that layer), so a new name alone would not be picked up. The class is therefore registered as
'DCN' with ``force=True`` in mmengine's root MODELS registry (where mmcv registers 'DCN'; mmdet's scope falls back
to it), and also as 'SmallInputDCN' for explicit use. On inputs at least as large as the kernel it computes
exactly what DeformConv2dPack computes (tests/test_heads.py), with the same parameters and state-dict keys, so
every other 'DCN' user (e.g. ResNet dcn stages) is unaffected.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from mmcv.ops import DeformConv2dPack
from mmdet.registry import HOOKS
from mmengine.hooks import Hook
from mmengine.registry import MODELS
from torch import Tensor


def _out_size(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


@HOOKS.register_module()
class FreezeDCNOffsetsHook(Hook):
    """Freezes the offset branch (``conv_offset``) of every deformable conv of the trained model at the start of
    training. Used by the mini profile, whose DCN offsets stay at their zero init anyway (lr multiplier 0, see
    configs/profiles/mini.py): frozen, the layer runs as the plain convolution it then is (offsets_frozen_at_zero)."""

    def before_train(self, runner) -> None:
        for module in runner.model.modules():  # a DDP wrapper's modules() include the detector's
            if isinstance(module, DeformConv2dPack):
                module.conv_offset.requires_grad_(False)


@MODELS.register_module('SmallInputDCN')
@MODELS.register_module('DCN', force=True)
class SmallInputDeformConv2dPack(DeformConv2dPack):
    """DeformConv2dPack that zero-pads inputs smaller than the kernel and crops the output back."""

    def offsets_frozen_at_zero(self) -> bool:
        """True when the offset branch is frozen (no grad) with all-zero weights: every offset is then 0, the
        sampling grid is the regular one, and the layer is exactly a plain convolution (mmcv's kernels cost
        ~0.6 s of a 1 s DDOD step on the CPU). The mini profile freezes them (FreezeDCNOffsetsHook); a frozen
        teacher's zero offsets qualify too. Offsets that train never take this path."""
        w, b = self.conv_offset.weight, self.conv_offset.bias
        return not w.requires_grad and not w.any() and (b is None or not b.any())

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        if self.offsets_frozen_at_zero():
            return F.conv2d(x, self.weight.to(x.dtype), None, self.stride, self.padding, self.dilation, self.groups)
        if torch.is_autocast_enabled(x.device.type):
            # mmcv's deform-conv kernels take one dtype for input, offset and weight (fp32 here): run this layer
            # in fp32 inside an autocast region (pgd.models.feature_autocast)
            with torch.autocast(device_type=x.device.type, enabled=False):
                return self.forward(x.float())
        kh, kw = self.kernel_size
        h, w = x.shape[-2:]
        pad_h, pad_w = max(kh - h, 0), max(kw - w, 0)
        if not (pad_h or pad_w):
            return super().forward(x)
        out_h = _out_size(h, kh, self.stride[0], self.padding[0], self.dilation[0])
        out_w = _out_size(w, kw, self.stride[1], self.padding[1], self.dilation[1])
        if out_h < 1 or out_w < 1:
            raise ValueError(f'{type(self).__name__}: a {h}x{w} input gives an empty output for kernel '
                             f'{self.kernel_size}, padding {self.padding}, dilation {self.dilation}')
        out = super().forward(F.pad(x, (0, pad_w, 0, pad_h)).contiguous())
        return out[:, :, :out_h, :out_w].contiguous()

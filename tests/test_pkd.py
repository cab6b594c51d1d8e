"""PKD (pgd/losses/pkd.py) against hand-computed values and the paper's definition: per-channel standardisation,
then MSE / 2, which is (M - 1) / M * (1 - Pearson's r) for a channel of M values."""
from __future__ import annotations

import pytest
import torch

from pgd.losses.base import FeatureSet, KDContext
from pgd.losses.pkd import PKDLoss, standardise


def ctx(student, teacher):
    empty = torch.zeros(len(student[0]), 1, 4)
    return KDContext(student=FeatureSet(neck=student, head_outs=()), teacher=FeatureSet(neck=teacher, head_outs=()),
                     teacher_pred=None, gt_boxes=empty, gt_labels=empty[..., 0].long(), gt_valid=empty[..., 0].bool(),
                     batch_input_shape=(8, 8), img_shapes=[(8, 8)] * len(student[0]))


def test_by_hand_one_channel():
    s = torch.tensor([1.0, 2.0, 3.0]).reshape(1, 1, 1, 3)
    t = torch.tensor([2.0, 4.0, 7.0]).reshape(1, 1, 1, 3)
    # s: mean 2, sample std 1 -> (-1, 0, 1); t: mean 13/3, sample std sqrt(19/3) -> (-7, -1, 8) / (3 sqrt(19/3))
    t_std = torch.tensor([-7.0, -1.0, 8.0]) / (3 * (19 / 3) ** 0.5)
    expected = ((torch.tensor([-1.0, 0.0, 1.0]) - t_std) ** 2).mean() / 2
    loss = PKDLoss(loss_weight=1.0, num_levels=1, eps=0.0)(ctx([s], [t]))["loss_pkd"]
    torch.testing.assert_close(loss, expected)
    assert loss.item() == pytest.approx(0.0044005, abs=1e-6)
    # Pearson: r = 5 / (2 sqrt(19/3)); (M - 1) / M * (1 - r) with M = 3
    r = 5 / (2 * (19 / 3) ** 0.5)
    assert loss.item() == pytest.approx(2 / 3 * (1 - r), rel=1e-5)


def test_is_one_minus_pearson_per_channel_summed_over_levels():
    g = torch.Generator().manual_seed(0)
    student = [torch.randn(2, 4, 5, 6, generator=g), torch.randn(2, 4, 3, 3, generator=g)]
    teacher = [s + 0.5 * torch.randn(s.shape, generator=g) for s in student]
    loss = PKDLoss(loss_weight=10.0, num_levels=2, eps=0.0)(ctx(student, teacher))["loss_pkd"]
    expected = 0.0
    for s, t in zip(student, teacher):
        m = s.shape[0] * s.shape[2] * s.shape[3]
        for c in range(s.shape[1]):   # per channel: Pearson's r over batch and locations
            r = torch.corrcoef(torch.stack([s[:, c].flatten(), t[:, c].flatten()]))[0, 1]
            expected += (m - 1) / m * (1 - r) / s.shape[1]
    assert loss.item() == pytest.approx(10.0 * float(expected), rel=1e-5)


def test_invariant_to_channel_scale_and_offset_and_teacher_gets_no_gradient():
    g = torch.Generator().manual_seed(1)
    s = torch.randn(2, 3, 4, 4, generator=g, requires_grad=True)
    t = torch.randn(2, 3, 4, 4, generator=g, requires_grad=True)
    scale = torch.tensor([0.1, 3.0, 50.0]).reshape(1, 3, 1, 1)
    shift = torch.tensor([-5.0, 0.0, 7.0]).reshape(1, 3, 1, 1)
    loss = PKDLoss(num_levels=1)
    a = loss(ctx([s], [t]))["loss_pkd"]
    b = loss(ctx([s * scale + shift], [t * 2.0 - 1.0]))["loss_pkd"]
    assert a.item() == pytest.approx(b.item(), rel=1e-4)
    a.backward()
    assert s.grad is not None and s.grad.abs().sum() > 0 and t.grad is None
    torch.testing.assert_close(standardise(s.detach()).mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-6, rtol=0)
    assert loss(ctx([t.detach()], [t.detach()]))["loss_pkd"].item() == pytest.approx(0.0, abs=1e-10)

"""Eq. 7 attention and the PGD losses (Eqs. 5, 6, 8, 9, 10): hand values, paper vs code, official-code parity."""
import math

import pytest
import torch

from pgd.core import (PGDSettings, channel_attention, pgd_cls_loss, pgd_distill_loss, pgd_reg_loss,
                      spatial_attention)

torch.set_num_threads(1)
E = math.e
T1 = math.tanh(1.0)   # 2 sigmoid(2) - 1


# ---------------------------------------------------------------------------------------------- attention
F22 = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, -2.0]]]])   # (1, 2, 2, 2)


def test_spatial_attention_sum_and_mean():
    # sum_c |F| = [[1, 0], [0, 2]]; P = 4 softmax(.)
    z = E + 2 + E ** 2
    p = spatial_attention(F22, tau=1.0, reduce="sum")
    assert p.flatten().tolist() == pytest.approx([4 * E / z, 4 / z, 4 / z, 4 * E ** 2 / z])
    # mean_c |F| = [[0.5, 0], [0, 1]]
    z = E ** 0.5 + 2 + E
    p = spatial_attention(F22, tau=1.0, reduce="mean")
    assert p.flatten().tolist() == pytest.approx([4 * E ** 0.5 / z, 4 / z, 4 / z, 4 * E / z])
    # mean at tau equals sum at C * tau
    assert torch.allclose(spatial_attention(F22, 0.4, "mean"), spatial_attention(F22, 0.8, "sum"))
    assert spatial_attention(torch.rand(3, 5, 4, 6), 0.8).sum(dim=(1, 2)).tolist() == pytest.approx([24.0] * 3)


def test_channel_attention_per_location():
    a = channel_attention(F22, tau=1.0)
    assert a[0, :, 0, 0].tolist() == pytest.approx([2 * E / (E + 1), 2 / (E + 1)])
    assert a[0, :, 0, 1].tolist() == pytest.approx([1.0, 1.0])
    assert a[0, :, 1, 1].tolist() == pytest.approx([2 / (1 + E ** 2), 2 * E ** 2 / (1 + E ** 2)])
    assert torch.allclose(channel_attention(torch.randn(2, 7, 3, 3), 0.5).sum(1), torch.full((2, 3, 3), 7.0))


def test_attention_rejects_bad_input():
    with pytest.raises(ValueError, match="tau"):
        spatial_attention(F22, tau=0.0)
    with pytest.raises(ValueError, match="reduce"):
        spatial_attention(F22, tau=1.0, reduce="max")
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        channel_attention(F22[0], tau=1.0)


# ---------------------------------------------------------------------------------------------- loss hand values
# N=1, C=2, H=1, W=2. Teacher = 0 -> P^T = 1, A^T = 1 everywhere.
# Student: channel 0 = [1, 2], channel 1 = [3, 0]  ->  sum_c delta^2 = [10, 4]
# P^S (sum, tau 1) = 2 softmax([4, 2]) -> sum |P^T - P^S| = 2 tanh(1); A^S at both locations differs from 1 by
# tanh(1) in each channel -> sum |A^T - A^S| = 4 tanh(1).
FS = [torch.tensor([[[[1.0, 2.0]], [[3.0, 0.0]]]])]
FT = [torch.zeros(1, 2, 1, 2)]
FG = [torch.tensor([[[1.0, 0.0]]])]
BG = [torch.tensor([[[0.0, 1.0]]])]
REG = [torch.tensor([[[0.5, 0.0]]])]


def paper(**kw):
    return PGDSettings.paper(tau=1.0, alpha=1.0, beta=1.0, gamma=1.0, delta=1.0, **kw)


def test_cls_loss_hand_values_paper():
    fea, att = pgd_cls_loss(FS, FT, FG, BG, paper().replace(alpha=0.3, beta=0.7))
    assert fea.item() == pytest.approx(0.3 * 10 + 0.7 * 4)
    # Eq. 8: mean_hw |dP| + mean_chw |dA| = tanh(1) + tanh(1)
    assert att.item() == pytest.approx(2 * T1)


def test_cls_loss_hand_values_code_norm():
    _, att = pgd_cls_loss(FS, FT, FG, BG, paper(att_loss_norm="code"))
    # sum |dP| / N + sum |dA| / (N H W) = 2 tanh(1) + 4 tanh(1) / 2
    assert att.item() == pytest.approx(4 * T1)


def test_reg_loss_hand_values():
    fea, att = pgd_reg_loss(FS, FT, REG, paper())
    # paper: M = 0.5 / 1 at location 0; gamma * M * sum_c A^T delta^2 = 0.5 * 10; att = sum_c |dA| / (C * 1)
    assert fea.item() == pytest.approx(5.0)
    assert att.item() == pytest.approx(T1)
    fea, att = pgd_reg_loss(FS, FT, REG, paper(reg_loss_norm="code", att_loss_norm="code"))
    # code: over P = {location 0}: I * mean_c(A^T delta^2) = 0.5 * 5; att = sum_c |dA| / |P|
    assert fea.item() == pytest.approx(2.5)
    assert att.item() == pytest.approx(2 * T1)


def test_weights_level_weights_and_total():
    s = PGDSettings.paper(tau=1.0, alpha=0.08, delta=8e-4, level_weights=(1.0, 2.0))
    assert s.beta == pytest.approx(0.04) and s.gamma == pytest.approx(0.128)
    two = [FS[0], FS[0]], [FT[0], FT[0]], [FG[0], FG[0]], [BG[0], BG[0]]
    fea, att = pgd_cls_loss(*two, s)
    assert fea.item() == pytest.approx((1.0 + 2.0) * (0.08 * 10 + 0.04 * 4))   # level weights: fg/bg only
    assert att.item() == pytest.approx(2 * 8e-4 * 2 * T1)                       # ... not delta
    out = pgd_distill_loss(FS, FT, FS, FT, FG, REG, BG, s.replace(level_weights=None))
    assert out["total"].item() == pytest.approx(sum(out[k].item() for k in ("cls_fea", "cls_att", "reg_fea",
                                                                             "reg_att")))
    assert out["reg_fea"].item() == pytest.approx(0.128 * 5.0)


def test_empty_masks_give_zero_feature_loss():
    z = [torch.zeros(1, 1, 2)]
    fea, _ = pgd_cls_loss(FS, FT, z, z, paper())
    assert fea.item() == 0.0
    fea, att = pgd_reg_loss(FS, FT, z, paper(reg_loss_norm="code", att_loss_norm="code"))
    assert fea.item() == 0.0 and att.item() == 0.0


def test_gradient_reaches_student_only():
    fs = FS[0].clone().requires_grad_(True)
    ft = torch.rand(1, 2, 1, 2, requires_grad=True)
    out = pgd_distill_loss([fs], [ft], [fs], [ft], FG, REG, BG, paper())
    out["total"].backward()
    assert fs.grad is not None and fs.grad.abs().sum() > 0
    assert ft.grad is None


def test_paper_loss_is_a_batch_mean_and_mixing_is_not():
    g = torch.Generator().manual_seed(0)
    fs, ft = torch.rand(1, 4, 3, 3, generator=g), torch.rand(1, 4, 3, 3, generator=g)
    fg, bg = torch.rand(1, 3, 3, generator=g) * (torch.rand(1, 3, 3, generator=g) > 0.5), torch.ones(1, 3, 3)
    s = PGDSettings.paper()
    single = pgd_cls_loss([fs], [ft], [fg], [bg], s)[0]
    double = pgd_cls_loss([fs.repeat(2, 1, 1, 1)], [ft.repeat(2, 1, 1, 1)], [fg.repeat(2, 1, 1)],
                          [bg.repeat(2, 1, 1)], s)[0]
    assert double.item() == pytest.approx(single.item(), rel=1e-6)
    mixed = pgd_cls_loss([fs.repeat(2, 1, 1, 1)], [ft.repeat(2, 1, 1, 1)], [fg.repeat(2, 1, 1)],
                         [bg.repeat(2, 1, 1)], s.replace(mix_masks_across_batch=True))[0]
    assert mixed.item() == pytest.approx(2 * single.item(), rel=1e-6)


def test_shape_errors():
    with pytest.raises(ValueError, match="level counts"):
        pgd_cls_loss(FS, FT, FG, [], paper())
    with pytest.raises(ValueError, match="mask"):
        pgd_reg_loss(FS, FT, [torch.zeros(1, 2, 1)], paper())
    with pytest.raises(ValueError, match="same shape"):
        pgd_reg_loss(FS, [torch.zeros(1, 3, 1, 2)], REG, paper())


# ---------------------------------------------------------------------------------------------- official code
def official_cls_loss(fs, ft, fg, bg, tau, alpha, beta, delta, level_weight):
    """docs/methods.md §1.5 as coded: masks (N, 1, H, W) normalised by their non-zero count, then unsqueezed to
    (N, 1, 1, H, W) against (N, C, H, W) features -> an (N, N, C, H, W) broadcast; sqrt-weighted MSE sums / N."""
    n, c, h, w = fs.shape
    fg = fg[:, None] / (fg[:, None] != 0).sum(dim=(2, 3), keepdim=True).clamp(min=1e-10)
    bg = bg[:, None] / (bg[:, None] != 0).sum(dim=(2, 3), keepdim=True).clamp(min=1e-10)

    def attention(f):
        s_att = h * w * torch.softmax((f.abs().mean(1) / tau).reshape(n, -1), 1).reshape(n, h, w)
        return s_att, c * torch.softmax(f.abs() / tau, 1)

    s_t, c_t = attention(ft)
    s_s, c_s = attention(fs)
    scale = torch.sqrt(s_t[:, None]) * torch.sqrt(c_t)
    fg5, bg5 = fg.unsqueeze(1), bg.unsqueeze(1)                       # (N, 1, 1, H, W)
    fg_loss = ((fs * scale * fg5.sqrt() - ft * scale * fg5.sqrt()) ** 2).sum() / n
    bg_loss = ((fs * scale * bg5.sqrt() - ft * scale * bg5.sqrt()) ** 2).sum() / n
    mask_loss = (c_s - c_t).abs().sum() / (n * h * w) + (s_s - s_t).abs().sum() / n
    return level_weight * (alpha * fg_loss + beta * bg_loss) + delta * mask_loss


def official_reg_loss(fs, ft, imp, tau, gamma, delta):
    n, c, h, w = fs.shape
    s = fs.permute(0, 2, 3, 1).reshape(-1, c)
    t = ft.permute(0, 2, 3, 1).reshape(-1, c)
    target = imp.reshape(-1)
    pos = target != 0
    s, t, wgt = s[pos], t[pos], target[pos]
    if s.numel() == 0:
        return fs.sum() * 0
    a_s, a_t = c * torch.softmax(s.abs() / tau, 1), c * torch.softmax(t.abs() / tau, 1)
    fea = (((s - t) ** 2 * a_t).mean(1) * wgt).mean()
    return gamma * fea + delta * (a_s - a_t).abs().sum() / s.shape[0]


@pytest.mark.parametrize("detector", ["atss", "autoassign"])
def test_official_code_setting_matches_official_losses(detector):
    g = torch.Generator().manual_seed(1)
    s = PGDSettings.official_code(detector)
    sizes = [(6, 5), (3, 3), (2, 2), (1, 1), (1, 1)]
    n, c = 4, 8
    fs = [torch.relu(torch.randn(n, c, h, w, generator=g)) for h, w in sizes]
    ft = [torch.relu(torch.randn(n, c, h, w, generator=g)) for h, w in sizes]
    fg = [torch.rand(n, h, w, generator=g) * (torch.rand(n, h, w, generator=g) > 0.6) for h, w in sizes]
    bg = [(torch.rand(n, h, w, generator=g) > 0.5).float() for h, w in sizes]
    fg[3] = torch.zeros_like(fg[3])              # a level with no foreground at all
    fea, att = pgd_cls_loss(fs, ft, fg, bg, s)
    ref = sum(official_cls_loss(a, b, m, k, s.tau, s.alpha, s.beta, s.delta, s.level_weights[i])
              for i, (a, b, m, k) in enumerate(zip(fs, ft, fg, bg)))
    assert (fea + att).item() == pytest.approx(ref.item(), rel=1e-5)
    fea, att = pgd_reg_loss(fs, ft, fg, s)
    ref = sum(official_reg_loss(a, b, m, s.tau, s.gamma, s.delta) for a, b, m in zip(fs, ft, fg))
    assert (fea + att).item() == pytest.approx(ref.item(), rel=1e-5)

"""Figures: Fig. 1's region weightings on a hand-built case; PNG + PDF from fixed synthetic inputs."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from pgd.report import figures as F


def _dense(cls_prob, boxes):
    from pgd.losses.base import DensePredictions

    ys, xs = torch.meshgrid(torch.arange(8.0), torch.arange(8.0), indexing="ij")
    points = torch.stack([xs.reshape(-1) * 8 + 4, ys.reshape(-1) * 8 + 4], 1)      # 8x8 grid, stride 8
    a = points.shape[0]
    return DensePredictions(points=points, level=torch.zeros(a, dtype=torch.long), level_sizes=[(8, 8)],
                            strides=[8], boxes=boxes, cls_prob=cls_prob, valid=torch.ones(1, a, dtype=torch.bool))


def test_region_maps_hand_case():
    gt = torch.tensor([[[0.0, 0.0, 16.0, 16.0]]])
    labels, valid = torch.tensor([[0]]), torch.tensor([[True]])
    cls = torch.full((1, 64, 1), 0.1)
    boxes = gt[:, :, None].expand(1, 1, 64, 4).reshape(1, 64, 4).clone()             # every box = the GT
    cls[0, 9, 0] = 0.9                                                               # location (12, 12)
    maps = F.region_maps(_dense(cls, boxes), gt, labels, valid, k=1)
    grid = {k: v.reshape(8, 8) for k, v in maps.items()}
    # Box: the four centres strictly inside the 16x16 box
    assert grid["Box"].sum() == 4 and grid["Box"][:2, :2].all()
    # BoxGauss: exp(-0.5 * ((4-8)/8)^2 * 2) at each of them
    np.testing.assert_allclose(grid["BoxGauss"][:2, :2], math.exp(-0.25), rtol=1e-6)
    # FGFI: 64x64 anchors; IoU > 0.5 * max IoU (256/4096) for centres 4..36 on both axes -> 5 x 5
    assert grid["FGFI"].sum() == 25 and grid["FGFI"][:5, :5].all()
    # PGD with K = 1: all weight on the best-quality location, g = 1 there
    assert grid["PGD"][1, 1] == pytest.approx(1.0) and grid["PGD"].sum() == pytest.approx(1.0)


def _images(n=2, h=48, w=64):
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for _ in range(n)]


def _assert_files(paths, tmp_path, stem):
    assert [p.name for p in paths] == [f"{stem}.png", f"{stem}.pdf"]
    png, pdf = paths
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and pdf.read_bytes()[:5] == b"%PDF-"
    assert not list(tmp_path.glob(".*tmp*"))                        # the atomic writes left no temp file


def test_fig1_regions_png_pdf(tmp_path):
    imgs = _images()
    maps = {m: np.random.default_rng(1).random((2, 48, 64)) for m in F.FIG1_METHODS}
    boxes = [np.array([[4, 4, 30, 40]]), np.zeros((0, 4))]
    _assert_files(F.plot_regions(imgs, boxes, maps, tmp_path / "fig1"), tmp_path, "fig1")
    with pytest.raises(F.FigureError, match="gt_boxes: 1 entries for 2 images"):
        F.plot_regions(imgs, boxes[:1], maps, tmp_path / "bad")


def test_fig2_heatmaps_from_npz(tmp_path):
    """Reads `pgd heatmap`'s format (image_i, heatmap_i, gt_boxes_i, num_images); images may differ in size."""
    files = {}
    for j, det in enumerate(("FCOS", "ATSS")):
        imgs = _images(2)
        arrays = {"num_images": np.asarray(2)}
        for i, img in enumerate(imgs):
            arrays[f"image_{i}"] = img[: 48 - 8 * i]
            arrays[f"heatmap_{i}"] = np.random.default_rng(j).random(img[: 48 - 8 * i].shape[:2]).astype("f4")
            arrays[f"gt_boxes_{i}"] = np.array([[4, 4, 30, 30]], "f4")[:1 - i]
        np.savez_compressed(tmp_path / f"{det}.npz", **arrays)
        files[det] = tmp_path / f"{det}.npz"
    assert [h.shape for h in F.load_heatmap(files["ATSS"])["heatmaps"]] == [(48, 64), (40, 64)]
    _assert_files(F.fig2(files, tmp_path / "fig2"), tmp_path, "fig2")
    np.savez(tmp_path / "bad.npz", num_images=np.asarray(2), image_0=np.zeros((2, 2, 3)))
    with pytest.raises(F.FigureError, match="missing heatmap_0"):
        F.load_heatmap(tmp_path / "bad.npz")
    np.savez(tmp_path / "other.npz", x=np.zeros(2))
    with pytest.raises(F.FigureError, match="not a `pgd heatmap` file"):
        F.load_heatmap(tmp_path / "other.npz")


def test_fig3_pilot_png_pdf(tmp_path):
    files = {}
    for det, drop in (("FCOS", 20.0), ("ATSS", 30.0)):
        x = np.array([0, 0.5, 1, 2, 5, 10, 20, 50])
        pd.DataFrame({"X": x, "AP": 40 - drop * np.log1p(x) / np.log1p(50)}).to_csv(tmp_path / f"{det}.csv",
                                                                                       index=False)
        files[det] = tmp_path / f"{det}.csv"
    _assert_files(F.fig3(files, tmp_path / "fig3"), tmp_path, "fig3")
    pd.DataFrame({"ratio": [0]}).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(F.FigureError, match="needs columns X and AP"):
        F.load_pilot(tmp_path / "bad.csv")
    with pytest.raises(F.FigureError, match="pilot.csv not found"):
        F.load_pilot(tmp_path / "none.csv")


def test_fig3_allow_missing_draws_the_teachers_present(tmp_path, capsys):
    """Fig. 3 from the pilot of one teacher of five: refused by default (naming every absent file), drawn with
    --allow-missing, which names the teachers left out."""
    from pgd.matrix import load_matrix

    run = tmp_path / "mini" / "runs" / "fcos_r101_teacher"
    run.mkdir(parents=True)
    pd.DataFrame({"X": [0, 1, 10], "AP": [40.0, 35.0, 20.0]}).to_csv(run / "pilot.csv", index=False)
    with pytest.raises(F.FigureError, match="atss_r101_teacher/pilot.csv.*--allow-missing"):
        F.make_figure(3, "mini", tmp_path, load_matrix())
    paths = F.make_figure(3, "mini", tmp_path, load_matrix(), allow_missing=True)
    assert {p.suffix for p in paths} == {".png", ".pdf"}
    err = capsys.readouterr().err
    assert "leaving out AutoAssign, ATSS, GFL, DDOD" in err and "FCOS" not in err
    (run / "pilot.csv").unlink()
    with pytest.raises(F.FigureError, match="missing figure input"):           # none present: nothing to draw
        F.make_figure(3, "mini", tmp_path, load_matrix(), allow_missing=True)


def test_fig5_detections_png_pdf(tmp_path):
    gt = [np.array([[4, 4, 30, 40]]), np.array([[10, 10, 20, 20], [30, 5, 60, 40]])]
    st = [np.array([[5, 6, 28, 36]]), np.zeros((0, 4))]
    pg = [np.array([[4, 5, 30, 39]]), np.array([[11, 10, 20, 21]])]
    _assert_files(F.plot_detections(_images(), gt, st, pg, tmp_path / "fig5"), tmp_path, "fig5")


def test_unknown_figure():
    from pgd.matrix import MatrixError, load_matrix

    with pytest.raises(MatrixError, match="unknown figure 4"):
        F.make_figure(4, "mini", matrix=load_matrix())


def test_gt_is_scaled_into_the_input_frame():
    """mmdet's test pipeline loads GT after Resize: boxes are scaled by scale_factor (w, h) to the input frame."""
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData

    samples = []
    for boxes, scale in (([[10.0, 20.0, 30.0, 40.0]], (2.0, 0.5)), ([], (1.0, 1.0))):
        ds = DetDataSample(metainfo=dict(scale_factor=scale))
        ds.gt_instances = InstanceData(bboxes=torch.tensor(boxes).reshape(-1, 4),
                                       labels=torch.zeros(len(boxes), dtype=torch.long))
        samples.append(ds)
    gt_boxes, gt_labels, gt_valid = F.input_frame_gt(samples)
    assert gt_boxes[0, 0].tolist() == [20.0, 10.0, 60.0, 20.0]
    assert gt_valid.tolist() == [[True], [False]] and gt_labels.tolist() == [[0], [-1]]


def test_fig5_shows_the_k_best_boxes_or_those_above_a_threshold():
    import torch

    boxes = torch.tensor([[0., 0, 10, 10], [1, 1, 5, 5], [2, 2, 8, 8], [3, 3, 9, 9]])
    scores = torch.tensor([0.05, 0.20, 0.12, 0.01])
    # k = number of GT objects, best first, whatever the scores (short mini runs never reach 0.3)
    np.testing.assert_array_equal(F.shown_detections(boxes, scores, 2), boxes[[1, 2]].numpy())
    assert len(F.shown_detections(boxes, scores, 0)) == 1          # an empty image still shows the best guess
    assert len(F.shown_detections(boxes, scores, 9)) == 4
    np.testing.assert_array_equal(F.shown_detections(boxes, scores, 2, score_thr=0.1), boxes[[1, 2]].numpy())
    assert F.shown_detections(boxes, scores, 2, score_thr=0.3).shape == (0, 4)


def test_paint_finest_draws_each_weight_at_the_level_that_carries_it():
    from pgd.evaluation.heatmap import paint_finest

    points = torch.tensor([[4.0, 4.0], [12.0, 4.0], [4.0, 12.0], [12.0, 12.0], [8.0, 8.0]])   # P3 2x2, P4 1x1
    out = paint_finest(torch.tensor([[0.1, 0.0, 0.0, 0.4, 0.25]]), points, [(2, 2), (1, 1)], [8, 16], (16, 16))[0]
    # P3's own cells where P3 weights something (even below P4's value), P4 only where P3 is zero
    assert out[:8, :8].unique().tolist() == pytest.approx([0.1])
    assert out[8:, 8:].unique().tolist() == pytest.approx([0.4])
    assert out[:8, 8:].unique().tolist() == [0.25] and out[8:, :8].unique().tolist() == [0.25]
    assert paint_finest(torch.zeros(1, 5), points, [(2, 2), (1, 1)], [8, 16], (16, 16)).abs().sum() == 0


def test_box_union_mask_by_pixel_centres():
    mask = F.box_union_mask(np.array([[2.0, 2.0, 6.0, 5.0], [7.0, 7.0, 8.0, 8.0]]), (8, 8))
    assert mask.sum() == 4 * 3 + 1
    assert mask[2:5, 2:6].all() and mask[7, 7] and not mask[5, 2] and not mask[2, 6]
    assert not F.box_union_mask(np.zeros((0, 4)), (4, 4)).any()


def _captured(monkeypatch):
    figs = []
    monkeypatch.setattr(F, "save_figure", lambda fig, out_base: figs.append(fig) or [])
    return figs


def test_fig3_ticks_at_the_tested_x_values(monkeypatch):
    figs = _captured(monkeypatch)
    x = [0, 0.5, 1, 2, 5, 10, 20, 50]
    F.plot_pilot({"ATSS": pd.DataFrame({"X": x, "AP": np.linspace(40, 10, 8)}),
                  "FCOS": pd.DataFrame({"X": [0, 1, 50], "AP": [30, 29, 5]})}, "unused")
    ax = figs[0].axes[0]
    assert ax.get_xticks().tolist() == x
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "0.5", "1", "2", "5", "10", "20", "50"]
    assert len(ax.xaxis.get_minor_locator().tick_values(0, 50)) == 0


def test_fig2_has_one_colour_bar_for_the_quality_scale(monkeypatch):
    figs = _captured(monkeypatch)
    F.plot_heatmaps({"FCOS": [np.zeros((8, 8))] * 2, "ATSS": [np.ones((8, 8))] * 2}, "unused")
    bars = [a for a in figs[0].axes if a.get_ylabel().startswith("quality score")]
    assert len(bars) == 1 and len(figs[0].axes) == 2 * 2 + 1
    assert bars[0].get_ylim() == (0.0, 1.0)


def test_fig1_in_box_strategies_paint_only_inside_the_gt_boxes(tiny_run, monkeypatch):
    """On a tiny ATSS (64 px inputs, strides 8-128): Box, BoxGauss and PGD weight nothing outside the GT boxes,
    and Box fills most of each box at P3's resolution."""
    seen = {}
    monkeypatch.setattr(F, "plot_regions", lambda images, boxes, maps, out, teacher="": seen.update(boxes=boxes, maps=maps))
    F.fig1(tiny_run, "unused", num_images=3)
    for i, boxes in enumerate(seen["boxes"]):
        inside = F.box_union_mask(boxes, seen["maps"]["Box"][i].shape)
        for name in F.IN_BOX_METHODS:
            assert not seen["maps"][name][i][~inside].any(), (name, i)
        assert (seen["maps"]["Box"][i][inside] > 0).mean() > 0.5


from train_helpers import tiny_coco, tiny_run  # noqa: E402,F401  (session fixtures)


def test_fig1_teacher_choice_is_checked_before_any_work():
    """Fig. 1 defaults to the paper's ATSS teacher; --teacher picks another COCO teacher, a near-miss gets a
    suggestion, and the option is refused for the figures that draw fixed runs."""
    from pgd.matrix import FIG1_TEACHER, load_matrix

    m = load_matrix()
    assert F.fig1_teacher(m, None).id == FIG1_TEACHER
    assert F.fig1_teacher(m, "fcos_r101_teacher").detector == "fcos"
    with pytest.raises(F.FigureError, match="did you mean 'fcos_r101_teacher'"):
        F.fig1_teacher(m, "fcos_r101_teachr")
    with pytest.raises(F.FigureError, match="not a COCO teacher run"):
        F.fig1_teacher(m, "atss_r50_student")
    with pytest.raises(F.FigureError, match="--teacher is for Fig. 1 only"):
        F.make_figure(3, "mini", matrix=m, teacher="fcos_r101_teacher")

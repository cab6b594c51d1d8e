"""`pgd pilot` (Fig. 3): which predictions get dropped (hand-built cases) and the end-to-end run on a tiny model."""
import math

import pytest
import torch

from pgd.evaluation.pilot import drop_top_quality, pilot_keep_mask
from pgd.losses.base import DensePredictions

torch.set_num_threads(1)


def _hand_case():
    # box 0: candidates 0-3 with q 0.9, 0.1, 0.5, 0.5; locations 4, 5 are not its candidates (higher q ignored)
    # box 1: candidates 3-5 with q 0.2, 0.8, 0.3; box 2: padded (no candidates)
    quality = torch.tensor([[[0.9, 0.1, 0.5, 0.5, 0.95, 0.99],
                             [0.0, 0.0, 0.0, 0.2, 0.8, 0.3],
                             [0.7, 0.7, 0.7, 0.7, 0.7, 0.7]]])
    candidates = torch.tensor([[[1, 1, 1, 1, 0, 0], [0, 0, 0, 1, 1, 1], [0, 0, 0, 0, 0, 0]]], dtype=torch.bool)
    return quality, candidates


@pytest.mark.parametrize("ratio,dropped", [
    (0.0, []),
    (0.5, [0, 4]),        # ceil(0.02) = ceil(0.015) = 1 per box
    (25.0, [0, 4]),       # ceil(1.0) = 1, ceil(0.75) = 1
    (50.0, [0, 2, 4, 5]),  # box 0: 2 -> 0.9 then the 0.5 tie goes to the lower index (2); box 1: ceil(1.5) = 2
    (100.0, [0, 1, 2, 3, 4, 5]),
])
def test_drop_top_quality_hand_case(ratio, dropped):
    quality, candidates = _hand_case()
    drop = drop_top_quality(quality, candidates, ratio)
    assert torch.nonzero(drop[0]).flatten().tolist() == dropped


def test_drop_count_is_exact_at_round_percentages():
    # 0.5% of 200 candidates is exactly 1 (float rounding must not make it 2)
    quality = torch.rand(1, 1, 200, generator=torch.Generator().manual_seed(0))
    drop = drop_top_quality(quality, torch.ones(1, 1, 200, dtype=torch.bool), 0.5)
    assert drop.sum() == 1 and drop[0, quality[0, 0].argmax()]
    assert drop_top_quality(quality, torch.ones(1, 1, 200, dtype=torch.bool), 10.0).sum() == 20


def test_drop_rejects_bad_input():
    quality, candidates = _hand_case()
    with pytest.raises(ValueError, match="percentage"):
        drop_top_quality(quality, candidates, 150.0)
    with pytest.raises(ValueError, match=r"\(N, M, A\)"):
        drop_top_quality(quality[0], candidates[0], 10.0)


def test_keep_mask_from_dense_predictions():
    # 3 x 3 grid (stride 8); GT box [0,0,16,16] of class 0 holds locations 0, 1, 3, 4. Every predicted box equals
    # the GT box (IoU 1) so quality = p^0.2, ranked by p. Location 4 (highest p) is batch padding (valid False):
    # it is no candidate, n_b = 3, 50% -> ceil(1.5) = 2 dropped: locations 1 and 3.
    points = torch.tensor([[4.0 + 8 * c, 4.0 + 8 * r] for r in range(3) for c in range(3)])
    p = torch.tensor([0.3, 0.8, 0.9, 0.6, 0.95, 0.1, 0.2, 0.99, 0.4])
    dense = DensePredictions(points=points, level=torch.zeros(9, dtype=torch.long), level_sizes=[(3, 3)],
                             strides=[8], boxes=torch.tensor([0.0, 0.0, 16.0, 16.0]).expand(1, 9, 4).clone(),
                             cls_prob=torch.stack([p, 1 - p], -1)[None],
                             valid=torch.tensor([[True] * 4 + [False] + [True] * 4]))
    gt = torch.tensor([[[0.0, 0.0, 16.0, 16.0]]])
    keep = pilot_keep_mask(dense, gt, torch.tensor([[0]]), torch.tensor([[True]]), 50.0)
    assert torch.nonzero(~keep[0]).flatten().tolist() == [1, 3]
    # the second class would rank location 0 first (1 - 0.3 = 0.7 highest among 0, 1, 3)
    keep = pilot_keep_mask(dense, gt, torch.tensor([[1]]), torch.tensor([[True]]), 10.0)
    assert torch.nonzero(~keep[0]).flatten().tolist() == [0]
    assert pilot_keep_mask(dense, gt, torch.tensor([[0]]), torch.tensor([[False]]), 50.0).all()


def test_pilot_end_to_end(tiny_run, tmp_path):
    """On a 4-iteration tiny ATSS: the X = 0 row equals `pgd eval`, drops grow with X, the CSV is written."""
    import pandas as pd

    from pgd.evaluation.run_eval import evaluate
    from pgd.evaluation import pilot

    out = tmp_path / "pilot.csv"
    # score_thr 0: the barely trained model then keeps its top-scoring boxes, so AP is defined and non-trivial
    keep_all = {"model.test_cfg.score_thr": 0.0}
    assert pilot.main(["--run-dir", str(tiny_run), "--out", str(out), "--ratios", "0", "1", "50", "100",
                       "--threads", "1", "--set", "model.test_cfg.score_thr=0.0"]) == 0
    table = pd.read_csv(out)
    assert list(table.columns) == ["X", "AP", "AP50", "AP75", "APs", "APm", "APl", "dropped_per_image"]
    assert table["X"].tolist() == [0.0, 1.0, 50.0, 100.0]
    assert table["dropped_per_image"].is_monotonic_increasing and table["dropped_per_image"].iloc[0] == 0
    assert table["dropped_per_image"].iloc[-1] > 0
    record, _ = evaluate(tiny_run, out=tmp_path / "metrics.json", overrides=keep_all)
    for key in ("AP", "AP50", "AP75"):
        assert math.isclose(table[key].iloc[0], record[key]), key


def test_pilot_forward_matches_detector_predict(tiny_run):
    """The pilot's path (extract_feat -> bbox_head -> masked predict_by_feat) with nothing dropped gives exactly
    the detector's own predictions; dropping every location leaves no detection even at score_thr 0."""
    from pgd.evaluation.pilot import load_detector
    from pgd.models.adapters import build_adapter

    model, loader, _ = load_detector(tiny_run, overrides={"model.test_cfg.score_thr": 0.0})
    batch = next(iter(loader))
    with torch.no_grad():
        data = model.data_preprocessor(batch, False)
        expected = model.predict(data["inputs"], data["data_samples"], rescale=True)
        metas = [ds.metainfo for ds in data["data_samples"]]
        outs = model.bbox_head(model.extract_feat(data["inputs"]))
        adapter = build_adapter(model)
        a = adapter.dense_predictions(outs, metas).num_points
        n = len(metas)
        kept = model.bbox_head.predict_by_feat(*adapter.mask_predictions(outs, torch.ones(n, a, dtype=torch.bool)),
                                               batch_img_metas=metas, rescale=True)
        none = model.bbox_head.predict_by_feat(*adapter.mask_predictions(outs, torch.zeros(n, a, dtype=torch.bool)),
                                               batch_img_metas=metas, rescale=True)
    for exp, got, empty in zip(expected, kept, none):
        assert len(exp.pred_instances) > 0
        assert torch.equal(exp.pred_instances.bboxes, got.bboxes)
        assert torch.equal(exp.pred_instances.scores, got.scores)
        assert len(empty) == 0


# ---------------------------------------------------------------------------------------------- heatmaps (Fig. 2)
def test_paint_levels_point_and_anchor_conventions():
    from pgd.evaluation.heatmap import paint_levels

    values = torch.tensor([[0.1, 0.2, 0.3, 0.4, 0.25]])          # P3 2x2 then P4 1x1
    fcos = torch.tensor([[4.0, 4.0], [12.0, 4.0], [4.0, 12.0], [12.0, 12.0], [8.0, 8.0]])
    out = paint_levels(values, fcos, [(2, 2), (1, 1)], [8, 16], (16, 16))[0]
    # quadrants: max(P3 cell, P4 = 0.25)
    assert out[:8, :8].unique().tolist() == [0.25] and out[:8, 8:].unique().tolist() == [0.25]
    assert out[8:, :8].unique().tolist() == pytest.approx([0.3]) and out[8:, 8:].unique().tolist() == pytest.approx([0.4])
    anchors = torch.tensor([[0.0, 0.0], [8.0, 0.0], [0.0, 8.0], [8.0, 8.0], [0.0, 0.0]])
    out = paint_levels(torch.tensor([[0.1, 0.2, 0.3, 0.4, 0.0]]), anchors, [(2, 2), (1, 1)], [8, 16], (16, 16))[0]
    # anchor centres j*s own [j*s - s/2, j*s + s/2): pixel 3 belongs to column 0, pixel 4 to column 1
    assert out[3, 3].item() == pytest.approx(0.1) and out[4, 4].item() == pytest.approx(0.4)
    assert out[3, 4].item() == pytest.approx(0.2) and out[15, 0].item() == pytest.approx(0.3)


def test_heatmap_end_to_end(tiny_run, tiny_coco, tmp_path):
    import numpy as np
    from PIL import Image

    from pgd.evaluation import heatmap

    out = tmp_path / "heat.npz"
    assert heatmap.main(["--run-dir", str(tiny_run), "--out", str(out), "--num-images", "3", "--threads", "1"]) == 0
    data = np.load(out)
    assert int(data["num_images"]) == 3 and str(data["detector"]) == "atss" and float(data["xi"]) == 0.8
    for i in range(3):
        img, heat = data[f"image_{i}"], data[f"heatmap_{i}"]
        assert img.shape == (64, 64, 3) and heat.shape == (64, 64) and heat.dtype == np.float32
        assert heat.min() >= 0 and heat.max() <= 1
        assert data[f"gt_boxes_{i}"].shape[1] == 4 and len(data[f"gt_labels_{i}"]) == len(data[f"gt_boxes_{i}"])
        source = np.asarray(Image.open(str(data["img_paths"][i])).convert("RGB"))
        assert np.array_equal(img, source)      # RGB, unpadded, the 64 px input is not resized


from train_helpers import tiny_coco, tiny_run  # noqa: E402,F401  (session fixtures)


def test_batch_gt_brings_original_boxes_into_the_input_frame():
    """The test pipeline loads annotations after Resize: GT must be scaled by scale_factor (w, h)."""
    import torch
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData

    from pgd.evaluation.pilot import batch_gt

    a = DetDataSample(metainfo=dict(scale_factor=(2.0, 0.5)))
    a.gt_instances = InstanceData(bboxes=torch.tensor([[10., 20., 30., 40.]]), labels=torch.tensor([3]))
    b = DetDataSample(metainfo=dict(scale_factor=(1.0, 1.0)))
    b.gt_instances = InstanceData(bboxes=torch.zeros((0, 4)), labels=torch.zeros((0,), dtype=torch.long))
    boxes, labels, valid = batch_gt([a, b])
    assert boxes.shape == (2, 1, 4)
    assert boxes[0, 0].tolist() == [20., 10., 60., 20.]
    assert labels.tolist() == [[3], [-1]]
    assert valid.tolist() == [[True], [False]]

"""`pgd pretrain` and its synthetic shape-classification images (the mini profile's stand-in for ImageNet)."""
from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from mmengine.logging import MMLogger

from pgd.config import ConfigCompositionError, compose_config
from pgd.data import synth_shapes
from pgd.pretrain import build_classifier, pretrain

MMLogger.get_instance("mmengine").setLevel(logging.WARNING)


def test_shape_images_are_deterministic_balanced_and_normalised():
    a, la = synth_shapes.render_example(0, 5)
    b, lb = synth_shapes.render_example(0, 5)
    c, _ = synth_shapes.render_example(0, 6)
    d, _ = synth_shapes.render_example(1, 5)
    assert a.dtype == np.uint8 and a.shape == (64, 64, 3)
    assert np.array_equal(a, b) and la == lb
    assert not np.array_equal(a, c) and not np.array_equal(a, d)
    x, y = synth_shapes.render_batch(0, range(600))
    counts = np.bincount(y, minlength=synth_shapes.NUM_CLASSES)
    assert synth_shapes.NUM_CLASSES == 7 and synth_shapes.CLASS_NAMES[synth_shapes.PERSON] == "person"
    assert counts.sum() == 600 and counts.min() >= 60 and counts.max() <= 115   # ~86 each of 7 classes
    # the detectors' DetDataPreprocessor normalisation, RGB order, channels first
    assert x.shape == (600, 3, 64, 64) and x.dtype == np.float32
    back = x[5].transpose(1, 2, 0) * synth_shapes.STD + synth_shapes.MEAN
    np.testing.assert_allclose(back, a.astype(np.float32), atol=1e-3)


def test_one_object_of_the_labelled_class_per_image():
    """The image is the detection set's renderer with exactly one object: its class is the label."""
    from pgd.data.synth_coco import render_image

    style = synth_shapes.classification_style(64)
    rng = np.random.default_rng([0, synth_shapes.STREAM, 3])
    assert rng.random() >= 1 / synth_shapes.NUM_CLASSES  # example 3 is a shape, not the person class
    img, objects = render_image(rng, 64, empty=False, style=style)
    expected, label = synth_shapes.render_example(0, 3)
    assert len(objects) == 1 and objects[0]["category_id"] - 1 == label
    assert np.array_equal(img, expected)
    x, y, w, h = objects[0]["bbox"]
    assert 0.3 * 64 - 2 <= np.sqrt(w * h) <= 0.85 * 64 + 2


def test_person_class_is_the_crowd_sets_figure_inside_the_image():
    """Class 6: the crowd set's person figure(s), 30-85 % of the image tall and never cut by the border."""
    from pgd.data.synth_crowdhuman import render_person_example

    people = [i for i in range(60) if synth_shapes.render_example(0, i)[1] == synth_shapes.PERSON]
    assert 4 <= len(people) <= 16   # ~1 in 7
    rng = np.random.default_rng([0, synth_shapes.STREAM, people[0]])
    assert rng.random() < 1 / synth_shapes.NUM_CLASSES
    back = None if rng.random() < synth_shapes.STREET_PROB else synth_shapes.backdrop(
        rng, 64, synth_shapes.classification_style(64))[0]
    assert np.array_equal(render_person_example(rng, 64, back), synth_shapes.render_example(0, people[0])[0])
    for seed in range(20):
        # on black, with no sensor noise left above 12: the lit pixels are the figures (skin, clothes >= 25/255)
        img = render_person_example(np.random.default_rng(seed), 64, np.zeros((64, 64, 3), np.float32))
        rows = np.flatnonzero((img.max(axis=2) > 12).any(axis=1))
        assert 0.3 * 64 - 2 <= rows[-1] - rows[0] + 1, seed   # the front figure alone is >= 30 % tall
        assert rows[0] >= 1 and rows[-1] <= 62, seed             # heads and feet inside the image
        assert rows[-1] - rows[0] + 1 <= 1.1 * 0.85 * 64 + 3, seed   # neighbours are at most 1.1x as tall


def test_pretrain_checkpoint_loads_into_the_detector_backbone(tmp_path):
    settings = dict(iters=2, batch_size=4, image_size=64, lr=1e-3, weight_decay=0.0, log_interval=1,
                    eval_images=8)
    summary = pretrain("mbv2", tmp_path / "mbv2.pth", settings, log=lambda *_: None)
    assert summary["iters"] == 2 and [r["iter"] for r in summary["history"]] == [1, 2]
    assert summary["heldout_accuracy"] in {i / 8 for i in range(9)}
    assert json.loads((tmp_path / "mbv2.pth.json").read_text())["heldout_accuracy"] == summary["heldout_accuracy"]
    # plain tensors only: torch's weights_only loader needs no allow-list
    ckpt = torch.load(tmp_path / "mbv2.pth", weights_only=True)
    assert ckpt["meta"]["backbone"] == "mbv2"
    # the mini profile's init_cfg loads it into the detector's backbone, every tensor
    from mmdet.registry import MODELS

    cfg = compose_config("atss", "mbv2", "mini", "student", overrides={"pretrained_dir": str(tmp_path)})
    assert cfg.model.backbone.init_cfg == dict(type="Pretrained", checkpoint=f"{tmp_path}/mbv2.pth")
    model = MODELS.build(cfg.model)
    model.init_weights()
    own = model.backbone.state_dict()
    assert set(own) == set(ckpt["state_dict"])
    for key, value in ckpt["state_dict"].items():
        assert torch.equal(own[key], value), key


def test_bf16_pretraining_matches_fp32_and_keeps_fp32_weights(tmp_path):
    """Autocast only: the first step's loss agrees with fp32 (same seed, same batch); the checkpoint stays fp32."""
    first = {}
    for precision in ("bf16", "fp32"):
        settings = dict(iters=1, batch_size=4, image_size=64, lr=1e-3, weight_decay=0.0, log_interval=1,
                        eval_images=4, precision=precision)
        summary = pretrain("mbv2", tmp_path / f"{precision}.pth", settings, log=lambda *_: None)
        assert summary["precision"] == precision
        first[precision] = summary["history"][0]["loss"]
        state = torch.load(tmp_path / f"{precision}.pth", weights_only=True)["state_dict"]
        assert {v.dtype for v in state.values()} <= {torch.float32, torch.int64}
    assert first["bf16"] == pytest.approx(first["fp32"], rel=0.05)   # measured 2.010 vs 1.942 (random init)
    with pytest.raises(SystemExit, match="precision"):
        pretrain("mbv2", tmp_path / "x.pth", dict(settings, precision="fp16"), log=lambda *_: None)


def test_classifier_uses_the_matrix_backbones_all_trainable():
    for backbone, channels in (("r50", 2048), ("r101", 2048), ("mbv2", 1280)):
        net = build_classifier(backbone)
        assert net.fc.in_features == channels and net.fc.out_features == 7   # six shapes + person
        # the profile freezes BN for detection; pretraining must not inherit that (a frozen zero-init BN gamma
        # keeps ResNet's residual branches at zero: 27 % held-out accuracy instead of ~90 %)
        assert all(p.requires_grad for p in net.parameters())
        net.train()
        assert all(m.training for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d))
    r101 = build_classifier("r101").backbone
    assert r101.depth == 101


def test_pretrained_dir_only_for_local_checkpoints():
    with pytest.raises(ConfigCompositionError, match="does not initialise the r50 backbone from a local"):
        compose_config("atss", "r50", "paper", "student", overrides={"pretrained_dir": "/x"})


def test_missing_checkpoint_is_named_before_training(tmp_path, monkeypatch):
    from pgd.preflight import TrainError, check_pretrained_backbone

    monkeypatch.setenv("PGD_PRETRAINED_DIR", str(tmp_path / "nowhere"))
    cfg = compose_config("atss", "r50", "mini", "student")
    with pytest.raises(TrainError, match=r"nowhere/r50\.pth.*pgd pretrain --backbone r50"):
        check_pretrained_backbone(cfg)
    teacher = compose_config("atss", "r101", "mini", "teacher").model.to_dict()
    distilled = compose_config("atss", "r50", "mini", "student", method="pgd",
                               teacher=dict(teacher_model=teacher))
    with pytest.raises(TrainError, match=r"r50\.pth"):
        check_pretrained_backbone(distilled)
    paper = compose_config("atss", "r50", "paper", "student")   # torchvision:// is not a local file
    check_pretrained_backbone(paper)


def test_warmup_iters_sets_the_linear_warmup_then_cosine(tmp_path):
    """lr after each step: linear warm-up over ``warmup_iters`` (default iters // 20), then cosine to zero.
    Hand-computed for 4 iterations: warm-up 2 -> x[1, 1, 1/2, 0]; default (1) -> x[1, 3/4, 1/4, 0]."""
    base = dict(iters=4, batch_size=2, image_size=32, lr=1e-3, weight_decay=0.0, log_interval=1, eval_images=2)
    quiet = lambda *_: None  # noqa: E731
    two = pretrain("mbv2", tmp_path / "a.pth", dict(base, warmup_iters=2), log=quiet)
    assert two["warmup_iters"] == 2
    np.testing.assert_allclose([r["lr"] for r in two["history"]], [1e-3, 1e-3, 5e-4, 0.0], atol=1e-12)
    default = pretrain("mbv2", tmp_path / "b.pth", base, log=quiet)
    assert default["warmup_iters"] == 1
    np.testing.assert_allclose([r["lr"] for r in default["history"]], [1e-3, 7.5e-4, 2.5e-4, 0.0], atol=1e-12)
    with pytest.raises(SystemExit, match=r"warmup_iters must be between 1 and iters=4 \(got 5\)"):
        pretrain("mbv2", tmp_path / "c.pth", dict(base, warmup_iters=5), log=quiet)


def test_iters_override_keeps_the_warmup_fraction(tmp_path, monkeypatch):
    """`--iters N` alone scales the profile's warm-up with the run (mini: 200 of 1500 -> 1 of 2, 20 of 150);
    `--warmup-iters` wins when given."""
    import pgd.pretrain as pretrain_module

    seen = []
    monkeypatch.setattr(pretrain_module, "pretrain", lambda backbone, out, settings, seed=0: seen.append(settings))
    for argv, expected in (([], (1500, 200)), (["--iters", "2"], (2, 1)), (["--iters", "150"], (150, 20)),
                           (["--iters", "150", "--warmup-iters", "7"], (150, 7))):
        assert pretrain_module.main(["--backbone", "mbv2", "--out", str(tmp_path / "x.pth"), "--no-mlflow",
                                     *argv]) == 0
        assert (seen[-1]["iters"], seen[-1]["warmup_iters"]) == expected


def test_person_class_switch(tmp_path, monkeypatch):
    """person_class=False (`--person-class no`): the six shapes only, the exact images of the shape-only
    pretraining (no draw for the person class); anything but a bool is refused before a model is built."""
    from pgd.data.synth_coco import render_image

    for i in range(12):
        img, label = synth_shapes.render_example(0, i, person=False)
        rng = np.random.default_rng([0, synth_shapes.STREAM, i])
        expected, objects = render_image(rng, 64, empty=False, style=synth_shapes.classification_style(64))
        if objects:  # (the renderer's rare redraws aside)
            assert np.array_equal(img, expected) and label == objects[0]["category_id"] - 1 < synth_shapes.PERSON
    assert synth_shapes.PERSON not in synth_shapes.render_batch(0, range(100), person=False)[1]

    import pgd.pretrain as pretrain_module

    seen = []
    monkeypatch.setattr(pretrain_module, "pretrain", lambda backbone, out, settings, seed=0: seen.append(settings))
    for argv, expected in (([], True), (["--person-class", "no"], False), (["--person-class", "yes"], True)):
        pretrain_module.main(["--backbone", "mbv2", "--out", str(tmp_path / "x.pth"), "--no-mlflow", *argv])
        assert seen[-1]["person_class"] is expected
    monkeypatch.undo()
    settings = dict(iters=1, batch_size=2, image_size=32, lr=1e-3, weight_decay=0.0, person_class="no")
    with pytest.raises(SystemExit, match=r"person_class must be True or False \(got 'no'\)"):
        pretrain("mbv2", tmp_path / "y.pth", settings, log=lambda *_: None)


@pytest.mark.slow
def test_pretraining_learns_the_shapes(tmp_path):
    """MobileNetV2, 300 iterations at the mini settings: held-out accuracy well above chance (1/7). Measured 0.34
    with the six shape classes (lr 5e-3 spends its first ~200 iterations near chance loss; 800 iterations reach
    0.78)."""
    settings = dict(iters=300, batch_size=32, image_size=64, lr=0.005, weight_decay=0.05, log_interval=50,
                    eval_images=256)
    summary = pretrain("mbv2", tmp_path / "mbv2.pth", settings, log=lambda *_: None)
    assert summary["history"][-1]["loss"] < summary["history"][0]["loss"]
    assert summary["heldout_accuracy"] > 0.25

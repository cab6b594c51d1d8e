"""The disk-space estimate of a training run (pgd.disk) against hand counts and real mmengine checkpoints."""
from __future__ import annotations

from collections import namedtuple

import pytest
import torch
from torch import nn

from pgd import disk
from train_helpers import tiny_coco, tiny_run, train_tiny  # noqa: F401  (fixtures)

SGD = dict(optimizer=dict(type="SGD", lr=0.01, momentum=0.9))


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.frozen = nn.Linear(10, 10)          # 110 floats, in the state dict, no optimizer state
        self.frozen.requires_grad_(False)
        self.head = nn.Linear(10, 5)             # 55 floats
        self.bn = nn.BatchNorm1d(5)              # weight+bias 10 floats; running mean/var 10 floats; 1 int64


def test_checkpoint_bytes_by_hand():
    state = (110 + 55 + 10 + 10) * 4 + 8
    trainable = (55 + 10) * 4
    assert disk.checkpoint_bytes(Net(), SGD) == state + trainable                         # one momentum buffer
    assert disk.checkpoint_bytes(Net(), dict(optimizer=dict(type="AdamW"))) == state + 2 * trainable
    assert disk.checkpoint_bytes(Net(), dict(optimizer=dict(type="SGD", momentum=0))) == state
    assert disk.checkpoint_bytes(Net(), None) == state                                    # mmengine's default SGD


@pytest.mark.parametrize("hook, loop, kept", [
    # mini profile: 900 iterations, interval 225, two kept -> three on disk for a moment
    (dict(interval=225, by_epoch=False, max_keep_ckpts=2), dict(max_iters=900), 3),
    # keep all: 900 // 225 = 4 saves
    (dict(interval=225, by_epoch=False), dict(max_iters=900), 4),
    # 10 iterations every 4: saves at 4, 8 and the last (10)
    (dict(interval=4, by_epoch=False), dict(max_iters=10), 3),
    (dict(interval=4, by_epoch=False, save_last=False), dict(max_iters=10), 2),
    # paper 1x: 12 epochs, every epoch, two kept
    (dict(interval=1, by_epoch=True, max_keep_ckpts=2), dict(max_epochs=12), 3),
    # mini with resume_points=0: interval past the end, no save_last
    (dict(interval=901, by_epoch=False, save_last=False), dict(max_iters=900), 0),
])
def test_checkpoints_kept(hook, loop, kept):
    assert disk.checkpoints_kept(hook, loop) == kept


def test_estimate_matches_real_mmengine_checkpoints(tiny_run):
    """The tiny run's resume checkpoints (SGD with momentum) and model.pth, measured on disk."""
    from mmengine.config import Config
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules

    register_all_modules()
    cfg = Config.fromfile(str(tiny_run / "config.py"))
    model = MODELS.build(cfg.model)
    one = disk.checkpoint_bytes(model, cfg.optim_wrapper)
    real = (tiny_run / "iter_4.pth").stat().st_size
    # pickling, zip headers, meta and the message hub: a few tens of kB on top of the tensors
    assert one <= real <= one + 200_000, (one, real)
    need, one_again, kept = disk.required_bytes(model, cfg)
    assert (one_again, kept) == (one, 2)      # 4 iterations every 2: two saves, both kept
    final = (tiny_run / "model.pth").stat().st_size
    assert need <= 2 * real + final and need >= 2 * real + final - 400_000


Usage = namedtuple("Usage", "total used free")


def test_training_refuses_a_full_disk_before_the_first_step(tmp_path, tiny_coco, monkeypatch, capsys):
    monkeypatch.setattr(disk.shutil, "disk_usage", lambda path: Usage(10**12, 10**12 - 1000, 1000))
    threads = torch.get_num_threads()
    try:
        assert train_tiny(tmp_path / "run", tiny_coco) == 2
    finally:
        torch.set_num_threads(threads)
    err = capsys.readouterr().err
    assert "not enough disk space in" in err and "0 MB free" in err and "max_keep_ckpts" in err
    assert not list((tmp_path / "run").glob("*.pth"))          # stopped before any checkpoint


def test_resume_counts_its_own_checkpoints_as_free(tmp_path, monkeypatch):
    cfg = dict(optim_wrapper=SGD, train_cfg=dict(max_iters=4),
               default_hooks=dict(checkpoint=dict(interval=1, by_epoch=False, max_keep_ckpts=1)))
    need, one, kept = disk.required_bytes(Net(), cfg)
    assert kept == 2 and need == 2 * one + (110 + 55 + 20) * 4 + 8
    monkeypatch.setattr(disk.shutil, "disk_usage", lambda path: Usage(10**12, 0, need - 100))
    with pytest.raises(disk.DiskSpaceError, match=r"2 resume checkpoint\(s\)"):
        disk.check_free_space(Net(), cfg, tmp_path)
    (tmp_path / "iter_3.pth").write_bytes(b"0" * 100)      # deleted by the hook as the resumed run saves
    assert disk.check_free_space(Net(), cfg, tmp_path) == need

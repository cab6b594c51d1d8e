"""pgd.checkpoint: mmengine checkpoints load with weights_only=True and an exact allow-list; nothing else does."""
from __future__ import annotations

import copy
import io
import itertools
import pickle
import subprocess
import zipfile

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from pgd.checkpoint import (CheckpointError, install_safe_globals, load_checkpoint, mmengine_safe_globals,
                            save_checkpoint)

torch.set_num_threads(1)

mmengine = pytest.importorskip("mmengine")
from mmengine.logging import HistoryBuffer  # noqa: E402
from mmengine.model import BaseModel  # noqa: E402
from mmengine.runner import Runner  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def keep_default_scope():
    """A Runner makes its default scope ('mmengine' here) the current one for the whole process; later test modules
    that build mmdet modules through the current scope would then miss them. Put the previous state back."""
    from mmengine.registry import DefaultScope

    saved = DefaultScope._instance_dict.copy()
    yield
    DefaultScope._instance_dict = saved


_RUN_IDS = itertools.count()


class ToyRegressor(BaseModel):
    """Linear regression behind a BatchNorm: parameters, buffers and momentum state all have to survive a resume."""

    def __init__(self):
        super().__init__()
        self.bn = nn.BatchNorm1d(3)
        self.fc = nn.Linear(3, 1)

    def forward(self, inputs, targets=None, mode="loss"):
        pred = self.fc(self.bn(inputs)).squeeze(-1)
        if mode == "loss":
            return dict(loss=((pred - targets) ** 2).mean())
        return pred


class LinearData(Dataset):
    metainfo = dict(classes=("thing",), palette=[(220, 20, 60)])

    def __len__(self):
        return 24

    def __getitem__(self, i):
        x = torch.randn(3, generator=torch.Generator().manual_seed(i))
        return dict(inputs=x, targets=x @ torch.tensor([1.0, -2.0, 0.5]) + 0.3)


def make_runner(work_dir, max_iters, load_from=None, resume=False):
    return Runner(
        model=ToyRegressor(),
        work_dir=str(work_dir),
        train_dataloader=dict(dataset=LinearData(), sampler=dict(type="DefaultSampler", shuffle=True),
                              batch_size=4, num_workers=0, collate_fn=dict(type="default_collate")),
        train_cfg=dict(by_epoch=False, max_iters=max_iters, val_interval=10_000),
        optim_wrapper=dict(optimizer=dict(type="SGD", lr=0.05, momentum=0.9, weight_decay=1e-4)),
        param_scheduler=[dict(type="LinearLR", start_factor=0.1, by_epoch=False, begin=0, end=3),
                         dict(type="MultiStepLR", milestones=[5], by_epoch=False)],
        default_hooks=dict(checkpoint=dict(type="CheckpointHook", interval=3, by_epoch=False),
                           logger=dict(type="LoggerHook", interval=1)),
        load_from=None if load_from is None else str(load_from),
        resume=resume,
        randomness=dict(seed=0),
        default_scope="mmengine",
        experiment_name=f"ckpt_{next(_RUN_IDS)}",  # Runners built in the same second would share a name
        log_level="WARNING",
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """An uninterrupted 6-iteration run, checkpoints at iterations 3 and 6."""
    work_dir = tmp_path_factory.mktemp("full")
    runner = make_runner(work_dir, max_iters=6)
    runner.train()
    return work_dir, {k: v.detach().clone() for k, v in runner.model.state_dict().items()}


@pytest.fixture
def no_registered_globals():
    """Run a test with torch's process-wide allow-list empty, then restore it (other tests may have installed it)."""
    saved = torch.serialization.get_safe_globals()
    torch.serialization.clear_safe_globals()
    yield
    torch.serialization.clear_safe_globals()
    torch.serialization.add_safe_globals(saved)


def allowed_names() -> set[str]:
    return {name for _, name in mmengine_safe_globals()}


def test_runner_checkpoint_needs_exactly_the_documented_globals(trained, no_registered_globals):
    work_dir, _ = trained  # (torch leaves registered globals out of the "unsafe" list, hence the fixture)
    found = torch.serialization.get_unsafe_globals_in_checkpoint(str(work_dir / "iter_6.pth"))
    assert set(found) == {
        "mmengine.logging.history_buffer.HistoryBuffer", "builtins.getattr", "numpy.ndarray", "numpy.dtype",
        "numpy._core.multiarray._reconstruct", "numpy._core.multiarray.scalar"}
    assert set(found) <= allowed_names()


def test_plain_weights_only_load_refuses_it(trained, no_registered_globals):
    work_dir, _ = trained
    with pytest.raises(pickle.UnpicklingError, match="HistoryBuffer|getattr|numpy"):
        torch.load(work_dir / "iter_6.pth", weights_only=True)


def test_load_checkpoint_restores_everything(trained, no_registered_globals):
    work_dir, final_state = trained
    ckpt = load_checkpoint(work_dir / "iter_6.pth")
    assert set(ckpt) == {"meta", "state_dict", "message_hub", "optimizer", "param_schedulers"}
    assert ckpt["meta"]["iter"] == 6 and ckpt["meta"]["dataset_meta"]["classes"] == ("thing",)
    for key, value in final_state.items():
        torch.testing.assert_close(ckpt["state_dict"][key], value, rtol=0, atol=0)
    # momentum buffers of the two parameter tensors of fc and the two of bn
    assert len(ckpt["optimizer"]["state"]) == 4
    loss = ckpt["message_hub"]["log_scalars"]["train/loss"]
    assert isinstance(loss, HistoryBuffer)
    values, counts = loss.data
    assert values.dtype == np.float64 and counts.dtype == np.int64 and len(values) == 6
    # the statistics methods come back as the real functions, so the buffer still works
    assert loss.statistics("mean", 2) == pytest.approx(values[-2:].mean())
    assert loss.current() == pytest.approx(values[-1])


def test_resumed_runner_matches_uninterrupted_run(trained, tmp_path, no_registered_globals):
    """Runner.resume goes through mmengine's own torch.load: it works once the allow-list is installed, and the
    resumed run (weights, momentum, LR schedule, data order, message hub) ends exactly where the full run did."""
    work_dir, final_state = trained
    with pytest.raises(pickle.UnpicklingError):
        make_runner(tmp_path / "refused", max_iters=6, load_from=work_dir / "iter_3.pth", resume=True).train()
    install_safe_globals()
    runner = make_runner(tmp_path / "resumed", max_iters=6, load_from=work_dir / "iter_3.pth", resume=True)
    runner.train()
    assert runner.iter == 6
    for key, value in runner.model.state_dict().items():
        torch.testing.assert_close(value, final_state[key], rtol=0, atol=0, msg=key)
    assert len(runner.message_hub.get_scalar("train/loss").data[0]) == 6


def test_load_checkpoint_keeps_the_process_wide_registration(trained, no_registered_globals):
    """Regression: torch's safe_globals() context drops its entries on exit, also when they were installed
    before; load_checkpoint must not undo install_safe_globals() for mmengine's later torch.load calls."""
    work_dir, _ = trained
    install_safe_globals()
    before = set(torch.serialization.get_safe_globals())
    load_checkpoint(work_dir / "iter_6.pth")
    assert set(torch.serialization.get_safe_globals()) == before
    assert torch.load(work_dir / "iter_6.pth")["meta"]["iter"] == 6  # mmengine's call: default weights_only
    torch.serialization.clear_safe_globals()
    load_checkpoint(work_dir / "iter_6.pth")
    assert torch.serialization.get_safe_globals() == []  # nothing leaks when nothing was installed


def test_mmengine_load_checkpoint_after_install(trained, no_registered_globals):
    from mmengine.runner import load_checkpoint as mm_load_checkpoint

    work_dir, final_state = trained
    install_safe_globals()
    install_safe_globals()  # idempotent
    model = ToyRegressor()
    mm_load_checkpoint(model, str(work_dir / "iter_6.pth"), map_location="cpu")
    torch.testing.assert_close(model.fc.weight, final_state["fc.weight"], rtol=0, atol=0)


class _Exploit:
    """Pickles to a call of an arbitrary function, the attack weights_only exists to stop."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


@pytest.mark.parametrize("func, args, name", [
    (subprocess.check_call, (["touch", "PWNED"],), "check_call"),
    (eval, ("__import__('os').system('touch PWNED')",), "GLOBAL eval"),
])
def test_disallowed_global_is_refused(tmp_path, monkeypatch, func, args, name):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "payload": _Exploit(func, *args)}, path)
    with pytest.raises(CheckpointError, match=name) as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)
    assert not (tmp_path / "PWNED").exists()


def test_os_system_is_refused(tmp_path, monkeypatch):
    import os

    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pth"
    torch.save({"payload": _Exploit(os.system, "touch PWNED")}, path)
    with pytest.raises(CheckpointError, match="system"):
        load_checkpoint(path)
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize("attr", ["__init__", "update", "__dict__"])
def test_getattr_only_resolves_history_buffer_statistics(tmp_path, attr):
    path = tmp_path / "getattr.pth"
    torch.save({"payload": _Exploit(getattr, HistoryBuffer, attr)}, path)
    with pytest.raises(CheckpointError, match=f"getattr\\(HistoryBuffer, '{attr}'\\)"):
        load_checkpoint(path)


def test_getattr_on_other_objects_is_refused(tmp_path):
    path = tmp_path / "getattr.pth"
    torch.save({"payload": _Exploit(getattr, "a string", "format")}, path)
    with pytest.raises(CheckpointError, match="getattr\\(str, 'format'\\)"):
        load_checkpoint(path)


def _legacy_numpy1_file(obj) -> bytes:
    """A checkpoint as numpy 1.x names its functions (numpy.core.multiarray.*) in torch's legacy format."""
    buf = io.BytesIO()
    torch.save(obj, buf, _use_new_zipfile_serialization=False)
    raw = buf.getvalue()
    assert b"numpy._core.multiarray" in raw
    return raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")


def test_numpy1_spelling_loads(tmp_path):
    path = tmp_path / "np1.pth"
    path.write_bytes(_legacy_numpy1_file({"a": np.arange(4, dtype=np.int64), "s": np.float64(2.5)}))
    ckpt = load_checkpoint(path)
    np.testing.assert_array_equal(ckpt["a"], np.arange(4))
    assert ckpt["s"] == 2.5 and isinstance(ckpt["s"], np.float64)


def test_bad_files_get_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        load_checkpoint(tmp_path / "missing.pth")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"this is not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pth"):
        load_checkpoint(junk)
    tensor_only = tmp_path / "tensor.pth"
    torch.save(torch.zeros(1), tensor_only)
    with pytest.raises(CheckpointError, match="expected a dict"):
        load_checkpoint(tensor_only)


def test_save_checkpoint_is_atomic_and_round_trips(tmp_path, monkeypatch):
    target = tmp_path / "run" / "model.pth"
    state = {"state_dict": {"w": torch.arange(3.0)}, "meta": {"iter": 7}}
    save_checkpoint(state, target)
    assert zipfile.is_zipfile(target)
    assert [p.name for p in target.parent.iterdir()] == ["model.pth"]
    loaded = load_checkpoint(target)
    torch.testing.assert_close(loaded["state_dict"]["w"], torch.arange(3.0))

    # a failing save leaves the previous file untouched and no temporary file behind
    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint({"state_dict": {}}, target)
    assert [p.name for p in target.parent.iterdir()] == ["model.pth"]
    assert load_checkpoint(target)["meta"] == {"iter": 7}
    assert copy.deepcopy(loaded["meta"]) == {"iter": 7}

"""Loading mmengine checkpoints with ``torch.load(weights_only=True)`` kept on.

torch >= 2.6 unpickles with ``weights_only=True`` by default, which refuses every global outside torch's own
allow-list. A checkpoint written by mmengine 0.10.7's ``CheckpointHook`` needs exactly these extra globals (found
with ``torch.serialization.get_unsafe_globals_in_checkpoint`` on a real Runner checkpoint under numpy 2.4):

* ``mmengine.logging.history_buffer.HistoryBuffer``: the message hub's ``log_scalars``;
* ``numpy.ndarray``, ``numpy.dtype``, ``numpy._core.multiarray._reconstruct`` and ``numpy._core.multiarray.scalar``:
  the buffers' contents (numpy arrays, dtypes and scalars); unpickling a dtype also builds an instance of its
  concrete class (``numpy.dtypes.Float64DType`` for the values, ``Int64DType`` for the counts), so the numeric dtype
  classes (bool, int/uint 8-64, float 16-64) are listed;
* ``builtins.getattr``: ``HistoryBuffer`` pickles its statistics methods (``HistoryBuffer.min`` etc.) and pickle
  protocol 2, which ``torch.save`` uses, spells a nested qualified name as ``getattr(HistoryBuffer, 'min')``.
  A general ``getattr`` would let a file read any attribute of any object it can build, so the name is bound to
  :func:`_history_buffer_getattr`, which resolves only those four methods.

Checkpoints written under numpy 1.x name the same numpy functions under ``numpy.core.multiarray``; both spellings
are accepted (same objects, so the set of loadable things does not grow).

How mmengine's own loaders (``Runner.resume``, ``load_from``, ``mmengine.runner.load_checkpoint``) get the list:
they call ``torch.load`` themselves, so the allow-list has to be registered process-wide.
:func:`install_safe_globals` does that, and importing :mod:`pgd.models` calls it. Every config carries
``custom_imports=['pgd.models', ...]``, so any Runner built from a project config (also under torchrun, where each
worker imports the config again) can resume. :func:`load_checkpoint` does not depend on that registration: it
scopes the list to its own call with ``torch.serialization.safe_globals``.
"""
from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any, Callable

import torch

from pgd.atomic import atomic_path
from pgd.errors import UserError

__all__ = ["CheckpointError", "check_checkpoint", "mmengine_safe_globals", "install_safe_globals", "load_checkpoint",
           "save_checkpoint"]

# Statistics methods HistoryBuffer registers for itself (mmengine 0.10.7, HistoryBuffer.__init__).
_HISTORY_BUFFER_METHODS = frozenset({"min", "max", "current", "mean"})
# Concrete dtype classes of the numbers the message hub can hold: float64 values and int64 counts in practice; the
# other widths cover scalars logged as numpy numbers. Plain data types, nothing callable.
_NUMPY_DTYPE_CLASSES = ("BoolDType", "Int8DType", "Int16DType", "Int32DType", "Int64DType", "UInt8DType",
                        "UInt16DType", "UInt32DType", "UInt64DType", "Float16DType", "Float32DType", "Float64DType")


class CheckpointError(UserError, RuntimeError):
    """A checkpoint file could not be loaded safely (unknown global, corrupt archive)."""


def _history_buffer_getattr(obj: Any, name: str) -> Any:
    """Stand-in for ``builtins.getattr`` while unpickling: resolves only HistoryBuffer's statistics methods."""
    from mmengine.logging.history_buffer import HistoryBuffer

    if obj is HistoryBuffer and name in _HISTORY_BUFFER_METHODS:
        return getattr(obj, name)
    raise pickle.UnpicklingError(
        f"getattr({getattr(obj, '__qualname__', type(obj).__qualname__)}, {name!r}) is not allowed: "
        f"pgd.checkpoint only resolves HistoryBuffer.{{{', '.join(sorted(_HISTORY_BUFFER_METHODS))}}}")


def mmengine_safe_globals() -> list[tuple[Callable, str]]:
    """The allow-list as ``(object, pickled name)`` pairs.

    Pairs rather than bare objects: torch then matches the exact names that occur in the files, independent of how
    numpy's ``__module__`` attributes spell them in a given version.
    """
    import numpy as np
    from mmengine.logging.history_buffer import HistoryBuffer

    multiarray = np._core.multiarray
    pairs: list[tuple[Callable, str]] = [
        (HistoryBuffer, "mmengine.logging.history_buffer.HistoryBuffer"),
        (np.ndarray, "numpy.ndarray"),
        (np.dtype, "numpy.dtype"),
        (_history_buffer_getattr, "builtins.getattr"),
    ]
    for mod in ("numpy._core.multiarray", "numpy.core.multiarray"):
        pairs += [(multiarray._reconstruct, f"{mod}._reconstruct"), (multiarray.scalar, f"{mod}.scalar")]
    # Unpickling a dtype BUILDs an instance of its concrete class, which must be allow-listed too.
    pairs += [(getattr(np.dtypes, name), f"numpy.dtypes.{name}") for name in _NUMPY_DTYPE_CLASSES]
    return pairs


def install_safe_globals() -> None:
    """Register the allow-list process-wide so mmengine's own ``torch.load`` calls accept mmengine checkpoints.

    Idempotent (torch keeps the registrations in a set).
    """
    torch.serialization.add_safe_globals(mmengine_safe_globals())


# What torch.save writes: a zip archive (the default since torch 1.6), or the legacy format, which starts with the
# pickled magic number 0x1950a86a20f9469cfc6c (protocol 2: PROTO 2, LONG1 of 10 bytes).
_LEGACY_MAGIC = b"\x80\x02\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19"


def _unpickler_reason(err: Exception) -> str:
    """What torch's weights_only message says was refused, without its advice (which includes re-running with
    weights_only=False: the project never does that, see the README)."""
    text = str(err)
    marker = "WeightsUnpickler error:"
    if marker in text:
        text = text.split(marker, 1)[1]
    text = text.strip().split("\n\n", 1)[0].strip()
    # "GLOBAL argparse.Namespace was not an allowed global by default. Please use `torch.serialization...`"
    return text.split(" Please use ", 1)[0].replace(" by default", "").rstrip(".")


def _check_format(path: Path) -> None:
    """Refuse a file that is not a torch checkpoint at all before unpickling any of it."""
    if zipfile.is_zipfile(path):
        return
    with open(path, "rb") as fh:
        head = fh.read(len(_LEGACY_MAGIC))
    if head != _LEGACY_MAGIC:
        raise CheckpointError(
            f"{path} is not a checkpoint: neither a torch zip archive nor a legacy torch file "
            f"({path.stat().st_size} bytes; a truncated copy, or another kind of file). Re-create it: training "
            f"writes model.pth when it finishes")


def check_checkpoint(path: str | os.PathLike) -> None:
    """Cheap early check (before a Runner is built): the file exists, is a torch checkpoint, and names no global
    outside the allow-list. Reads the pickle's opcodes, not the tensors; :func:`load_checkpoint` checks the rest."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    _check_format(path)
    if not zipfile.is_zipfile(path):
        return   # the legacy format: torch lists no globals for it, load_checkpoint refuses what is not allowed
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception as err:  # noqa: BLE001  (a zip without torch's data.pkl, a truncated pickle)
        raise CheckpointError(f"{path} is not a readable checkpoint ({type(err).__name__}: {err}); "
                              f"re-create it") from err
    allowed = {name for _, name in mmengine_safe_globals()}
    refused = sorted(set(names) - allowed)
    if refused:
        raise CheckpointError(
            f"{path}: refused by the safe (weights_only) loader: it holds {', '.join(refused)}, which "
            f"pgd.checkpoint's allow-list does not cover. Checkpoints may hold tensors, containers, numbers, strings "
            f"and mmengine's message-hub objects; save plain state dicts")


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict:
    """Load a checkpoint with ``weights_only=True`` and the mmengine allow-list.

    Raises ``FileNotFoundError`` for a missing file and :class:`CheckpointError` (naming the file and why) when the
    file is not a torch checkpoint or cannot be loaded safely (a global outside the allow-list).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    _check_format(path)
    # torch's safe_globals() removes its entries on exit, also ones registered before: scoping the whole list would
    # undo install_safe_globals() for the rest of the process, so only what is not registered yet is scoped.
    registered = set(torch.serialization.get_safe_globals())
    scoped = [g for g in mmengine_safe_globals() if g not in registered]
    try:
        with torch.serialization.safe_globals(scoped):
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"{path}: refused by the safe (weights_only) loader: {_unpickler_reason(err)}. Checkpoints may hold "
            f"tensors, containers, numbers, strings and mmengine's message-hub objects (pgd.checkpoint's "
            f"allow-list); save plain state dicts") from err
    except Exception as err:  # torch surfaces truncated / foreign files as RuntimeError, EOFError, IndexError, ...
        raise CheckpointError(f"{path} is not a readable checkpoint ({type(err).__name__}: "
                              f"{str(err).splitlines()[0] if str(err) else ''}); re-create it") from err
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path}: expected a dict checkpoint, got {type(ckpt).__name__}")
    return ckpt


def save_checkpoint(obj: dict, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file in the target directory, then rename: readers never see a partial file."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
    return Path(path)

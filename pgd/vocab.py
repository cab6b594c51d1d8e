"""The project's vocabulary: detectors, backbones, roles, datasets, KD methods, foreground strategies, branches, and
the keywords each registered KD loss accepts. Every other module imports these names from here (or, for the pure
torch ones, from :mod:`pgd.core.settings`, where they are defined), so a new config file or loss argument is known
everywhere at once.

Derived, not listed: backbones from the file names ``configs/detectors/<detector>_<backbone>.py``, methods from
``configs/distill/<method>.py``, a KD loss's keywords from its ``__init__`` signature (plus the fields of its
settings dataclass when it takes ``**settings``). The keywords are read from the source of ``pgd/losses/*.py`` with
:mod:`ast` rather than by importing the classes: importing the losses imports mmdet (about 9 s), and the matrix is
checked on every Snakemake start. tests/test_vocab.py checks that this reading equals ``inspect.signature`` of the
registered classes.

No mmdet / mmengine import here.
"""
from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import os
from pathlib import Path

from pgd.core.settings import BRANCHES, DETECTORS, FG_STRATEGIES, PGDSettings

__all__ = ["BACKBONES", "BRANCHES", "DATASETS", "DETECTORS", "FG_STRATEGIES", "ROLES", "config_root",
           "kd_loss_detectors", "kd_loss_keywords", "kd_loss_types", "methods"]

ROLES = ("teacher", "student")
DATASETS = ("coco", "crowdhuman")

_LOSSES_DIR = Path(__file__).resolve().parent / "losses"
# KD losses whose **kwargs are the fields of a settings dataclass (PGDLoss(**settings) -> PGDSettings.from_dict)
_SETTINGS_OF = {"PGDLoss": PGDSettings}


def config_root() -> Path:
    """The `configs/` directory of this checkout ($PGD_CONFIG_ROOT overrides it)."""
    env = os.environ.get("PGD_CONFIG_ROOT")
    return Path(env) if env else Path(__file__).resolve().parent.parent / "configs"


def _backbones() -> tuple[str, ...]:
    pairs = [p.stem.rsplit("_", 1) for p in (config_root() / "detectors").glob("*_*.py")]
    return tuple(sorted({bb for det, bb in pairs if det in DETECTORS}))


BACKBONES = _backbones()


def methods() -> tuple[str, ...]:
    """The KD methods: one file per method in configs/distill/ (files starting with '_' are helpers)."""
    return tuple(sorted(p.stem for p in (config_root() / "distill").glob("*.py") if not p.stem.startswith("_")))


@dataclasses.dataclass(frozen=True)
class _LossSource:
    bases: tuple[str, ...]
    params: tuple[str, ...] | None       # named __init__ parameters (None: no __init__ of its own)
    var_keyword: bool
    supported_detectors: tuple[str, ...] | None   # a literal class attribute, else None (= all detectors)
    registered: bool                     # decorated with MODELS.register_module()


def _registered(cls: ast.ClassDef) -> bool:
    return any("register_module" in ast.unparse(d) for d in cls.decorator_list)


@functools.lru_cache(maxsize=1)
def _loss_sources() -> dict[str, _LossSource]:
    """Every class defined at the top level of pgd/losses/*.py, by name."""
    out: dict[str, _LossSource] = {}
    for path in sorted(_LOSSES_DIR.glob("*.py")):
        for node in ast.parse(path.read_text(), str(path)).body:
            if not isinstance(node, ast.ClassDef):
                continue
            params, var_kw, detectors = None, False, None
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and item.name == "__init__":
                    a = item.args
                    params = tuple(x.arg for x in a.posonlyargs + a.args + a.kwonlyargs)[1:]   # drop self
                    var_kw = a.kwarg is not None
                elif (isinstance(item, ast.Assign) and any(getattr(t, "id", None) == "supported_detectors"
                                                           for t in item.targets)):
                    try:
                        detectors = tuple(ast.literal_eval(item.value))
                    except ValueError:   # a name (e.g. DETECTORS): every detector
                        detectors = None
            bases = tuple(ast.unparse(b).rsplit(".", 1)[-1] for b in node.bases)
            out[node.name] = _LossSource(bases, params, var_kw, detectors, _registered(node))
    return out


def kd_loss_types() -> tuple[str, ...]:
    """Names of the KD losses registered in pgd/losses (what a distill config's ``type=`` may name)."""
    return tuple(sorted(name for name, src in _loss_sources().items() if src.registered))


def _source(type_name: str) -> _LossSource:
    src = _loss_sources()
    if type_name not in src or not src[type_name].registered:
        raise KeyError(f"{type_name!r} is not a KD loss registered in pgd/losses; known: {kd_loss_types()}")
    return src[type_name]


def kd_loss_keywords(type_name: str) -> frozenset[str]:
    """The keyword arguments KD loss ``type_name`` accepts (its ``__init__``, inherited within pgd/losses)."""
    src = _loss_sources()
    name = type_name
    info = _source(type_name)
    while info.params is None and info.bases and info.bases[0] in src:   # inherited __init__
        name, info = info.bases[0], src[info.bases[0]]
    keys = set(info.params or ())
    if info.var_keyword:
        settings = _SETTINGS_OF.get(name)
        if settings is None:
            raise KeyError(f"{name}.__init__ takes **kwargs: declare what they accept in pgd.vocab._SETTINGS_OF")
        keys |= {f.name for f in dataclasses.fields(settings)}
        # PGDSettings.from_dict passes these on to official_code (preset 'code')
        keys |= {p for p, v in inspect.signature(settings.official_code).parameters.items()
                 if v.kind is not v.VAR_KEYWORD}
    # every KD loss config may name its taps (pgd.models.taps); the distiller takes them before building the loss
    keys.add("taps")
    return frozenset(keys)


def kd_loss_detectors(type_name: str) -> tuple[str, ...] | None:
    """The detectors KD loss ``type_name`` declares in ``supported_detectors`` (None: all of them)."""
    return _source(type_name).supported_detectors

"""Every paper-vs-official-code difference of PGD as one named switch.

The default values follow the paper's equations (Sec. 3, Eqs. 1-10, Sec. 4.1) with one correction: the paper text's
"alpha = 0.8 and 0.4" is read as the factor-10 typo it appears to be (the official configs and the Table 6 sweep use
0.08 / 0.04). `PGDSettings.official_code(detector)` reproduces the official implementation instead.
docs/pgd-settings.md tables every switch against the paper, the code and the docs/methods.md section it comes from.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

# The detector families PGD distils (configs/detectors/<detector>_<backbone>.py holds one file per family and
# backbone; pgd.vocab derives the backbones from those files and imports this list outward).
DETECTORS = ("fcos", "autoassign", "atss", "gfl", "ddod")
# The paper (Sec. 3.1) groups GFL with the anchor-free detectors; the alpha rule of Sec. 4.1 uses that grouping.
PAPER_ANCHOR_FREE = ("fcos", "gfl", "autoassign")
# The official code's PGW module choice (anchor-free module = the one with the x/y swap bug B3).
CODE_ANCHOR_FREE = ("fcos", "autoassign")

FG_STRATEGIES = ("box", "boxgauss", "centre", "quality", "topkeq", "kde", "pgw")
# Table 7: the features PGDLoss distils (the FPN outputs, the first cls / reg conv of the head)
BRANCHES = ("neck", "cls", "reg")
REGULARISERS = ("deterministic", "noise", "none")
NORMS = ("paper", "code")

# Expected covariance of the official code's U(-0.05, 0.05) px noise per coordinate: 0.1**2 / 12 = 0.05**2 / 3.
NOISE_HALF_WIDTH = 0.05
NOISE_VARIANCE = NOISE_HALF_WIDTH ** 2 / 3.0
CODE_LEVEL_WEIGHTS = (1.0, 1.25, 1.5, 1.75, 2.0)


@dataclass(frozen=True)
class PGWConfig:
    """What pgd.core.pgw needs: candidate selection and the covariance treatment.

    topk_inside_box: True (paper Sec. 3.2) = top-K among the locations strictly inside the box; objects with fewer
        than K inside keep only those. False (code, docs/methods.md §1.3 step 2 / §1.9 Q1) = top-K over all locations, the
        Gaussian is fit to all K, and candidates outside the box are zeroed afterwards.
    regulariser: 'deterministic' adds `reg_variance` * I to every covariance (the expected covariance of the
        official noise, so singular fits - one point, a line - stay defined and reproducible); 'noise' perturbs the
        candidate positions by U(-h, h) px before the MLE as the official code does (needs `generator` for
        reproducibility); 'none' uses the plain MLE (the 1e-10 in the inverse keeps it finite).
    swap_xy: reproduce bug B3 (anchor-free module reads points as (y, x)) in the inside-box tests.
    """

    topk_inside_box: bool = True
    regulariser: str = "deterministic"
    reg_variance: float = NOISE_VARIANCE
    noise_half_width: float = NOISE_HALF_WIDTH
    det_eps: float = 1e-10
    swap_xy: bool = False

    def __post_init__(self) -> None:
        if self.regulariser not in REGULARISERS:
            raise ValueError(f"PGWConfig.regulariser must be one of {REGULARISERS}, got {self.regulariser!r}")
        if self.reg_variance < 0 or self.noise_half_width < 0 or self.det_eps < 0:
            raise ValueError("PGWConfig: reg_variance, noise_half_width and det_eps must be >= 0")


@dataclass(frozen=True)
class PGDSettings:
    """All PGD hyper-parameters and paper/code switches (see docs/pgd-settings.md).

    Loss weights: beta and gamma default to alpha/2 and 1.6*alpha (Sec. 4.1) when left as None.
    """

    detector: str | None = None
    k: int = 30
    xi_cls: float = 0.8
    xi_reg: float = 0.6
    tau: float = 0.8
    alpha: float = 0.08
    beta: float | None = None
    gamma: float | None = None
    delta: float = 8e-4
    fg_strategy: str = "pgw"
    # --- paper vs official code ---
    spatial_reduce: str = "sum"                 # Eq. 7 sum over channels | code: mean (docs/methods.md §1.9 Q3)
    topk_inside_box: bool = True                # Sec. 3.2 | code: top-K over all, validity after (1.3, Q1)
    mix_masks_across_batch: bool = False        # code bug B1 (1.5): batch-summed cls masks
    gfl_decode_stride_bug: bool = False         # code bug B2: GFL decodes image i with level i's stride
    swap_xy_anchor_free: bool = False           # code bug B3: FCOS/AutoAssign validity + background transposed
    level_weights: tuple[float, ...] | None = None   # code: (1.0 .. 2.0) on cls fg/bg per level (1.8, Q6)
    reg_loss_norm: str = "paper"                # Eq. 6 count-normalised, channel sum | code: mean over c and P (1.6)
    att_loss_norm: str = "paper"                # Eq. 8/9 means | code: sums (1.5 L_att, 1.6)
    pgw_regulariser: str = "deterministic"      # code: U(-0.05, 0.05) px noise (1.3 step 3)

    def __post_init__(self) -> None:
        if self.detector is not None and self.detector not in DETECTORS:
            raise ValueError(f"PGDSettings.detector must be one of {DETECTORS} or None, got {self.detector!r}")
        if not isinstance(self.k, int) or self.k < 1:
            raise ValueError(f"PGDSettings.k must be a positive int, got {self.k!r}")
        for name in ("xi_cls", "xi_reg"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"PGDSettings.{name} must lie in [0, 1], got {getattr(self, name)!r}")
        if self.tau <= 0:
            raise ValueError(f"PGDSettings.tau must be > 0, got {self.tau!r}")
        if self.fg_strategy not in FG_STRATEGIES:
            raise ValueError(f"PGDSettings.fg_strategy must be one of {FG_STRATEGIES}, got {self.fg_strategy!r}")
        if self.spatial_reduce not in ("sum", "mean"):
            raise ValueError(f"PGDSettings.spatial_reduce must be 'sum' or 'mean', got {self.spatial_reduce!r}")
        for name in ("reg_loss_norm", "att_loss_norm"):
            if getattr(self, name) not in NORMS:
                raise ValueError(f"PGDSettings.{name} must be one of {NORMS}, got {getattr(self, name)!r}")
        if self.pgw_regulariser not in REGULARISERS:
            raise ValueError(f"PGDSettings.pgw_regulariser must be one of {REGULARISERS}, "
                             f"got {self.pgw_regulariser!r}")
        if self.level_weights is not None:
            object.__setattr__(self, "level_weights", tuple(float(w) for w in self.level_weights))
        # frozen dataclass: fill the derived weights once so that every reader sees numbers
        if self.beta is None:
            object.__setattr__(self, "beta", self.alpha / 2)
        if self.gamma is None:
            object.__setattr__(self, "gamma", 1.6 * self.alpha)
        for name in ("alpha", "beta", "gamma", "delta"):
            if getattr(self, name) < 0:
                raise ValueError(f"PGDSettings.{name} must be >= 0, got {getattr(self, name)!r}")

    # ------------------------------------------------------------------ constructors
    @classmethod
    def paper(cls, detector: str | None = None, **overrides: Any) -> "PGDSettings":
        """The paper's equations and Sec. 4.1 values (alpha typo resolved to 0.08 / 0.04)."""
        alpha = 0.04 if detector in PAPER_ANCHOR_FREE else 0.08
        return cls(detector=detector, alpha=alpha).replace(**overrides)

    @classmethod
    def official_code(cls, detector: str, backbone: str = "r50", dataset: str = "coco",
                      **overrides: Any) -> "PGDSettings":
        """The official implementation (ChenhongyiYang/PGD work_configs), bugs included (docs/methods.md §1.8/§1.9)."""
        if detector not in DETECTORS:
            raise ValueError(f"official_code: unknown detector {detector!r}; expected one of {DETECTORS}")
        alpha = {"atss": 0.08, "gfl": 0.04, "fcos": 0.04, "autoassign": 0.08, "ddod": 0.08}[detector]
        if backbone == "mbv2":
            alpha = 0.04
        if dataset == "crowdhuman" and detector == "ddod":
            alpha = 0.001
        base = cls(
            detector=detector,
            k=9 if detector == "atss" else 30,
            tau=0.4 if detector == "autoassign" else 0.8,
            alpha=alpha,
            spatial_reduce="mean",
            topk_inside_box=False,
            mix_masks_across_batch=True,
            gfl_decode_stride_bug=detector == "gfl",
            swap_xy_anchor_free=detector in CODE_ANCHOR_FREE,
            level_weights=CODE_LEVEL_WEIGHTS,
            reg_loss_norm="code",
            att_loss_norm="code",
            pgw_regulariser="noise",
        )
        return base.replace(**overrides)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "PGDSettings":
        """Build from a config dict; `preset: paper|code` picks the base, other keys override it."""
        values = dict(values)
        preset = values.pop("preset", "paper")
        detector = values.pop("detector", None)
        if preset == "paper":
            return cls.paper(detector, **values)
        if preset in ("code", "official_code"):
            if detector is None:
                raise ValueError("PGDSettings.from_dict: preset 'code' needs a detector")
            backbone = values.pop("backbone", "r50")
            dataset = values.pop("dataset", "coco")
            return cls.official_code(detector, backbone, dataset, **values)
        raise ValueError(f"PGDSettings.from_dict: preset must be 'paper' or 'code', got {preset!r}")

    def replace(self, **overrides: Any) -> "PGDSettings":
        unknown = set(overrides) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ValueError(f"PGDSettings: unknown setting(s) {sorted(unknown)}")
        # re-derive beta/gamma from a new alpha unless they are given explicitly
        if "alpha" in overrides:
            overrides.setdefault("beta", None)
            overrides.setdefault("gamma", None)
        return dataclasses.replace(self, **overrides)

    # ------------------------------------------------------------------ views
    def pgw_config(self) -> PGWConfig:
        return PGWConfig(topk_inside_box=self.topk_inside_box, regulariser=self.pgw_regulariser,
                         swap_xy=self.swap_xy_anchor_free)

    def level_weight(self, level: int) -> float:
        if self.level_weights is None:
            return 1.0
        if level >= len(self.level_weights):
            raise ValueError(f"PGDSettings.level_weights has {len(self.level_weights)} entries, "
                             f"level {level} requested")
        return self.level_weights[level]

"""`pgd figure`: the paper's result figures as PNG + PDF (matplotlib).

Fig. 1  foreground distillation regions (Box, BoxGauss, FGFI, PGD) of the ATSS teacher on val images: Box and
        BoxGauss from pgd.core.regions, FGFI's imitation mask from pgd.losses.baseline_masks, PGD's PGW weights from
        the teacher's own predictions (through the detector adapter, Eq. 1 with xi = 0.8, K = 30).
Fig. 2  teacher quality heatmaps of the five COCO teachers (the .npz files written by `pgd heatmap`).
Fig. 3  the pilot: AP after masking the top-X% quality predictions (each teacher's pilot.csv).
Fig. 5  GT (blue), plain-student (red) and PGD-student (orange) detections of ATSS on the same val images.

Every map is drawn on the network input (the test pipeline's resized image) so that locations, boxes and pixels
share one coordinate frame; a level's value covers its stride x stride cell and levels are combined with a max
(the paper's "maximum value at each position across FPN layers").
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from pgd.matrix import FIG1_TEACHER, FIG5_RUNS, FIGURES, figure_runs, load_matrix, run_dir

FIG1_METHODS = ("Box", "BoxGauss", "FGFI", "PGD")
GT_COLOUR, STUDENT_COLOUR, PGD_COLOUR = "tab:blue", "tab:red", "tab:orange"
DETECTOR_LABELS = {"fcos": "FCOS", "autoassign": "AutoAssign", "atss": "ATSS", "gfl": "GFL", "ddod": "DDOD"}


class FigureError(ValueError):
    """Missing or malformed figure inputs."""


# ------------------------------------------------------------------------------------------ geometry

def levels_to_image(values, level_sizes: Sequence[tuple[int, int]], strides: Sequence[int],
                    out_hw: tuple[int, int]) -> np.ndarray:
    """(N, A) per-location values over all levels (row-major per level) -> (N, H, W) image maps: each value fills
    its stride x stride cell (cell (i, j) covers pixels [i*s, (i+1)*s) x [j*s, (j+1)*s)); max over levels."""
    v = np.asarray(values, dtype=np.float64)
    v = v[None] if v.ndim == 1 else v
    counts = [h * w for h, w in level_sizes]
    if v.shape[1] != sum(counts):
        raise FigureError(f"levels_to_image: {v.shape[1]} values for level sizes {list(level_sizes)}")
    h_out, w_out = out_hw
    out = np.zeros((v.shape[0], h_out, w_out))
    for part, (h, w), s in zip(np.split(v, np.cumsum(counts)[:-1], axis=1), level_sizes, strides):
        grid = part.reshape(-1, h, w).repeat(s, axis=1).repeat(s, axis=2)[:, :h_out, :w_out]
        out[:, :grid.shape[1], :grid.shape[2]] = np.maximum(out[:, :grid.shape[1], :grid.shape[2]], grid)
    return out


def region_maps(pred, gt_boxes, gt_labels, gt_valid, k: int = 30, xi: float = 0.8) -> dict[str, "np.ndarray"]:
    """Fig. 1's four foreground weightings, each (N, A) over the teacher's locations (pgd.losses.KDContext's
    DensePredictions `pred`; GT padded (N, M, 4) / (N, M) / (N, M))."""
    import torch

    from pgd.core.pgw import pgw_importance
    from pgd.core.quality import quality_score
    from pgd.core.regions import box_importance, boxgauss_importance
    from pgd.losses.baseline_masks import fgfi_imitation_mask, square_anchors

    points = pred.points.float()
    strides = torch.as_tensor(pred.strides, dtype=torch.float32)[pred.level]
    with torch.no_grad():
        quality = quality_score(pred.cls_prob, pred.boxes, points, gt_boxes, gt_labels, gt_valid, xi=xi)
        maps = {
            "Box": box_importance(points, gt_boxes, gt_valid),
            "BoxGauss": boxgauss_importance(points, gt_boxes, gt_valid),
            # FGFI as in its paper: one 8s square anchor per location (ATSS's), psi = 0.5, union over GTs
            "FGFI": fgfi_imitation_mask(square_anchors(points, strides), gt_boxes, gt_valid, psi=0.5),
            "PGD": pgw_importance(quality, points, gt_boxes, gt_valid, k=k, valid=pred.valid),
        }
    return {name: m.float().cpu().numpy() * pred.valid.cpu().numpy() for name, m in maps.items()}


# ------------------------------------------------------------------------------------------ plotting

def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, out_base: str | Path) -> list[Path]:
    """Write <out_base>.png and .pdf atomically (a half-written figure is never left under the final name)."""
    out_base = Path(out_base)
    out_base.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext in ("png", "pdf"):
        path = out_base.with_suffix(f".{ext}")
        tmp = path.with_name(f".{path.stem}.tmp.{ext}")
        fig.savefig(tmp, dpi=150, bbox_inches="tight", format=ext)
        os.replace(tmp, path)
        paths.append(path)
    _plt().close(fig)
    return paths


def _draw_boxes(ax, boxes, colour, lw=1.5, ls="-"):
    from matplotlib.patches import Rectangle

    for x1, y1, x2, y2 in np.asarray(boxes, dtype=float).reshape(-1, 4):
        ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=colour, linewidth=lw,
                               linestyle=ls))


def _check_images(images, *named):
    n = len(images)
    if n == 0:
        raise FigureError("no images to draw")
    for name, seq in named:
        if len(seq) != n:
            raise FigureError(f"{name}: {len(seq)} entries for {n} images")


def plot_regions(images: Sequence[np.ndarray], gt_boxes: Sequence[np.ndarray],
                 maps: Mapping[str, np.ndarray], out_base: str | Path) -> list[Path]:
    """Fig. 1: one row per image, one column per method; heatmap of the distillation weight over the image."""
    _check_images(images, ("gt_boxes", gt_boxes), *[(f"maps[{k}]", v) for k, v in maps.items()])
    plt = _plt()
    n, cols = len(images), list(maps)
    fig, axes = plt.subplots(n, len(cols), figsize=(2.6 * len(cols), 2.2 * n), squeeze=False)
    for i, img in enumerate(images):
        for j, name in enumerate(cols):
            ax = axes[i, j]
            ax.imshow(img)
            ax.imshow(maps[name][i], cmap="jet", alpha=0.5, vmin=0.0, vmax=max(float(maps[name][i].max()), 1e-6))
            _draw_boxes(ax, gt_boxes[i], GT_COLOUR)
            ax.set_axis_off()
            if i == 0:
                ax.set_title(f"({'abcd'[j] if j < 4 else j}) {name}", fontsize=9)
    fig.suptitle("Foreground distillation regions (GT in blue)", fontsize=10)
    return save_figure(fig, out_base)


def plot_heatmaps(heatmaps: Mapping[str, np.ndarray], out_base: str | Path,
                  images: Mapping[str, np.ndarray] | None = None,
                  gt_boxes: Mapping[str, Sequence[np.ndarray]] | None = None) -> list[Path]:
    """Fig. 2: one column per detector, one row per image; the max-over-levels quality score (xi = 0.8)."""
    if not heatmaps:
        raise FigureError("no heatmaps to draw")
    plt = _plt()
    names = list(heatmaps)
    n = min(len(h) for h in heatmaps.values())
    fig, axes = plt.subplots(n, len(names), figsize=(2.4 * len(names), 2.0 * n), squeeze=False)
    for j, name in enumerate(names):
        for i in range(n):
            ax = axes[i, j]
            if images is not None and name in images:
                ax.imshow(images[name][i])
                ax.imshow(heatmaps[name][i], cmap="jet", alpha=0.55, vmin=0.0, vmax=1.0)
            else:
                ax.imshow(heatmaps[name][i], cmap="jet", vmin=0.0, vmax=1.0)
            if gt_boxes is not None and name in gt_boxes:
                _draw_boxes(ax, gt_boxes[name][i], "white", lw=1.0)
            ax.set_axis_off()
            if i == 0:
                ax.set_title(name, fontsize=9)
    fig.suptitle(r"Teacher prediction quality, max over FPN levels ($\xi=0.8$)", fontsize=10)
    return save_figure(fig, out_base)


def plot_pilot(curves: Mapping[str, pd.DataFrame], out_base: str | Path, metric: str = "AP") -> list[Path]:
    """Fig. 3: AP vs the masked-out top-X% of quality predictions, one line per teacher."""
    if not curves:
        raise FigureError("no pilot curves to draw")
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.2, 3.2))
    for name, df in curves.items():
        missing = {"X", metric} - set(df.columns)
        if missing:
            raise FigureError(f"pilot curve {name}: missing column(s) {sorted(missing)}")
        df = df.sort_values("X")
        ax.plot(df["X"], df[metric], marker="o", ms=3, label=name)
    ax.set_xscale("symlog", linthresh=1.0)
    ax.set_xlabel("masked-out top-X% predictions (within GT boxes)")
    ax.set_ylabel(f"COCO {metric}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, out_base)


def plot_detections(images: Sequence[np.ndarray], gt_boxes, student_boxes, pgd_boxes,
                    out_base: str | Path) -> list[Path]:
    """Fig. 5: GT (blue), plain student (red) and PGD student (orange) boxes on each image."""
    _check_images(images, ("gt_boxes", gt_boxes), ("student_boxes", student_boxes), ("pgd_boxes", pgd_boxes))
    plt = _plt()
    n = len(images)
    fig, axes = plt.subplots(1, n, figsize=(2.8 * n, 2.4), squeeze=False)
    for i, img in enumerate(images):
        ax = axes[0, i]
        ax.imshow(img)
        _draw_boxes(ax, gt_boxes[i], GT_COLOUR, lw=2.0)
        _draw_boxes(ax, student_boxes[i], STUDENT_COLOUR, lw=1.2)
        _draw_boxes(ax, pgd_boxes[i], PGD_COLOUR, lw=1.2, ls="--")
        ax.set_title(f"({chr(ord('a') + i)})", fontsize=9)
        ax.set_axis_off()
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=c, label=lbl) for c, lbl in
               ((GT_COLOUR, "GT"), (STUDENT_COLOUR, "student"), (PGD_COLOUR, "PGD student"))]
    fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=8, bbox_to_anchor=(0.5, -0.06))
    return save_figure(fig, out_base)


# ------------------------------------------------------------------------------------------ inputs

def load_pilot(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise FigureError(f"{path}: pilot.csv not found (run `pgd pilot` on the teacher)")
    df = pd.read_csv(path)
    if "X" not in df.columns or "AP" not in df.columns:
        raise FigureError(f"{path}: needs columns X and AP, has {list(df.columns)}")
    return df


def load_heatmap(path: str | Path) -> dict[str, np.ndarray]:
    """A `pgd heatmap` .npz: `heatmaps` (N, H, W) in [0, 1]; optional `images` (N, H, W, 3) and `gt_boxes`
    (N, M, 4) with `gt_valid` (N, M)."""
    path = Path(path)
    if not path.is_file():
        raise FigureError(f"{path}: heatmap file not found (run `pgd heatmap` on the teacher)")
    with np.load(path, allow_pickle=False) as z:
        data = {k: z[k] for k in z.files}
    key = next((k for k in ("heatmaps", "heatmap", "quality") if k in data), None)
    if key is None or data[key].ndim != 3:
        raise FigureError(f"{path}: expects an (N, H, W) array `heatmaps`, has {sorted(data)}")
    data["heatmaps"] = data[key]
    if "gt_boxes" in data and "gt_valid" in data:
        data["boxes_list"] = [b[v.astype(bool)] for b, v in zip(data["gt_boxes"], data["gt_valid"])]
    return data


class RunModel:
    """A trained run's plain detector (model.pth into the model of config.py) and its test dataset."""

    def __init__(self, path: str | Path):
        import torch
        from mmengine.config import Config
        from mmengine.registry import init_default_scope
        from mmengine.utils import import_modules_from_strings

        from pgd.checkpoint import load_checkpoint
        from pgd.train import plain_model_config

        self.dir = Path(path)
        for f in ("config.py", "model.pth"):
            if not (self.dir / f).is_file():
                raise FigureError(f"{self.dir / f}: not found (train the run first)")
        self.cfg = Config.fromfile(str(self.dir / "config.py"))
        if self.cfg.get("custom_imports"):
            import_modules_from_strings(**self.cfg.custom_imports)
        init_default_scope("mmdet")
        from mmdet.registry import DATASETS, MODELS

        self.model = MODELS.build(plain_model_config(self.cfg))
        state = load_checkpoint(self.dir / "model.pth")["state_dict"]
        self.model.load_state_dict(state)
        self.model.eval()
        self._datasets = DATASETS
        self._torch = torch

    def batch(self, n: int):
        """The first n test images through the test pipeline: (raw collated data, preprocessed batch)."""
        from mmengine.dataset import pseudo_collate

        ds = self._datasets.build(self.cfg.test_dataloader.dataset)
        if len(ds) == 0:
            raise FigureError(f"{self.dir}: the test set is empty")
        data = pseudo_collate([ds[i] for i in range(min(n, len(ds)))])
        with self._torch.no_grad():
            return data, self.model.data_preprocessor(data, False)


def _display_images(data) -> list[np.ndarray]:
    """The pipeline's resized images (uint8 BGR, CHW, unpadded) as RGB HWC arrays."""
    return [x.cpu().numpy()[::-1].transpose(1, 2, 0).copy() for x in data["inputs"]]


def _gt(batch):
    import torch

    boxes = [ds.gt_instances.bboxes.tensor if hasattr(ds.gt_instances.bboxes, "tensor")
             else ds.gt_instances.bboxes for ds in batch["data_samples"]]
    labels = [ds.gt_instances.labels for ds in batch["data_samples"]]
    m = max(1, max(len(b) for b in boxes))
    n = len(boxes)
    gt_boxes = torch.zeros(n, m, 4)
    gt_labels = torch.full((n, m), -1, dtype=torch.long)
    gt_valid = torch.zeros(n, m, dtype=torch.bool)
    for i, (b, l) in enumerate(zip(boxes, labels)):
        gt_boxes[i, :len(b)] = b.float()
        gt_labels[i, :len(l)] = l.long()
        gt_valid[i, :len(b)] = True
    return gt_boxes, gt_labels, gt_valid, [b.cpu().numpy() for b in boxes]


def fig1(teacher_dir: str | Path, out_base: str | Path, num_images: int = 4, k: int = 30) -> list[Path]:
    import torch

    from pgd.models.adapters import build_adapter

    run = RunModel(teacher_dir)
    data, batch = run.batch(num_images)
    with torch.no_grad():
        head_outs = run.model.bbox_head(run.model.extract_feat(batch["inputs"]))
    metas = [ds.metainfo for ds in batch["data_samples"]]
    pred = build_adapter(run.model).dense_predictions(head_outs, metas)
    gt_boxes, gt_labels, gt_valid, gt_list = _gt(batch)
    maps = region_maps(pred, gt_boxes, gt_labels, gt_valid, k=k)
    images = _display_images(data)
    hw = tuple(batch["inputs"].shape[-2:])
    img_maps = {name: [m[:img.shape[0], :img.shape[1]] for m, img in
                       zip(levels_to_image(v, pred.level_sizes, pred.strides, hw), images)]
                for name, v in maps.items()}
    return plot_regions(images, gt_list, img_maps, out_base)


def fig5(student_dir: str | Path, pgd_dir: str | Path, out_base: str | Path, num_images: int = 4,
         score_thr: float = 0.3) -> list[Path]:
    import torch

    dets = []
    for d in (student_dir, pgd_dir):
        run = RunModel(d)
        data, batch = run.batch(num_images)
        with torch.no_grad():
            res = run.model.predict(batch["inputs"], batch["data_samples"], rescale=False)
        dets.append([r.pred_instances.bboxes[r.pred_instances.scores >= score_thr].cpu().numpy() for r in res])
    _, _, _, gt_list = _gt(batch)
    return plot_detections(_display_images(data), gt_list, dets[0], dets[1], out_base)


def fig2(heatmap_files: Mapping[str, str | Path], out_base: str | Path) -> list[Path]:
    data = {name: load_heatmap(p) for name, p in heatmap_files.items()}
    return plot_heatmaps({n: d["heatmaps"] for n, d in data.items()}, out_base,
                         images={n: d["images"] for n, d in data.items() if "images" in d},
                         gt_boxes={n: d["boxes_list"] for n, d in data.items() if "boxes_list" in d})


def fig3(pilot_files: Mapping[str, str | Path], out_base: str | Path) -> list[Path]:
    return plot_pilot({name: load_pilot(p) for name, p in pilot_files.items()}, out_base)


def make_figure(fig: int, profile: str, results: str | Path = "results", matrix=None, out_dir=None,
                num_images: int = 4) -> list[Path]:
    matrix = matrix if matrix is not None else load_matrix()
    out_base = Path(out_dir or Path(results) / profile / "figures") / f"fig{fig}"
    runs = figure_runs(matrix, fig)
    rd = {r.id: run_dir(profile, r.id, 0, results) for r in runs}
    if fig == 1:
        return fig1(rd[FIG1_TEACHER], out_base, num_images)
    if fig == 2:
        return fig2({DETECTOR_LABELS[r.detector]: Path(results) / profile / "heatmaps" / f"{r.id}.npz"
                     for r in runs}, out_base)
    if fig == 3:
        return fig3({DETECTOR_LABELS[r.detector]: rd[r.id] / "pilot.csv" for r in runs}, out_base)
    return fig5(rd[FIG5_RUNS[0]], rd[FIG5_RUNS[1]], out_base, num_images)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="pgd figure", description="Render a paper figure (PNG + PDF).")
    p.add_argument("--fig", type=int, required=True, choices=list(FIGURES))
    p.add_argument("--profile", default="mini")
    p.add_argument("--results", default="results")
    p.add_argument("--matrix", default=None)
    p.add_argument("--out-dir", default=None, help="default <results>/<profile>/figures")
    p.add_argument("--num-images", type=int, default=4, help="val images shown in Figs. 1 and 5")
    a = p.parse_args(argv)
    paths = make_figure(a.fig, a.profile, a.results, load_matrix(a.matrix), a.out_dir, a.num_images)
    print("wrote " + " ".join(map(str, paths)))
    return 0

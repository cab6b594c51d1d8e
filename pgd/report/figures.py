"""`pgd figure`: the paper's result figures as PNG + PDF (matplotlib).

Fig. 1  foreground distillation regions (Box, BoxGauss, FGFI, PGD) of the ATSS teacher on val images: Box and
        BoxGauss from pgd.core.regions, FGFI's imitation mask from pgd.losses.baseline_masks, PGD's PGW weights from
        the teacher's own predictions (through the detector adapter, Eq. 1 with xi = 0.8, K = 30).
Fig. 2  teacher quality heatmaps of the five COCO teachers (the .npz files written by `pgd heatmap`).
Fig. 3  the pilot: AP after masking the top-X% quality predictions (each teacher's pilot.csv).
Fig. 5  GT (blue), plain-student (red) and PGD-student (orange) detections of ATSS on the same val images (per image
        the k best boxes, k = number of GT objects).

Every map is drawn on the network input (the test pipeline's resized image) so that locations, boxes and pixels
share one coordinate frame; each location owns the stride x stride cell around it (pgd.evaluation.heatmap). Fig. 2
takes the max over FPN levels per pixel (the paper's "maximum value at each position across FPN layers"). Fig. 1
draws each weighting at the resolution of the level that carries it (the finest level with a non-zero weight at a
pixel, pgd.evaluation.heatmap.paint_finest), and the strategies that weight only locations inside a GT box (Box,
BoxGauss, PGD) only inside the boxes: a coarse location's cell would otherwise paint far outside its box on a small
input. FGFI's anchors reach beyond the box by its definition and are drawn as they fall.
"""
from __future__ import annotations

import argparse
import difflib
import sys
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from pgd.atomic import atomic_path
from pgd.errors import UserError
from pgd.matrix import FIG1_TEACHER, FIG5_RUNS, FIGURES, figure_runs, load_matrix, run_dir

FIG1_METHODS = ("Box", "BoxGauss", "FGFI", "PGD")
IN_BOX_METHODS = ("Box", "BoxGauss", "PGD")      # weight only locations inside a GT box
GT_COLOUR, STUDENT_COLOUR, PGD_COLOUR = "tab:blue", "tab:red", "tab:orange"
DETECTOR_LABELS = {"fcos": "FCOS", "autoassign": "AutoAssign", "atss": "ATSS", "gfl": "GFL", "ddod": "DDOD"}


class FigureError(UserError, ValueError):
    """Missing or malformed figure inputs."""


# ------------------------------------------------------------------------------------------ geometry

def region_maps(pred, gt_boxes, gt_labels, gt_valid, k: int = 30, xi: float = 0.8) -> dict[str, "np.ndarray"]:
    """Fig. 1's four foreground weightings, each (N, A) over the teacher's locations (pgd.losses.KDContext's
    DensePredictions `pred`; GT padded (N, M, 4) / (N, M) / (N, M))."""
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
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=150, bbox_inches="tight", format=ext)
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


def box_union_mask(boxes: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """(H, W) bool: pixels whose centre lies inside any of the (M, 4) x1y1x2y2 boxes."""
    h, w = hw
    ys, xs = np.arange(h)[:, None] + 0.5, np.arange(w)[None, :] + 0.5
    mask = np.zeros((h, w), dtype=bool)
    for x1, y1, x2, y2 in np.asarray(boxes, dtype=float).reshape(-1, 4):
        mask |= (xs >= x1) & (xs <= x2) & (ys >= y1) & (ys <= y2)
    return mask


def plot_regions(images: Sequence[np.ndarray], gt_boxes: Sequence[np.ndarray],
                 maps: Mapping[str, np.ndarray], out_base: str | Path, teacher: str = "") -> list[Path]:
    """Fig. 1: one row per image, one column per method; heatmap of the distillation weight over the image.
    ``teacher`` names the detector whose predictions weight PGD's column in the title."""
    _check_images(images, ("gt_boxes", gt_boxes), *[(f"maps[{k}]", v) for k, v in maps.items()])
    plt = _plt()
    n, cols = len(images), list(maps)
    fig, axes = plt.subplots(n, len(cols), figsize=(2.6 * len(cols), 2.2 * n), squeeze=False)
    for i, img in enumerate(images):
        for j, name in enumerate(cols):
            ax = axes[i, j]
            ax.imshow(img)
            weight = np.ma.masked_less_equal(maps[name][i], 0.0)      # undistilled pixels stay unpainted
            ax.imshow(weight, cmap="jet", alpha=0.6, vmin=0.0, vmax=max(float(maps[name][i].max()), 1e-6))
            _draw_boxes(ax, gt_boxes[i], GT_COLOUR)
            ax.set_axis_off()
            if i == 0:
                ax.set_title(f"({'abcd'[j] if j < 4 else j}) {name}", fontsize=9)
    fig.suptitle("Foreground distillation regions" + (f", {teacher} teacher" if teacher else "") + " (GT in blue)",
                 fontsize=10)
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
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    # one scale for every panel: the quality score in [0, 1]
    bar = fig.colorbar(ScalarMappable(Normalize(0.0, 1.0), cmap="jet"), ax=axes, shrink=0.8, pad=0.02)
    bar.set_label(r"quality score ($\xi=0.8$)", fontsize=8)
    bar.ax.tick_params(labelsize=7)
    fig.suptitle(r"Teacher prediction quality, max over FPN levels ($\xi=0.8$)", fontsize=10)
    return save_figure(fig, out_base)


def plot_pilot(curves: Mapping[str, pd.DataFrame], out_base: str | Path, metric: str = "AP") -> list[Path]:
    """Fig. 3: AP vs the masked-out top-X% of quality predictions, one line per teacher."""
    if not curves:
        raise FigureError("no pilot curves to draw")
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.2, 3.2))
    from matplotlib.ticker import NullLocator

    tested: set[float] = set()
    for name, df in curves.items():
        missing = {"X", metric} - set(df.columns)
        if missing:
            raise FigureError(f"pilot curve {name}: missing column(s) {sorted(missing)}")
        df = df.sort_values("X")
        ax.plot(df["X"], df[metric], marker="o", ms=3, label=name)
        tested.update(float(x) for x in df["X"])
    ax.set_xscale("symlog", linthresh=0.5, linscale=0.5)
    # ticks at the X values the pilot tested, not symlog's powers of ten
    ticks = sorted(tested)
    ax.set_xticks(ticks, [f"{x:g}" for x in ticks], fontsize=7)
    ax.xaxis.set_minor_locator(NullLocator())
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


def load_heatmap(path: str | Path) -> dict[str, list[np.ndarray]]:
    """A `pgd heatmap` .npz (pgd.evaluation.heatmap): image_i (H, W, 3) uint8, heatmap_i (H, W) in [0, 1],
    gt_boxes_i (M, 4), for i < num_images."""
    path = Path(path)
    if not path.is_file():
        raise FigureError(f"{path}: heatmap file not found (run `pgd heatmap` on the teacher)")
    with np.load(path, allow_pickle=False) as z:
        files = set(z.files)
        if "num_images" not in files:
            raise FigureError(f"{path}: not a `pgd heatmap` file (no num_images; has {sorted(files)[:6]})")
        n = int(z["num_images"])
        out: dict[str, list[np.ndarray]] = {"images": [], "heatmaps": [], "gt_boxes": []}
        for i in range(n):
            for key, name in (("images", f"image_{i}"), ("heatmaps", f"heatmap_{i}"), ("gt_boxes", f"gt_boxes_{i}")):
                if name not in files:
                    raise FigureError(f"{path}: missing {name} (num_images = {n})")
                out[key].append(z[name])
    if n == 0:
        raise FigureError(f"{path}: holds no images")
    return out


def _first_images(run_dir: str | Path, n: int):
    """The run's plain detector and its first n test images: (model, [(raw batch, preprocessed batch)], count)."""
    from pgd.evaluation.pilot import PilotError, load_detector

    try:
        model, loader, _ = load_detector(Path(run_dir))
    except PilotError as err:
        raise FigureError(str(err)) from err
    batches, seen = [], 0
    with torch.no_grad():
        for data in loader:
            if seen >= n:
                break
            batches.append((data, model.data_preprocessor(data, False)))
            seen += len(data["inputs"])
    if not batches:
        raise FigureError(f"{run_dir}: the test set is empty")
    return model, batches, min(seen, n)


def input_frame_gt(samples) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Padded GT in the network-input frame (see pgd.evaluation.pilot.batch_gt)."""
    from pgd.evaluation.pilot import batch_gt

    return batch_gt(samples)


def _rgb(raw) -> np.ndarray:
    """A pipeline image (3, h, w) uint8 BGR as loaded -> (h, w, 3) RGB."""
    return raw.cpu().numpy()[::-1].transpose(1, 2, 0).copy()


def fig1(teacher_dir: str | Path, out_base: str | Path, num_images: int = 4, k: int = 30,
         teacher: str = "") -> list[Path]:
    """Regions on the teacher's first test images, each drawn at the resolution of its level, the in-box
    strategies only inside the GT boxes (see the module docstring)."""
    from pgd.evaluation.heatmap import paint_finest
    from pgd.models.adapters import build_adapter

    model, batches, n = _first_images(teacher_dir, num_images)
    adapter = build_adapter(model)
    images, boxes, maps = [], [], {m: [] for m in FIG1_METHODS}
    with torch.no_grad():
        for data, batch in batches:
            inputs, samples = batch["inputs"], batch["data_samples"]
            pred = adapter.dense_predictions(model.bbox_head(model.extract_feat(inputs)),
                                             [ds.metainfo for ds in samples])
            gt_boxes, gt_labels, gt_valid = input_frame_gt(samples)
            weights = region_maps(pred, gt_boxes, gt_labels, gt_valid, k=k)
            painted = {name: paint_finest(torch.as_tensor(w), pred.points, pred.level_sizes, pred.strides,
                                          tuple(inputs.shape[-2:])).numpy() for name, w in weights.items()}
            for i, ds in enumerate(samples):
                h, w = ds.metainfo["img_shape"][:2]
                images.append(_rgb(data["inputs"][i])[:h, :w])
                boxes.append(gt_boxes[i][gt_valid[i]].numpy())
                inside = box_union_mask(boxes[-1], (h, w))
                for name in FIG1_METHODS:
                    maps[name].append(painted[name][i, :h, :w] * (inside if name in IN_BOX_METHODS else 1.0))
    return plot_regions(images[:n], boxes[:n], {k_: v[:n] for k_, v in maps.items()}, out_base, teacher)


def shown_detections(bboxes: torch.Tensor, scores: torch.Tensor, num_gt: int,
                     score_thr: float | None = None) -> np.ndarray:
    """The boxes Fig. 5 draws for one image: those scoring >= score_thr, or with score_thr None the
    max(1, num_gt) highest-scoring ones. A fixed threshold suits converged detectors (the paper's); after the mini
    profile's short schedules no score reached 0.3 (AP 13 students: an empty figure), while the top-k boxes still
    show where each student looks."""
    if score_thr is not None:
        return bboxes[scores >= score_thr].numpy()
    order = torch.argsort(scores, descending=True)[:max(1, int(num_gt))]
    return bboxes[order].numpy()


def fig5(student_dir: str | Path, pgd_dir: str | Path, out_base: str | Path, num_images: int = 4,
         score_thr: float | None = None) -> list[Path]:
    """Detections of both students on the same first test images, in the input frame: per image the k best
    (k = number of GT objects) or, with score_thr, all scoring at least that (see shown_detections)."""
    dets, images, gts = [], [], []
    for d in (student_dir, pgd_dir):
        model, batches, n = _first_images(d, num_images)
        found = []
        with torch.no_grad():
            for data, batch in batches:
                res = model.predict(batch["inputs"], batch["data_samples"], rescale=False)
                gt_boxes, _, gt_valid = input_frame_gt(batch["data_samples"])
                found += [shown_detections(r.pred_instances.bboxes, r.pred_instances.scores,
                                           int(gt_valid[i].sum()), score_thr) for i, r in enumerate(res)]
                if d == student_dir:
                    for i, ds in enumerate(batch["data_samples"]):
                        h, w = ds.metainfo["img_shape"][:2]
                        images.append(_rgb(data["inputs"][i])[:h, :w])
                        gts.append(gt_boxes[i][gt_valid[i]].numpy())
        dets.append(found[:n])
    return plot_detections(images[:n], gts[:n], dets[0], dets[1], out_base)


def fig2(heatmap_files: Mapping[str, str | Path], out_base: str | Path) -> list[Path]:
    data = {name: load_heatmap(p) for name, p in heatmap_files.items()}
    return plot_heatmaps({n: d["heatmaps"] for n, d in data.items()}, out_base,
                         images={n: d["images"] for n, d in data.items()},
                         gt_boxes={n: d["gt_boxes"] for n, d in data.items()})


def fig3(pilot_files: Mapping[str, str | Path], out_base: str | Path) -> list[Path]:
    return plot_pilot({name: load_pilot(p) for name, p in pilot_files.items()}, out_base)


def fig1_teacher(matrix, teacher: str | None):
    """The teacher run Fig. 1 draws: the paper's ATSS one, or ``teacher`` if it names a COCO teacher."""
    if teacher is None:
        return figure_runs(matrix, 1)[0]
    coco = {r.id: r for r in matrix.teachers if r.dataset == "coco"}
    if teacher not in coco:
        near = difflib.get_close_matches(teacher, list(coco), n=1)
        raise FigureError(f"--teacher {teacher!r} is not a COCO teacher run"
                          + (f"; did you mean {near[0]!r}?" if near else f"; choose from {', '.join(coco)}"))
    return coco[teacher]


def present_inputs(files: Mapping[str, Path], allow_missing: bool) -> dict[str, Path]:
    """The per-teacher inputs of Figs. 2 / 3 that exist; with ``allow_missing`` the absent teachers are left out
    (and named on stderr) instead of failing, so a figure can be drawn from the teachers trained so far."""
    missing = [name for name, path in files.items() if not Path(path).is_file()]
    if not missing:
        return dict(files)
    if not allow_missing or len(missing) == len(files):
        raise FigureError(f"missing figure input(s): {', '.join(str(files[n]) for n in missing)}; run their "
                          "teachers first (`snakemake --cores all heatmaps pilot`)"
                          + ("" if allow_missing else ", or draw the others with --allow-missing"))
    print(f"pgd figure: leaving out {', '.join(missing)} (no input yet)", file=sys.stderr)
    return {name: path for name, path in files.items() if name not in missing}


def make_figure(fig: int, profile: str, results: str | Path = "results", matrix=None, out_dir=None,
                num_images: int = 4, allow_missing: bool = False, teacher: str | None = None) -> list[Path]:
    """``teacher``: Fig. 1 from this COCO teacher run instead of the paper's ATSS one (FIG1_TEACHER)."""
    matrix = matrix if matrix is not None else load_matrix()
    out_base = Path(out_dir or Path(results) / profile / "figures") / f"fig{fig}"
    if fig == 1:
        run = fig1_teacher(matrix, teacher)
        return fig1(run_dir(profile, run.id, 0, results), out_base, num_images, teacher=DETECTOR_LABELS[run.detector])
    if teacher is not None:
        raise FigureError(f"--teacher is for Fig. 1 only (Fig. {fig} draws {'its fixed runs' if fig == 5 else 'every COCO teacher'})")
    runs = figure_runs(matrix, fig)
    rd = {r.id: run_dir(profile, r.id, 0, results) for r in runs}
    if fig == 2:
        return fig2(present_inputs({DETECTOR_LABELS[r.detector]: Path(results) / profile / "heatmaps" / f"{r.id}.npz"
                                    for r in runs}, allow_missing), out_base)
    if fig == 3:
        return fig3(present_inputs({DETECTOR_LABELS[r.detector]: rd[r.id] / "pilot.csv" for r in runs},
                                   allow_missing), out_base)
    return fig5(rd[FIG5_RUNS[0]], rd[FIG5_RUNS[1]], out_base, num_images)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="pgd figure", description="Render a paper figure (PNG + PDF).")
    p.add_argument("--fig", type=int, required=True, choices=list(FIGURES),
                   help="1: foreground regions (Box, BoxGauss, FGFI, PGD) of the ATSS teacher (or --teacher); 2: the teachers' "
                        "quality heatmaps; 3: the top-X%% masking pilot; 5: student vs PGD detections")
    p.add_argument("--profile", default="mini", help="default %(default)s")
    p.add_argument("--results", default="results", help="results root (default %(default)s)")
    p.add_argument("--matrix", default=None, help="experiment matrix (default configs/experiments.yaml)")
    p.add_argument("--out-dir", default=None, help="default <results>/<profile>/figures")
    p.add_argument("--num-images", type=int, default=4, help="val images shown in Figs. 1 and 5 (default %(default)s)")
    p.add_argument("--teacher", default=None, metavar="RUN",
                   help=f"Fig. 1 only: draw it from this COCO teacher run (default {FIG1_TEACHER}, as the paper)")
    p.add_argument("--allow-missing", action="store_true",
                   help="Figs. 2 and 3: draw the teachers whose inputs exist and leave out the others")
    a = p.parse_args(argv)
    paths = make_figure(a.fig, a.profile, a.results, load_matrix(a.matrix), a.out_dir, a.num_images,
                        a.allow_missing, a.teacher)
    print("wrote " + " ".join(map(str, paths)))
    return 0

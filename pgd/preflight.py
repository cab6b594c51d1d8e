"""Checks before a Runner is built: user errors that would otherwise surface inside mmengine, after its
environment and config dump (a missing pretrained backbone or dataset, a KD loss that cannot apply, a teacher
checkpoint that is not one)."""
from __future__ import annotations

from pathlib import Path

from pgd.run_setup import TrainError


def check_pretrained_backbone(cfg) -> None:
    """Fail before anything is built when the backbone's local pretrained checkpoint is missing (the mini profile
    loads `pgd pretrain`'s output), naming the file and how to make it, not deep inside init_weights."""
    from pgd.config import local_pretrained_checkpoint

    model = cfg.model
    ckpt = local_pretrained_checkpoint((model.get("student") or model).get("backbone") or {})
    if ckpt and not Path(ckpt).is_file():
        raise TrainError(
            f"pretrained backbone checkpoint not found: {ckpt}. Make it with `pgd pretrain --backbone "
            f"{Path(ckpt).stem} --profile <profile> --out {ckpt}` (snakemake's pretrain_backbone rule does), or point "
            f"$PGD_PRETRAINED_DIR or --set pretrained_dir=DIR at the folder that holds it")


DATALOADERS = ("train_dataloader", "val_dataloader", "test_dataloader")


def _data_hint(cfg) -> str:
    """How to provide a run's missing dataset: generate the synthetic one, or point the real one's root at it."""
    from pgd.config import ConfigCompositionError, load_profile
    from pgd.workflow_config import DATASET_LAYOUT

    run = cfg.get("pgd") or {}
    dataset = run.get("dataset")
    if dataset not in DATASET_LAYOUT:
        return "point --set data_root=DIR at the dataset"
    try:
        synthetic = str(load_profile(run.get("profile")).datasets.get(dataset, "")).startswith("synth")
    except ConfigCompositionError:
        synthetic = False
    if synthetic:
        return (f"generate it with `pgd data {dataset} --out DIR` (Snakemake's data rules do) and pass "
                f"--set data_root=DIR")
    key, layout = DATASET_LAYOUT[dataset]
    env = "PGD_COCO_ROOT" if dataset == "coco" else "PGD_CROWDHUMAN_ROOT"
    return (f"point ${env} (Snakemake: --config {key}=DIR) or --set data_root=DIR at the {dataset} folder, "
            f"which holds {layout}")


def check_data_files(cfg, loaders=DATALOADERS) -> None:
    """Fail before the Runner is built (and before its environment dump) when an annotation file or image folder
    of the run's datasets is missing, naming the file and how to provide it."""
    for key in loaders:
        ds = (cfg.get(key) or {}).get("dataset") or {}
        if "ann_file" not in ds:
            continue   # a wrapper dataset (ConcatDataset, ...): mmdet reports its own errors
        root = str(ds.get("data_root") or "")
        ann = Path(root, ds["ann_file"])
        img = (ds.get("data_prefix") or {}).get("img")
        for path, what in ((ann, "annotation file"), (Path(root, img) if img else None, "image folder")):
            if path is not None and not (path.is_file() if what == "annotation file" else path.is_dir()):
                raise TrainError(f"{key}: {what} not found: {path}; {_data_hint(cfg)}")


def check_distillation(cfg) -> None:
    """Fail before the Runner is built when a distilled run cannot work: a KD loss that does not apply to the
    detector (LD on ATSS), a keyword its class does not take, or a teacher checkpoint that is not one."""
    import inspect

    from mmdet.registry import MODELS

    import pgd.losses  # noqa: F401  (registers the KD losses)
    from pgd.checkpoint import check_checkpoint
    from pgd.suggest import did_you_mean
    from pgd.vocab import kd_loss_keywords, kd_loss_types

    model = cfg.model
    if model.get("type") != "DistillDetector":
        return
    detector = (cfg.get("pgd") or {}).get("detector")
    for loss_cfg in model.get("kd_losses") or []:
        loss_cfg = dict(loss_cfg)
        cls = MODELS.get(loss_cfg.pop("type", None))
        if cls is None:
            continue   # the distiller names an unregistered type itself
        if detector and hasattr(cls, "check_detector"):
            cls.check_detector(detector)   # ConfigError (a UserError) with the reason
        if cls.__name__ in kd_loss_types():   # PGDLoss(**settings) included: its keys are PGDSettings' fields
            allowed = kd_loss_keywords(cls.__name__)
            for key in loss_cfg:
                if key not in allowed:
                    raise TrainError(f"KD loss {cls.__name__} has no option {key!r}{did_you_mean(key, allowed)} "
                                     f"(model.kd_losses of the run's config); its options: "
                                     f"{', '.join(sorted(allowed))}")
        else:
            try:
                inspect.signature(cls).bind(**loss_cfg)
            except TypeError as err:
                raise TrainError(f"KD loss {cls.__name__}: {err} (model.kd_losses of the run's config)") from None
    teacher = model.get("teacher") or {}
    if teacher.get("checkpoint"):
        check_checkpoint(teacher["checkpoint"])

"""The distiller: a frozen teacher, a student and KD losses, as one mmdet detector (``DistillDetector``).

Per training step (docs/ARCHITECTURE.md, "The distiller"): teacher forward in eval mode without grad, then the
student's -> each gives a ``FeatureSet``: its FPN outputs, its head's raw outputs and the taps its KD losses declared
(pgd.models.taps: forward hooks on named modules, e.g. the first tower conv of every level) -> the detector adapter
turns the teacher's head outputs into ``DensePredictions`` -> one ``KDContext`` goes to every KD loss -> their
losses are added to the student's own.

The teacher is deliberately *not* a registered submodule (as mmdet's ``KnowledgeDistillationSingleStageDetector``):
it is then absent from ``parameters()`` (so from the optimizer and DDP), from ``state_dict()`` (so from every
checkpoint) and from ``train()``; ``_apply`` forwards device / dtype moves to it.
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from mmengine.config import Config, ConfigDict
from mmengine.logging import MessageHub, MMLogger
from torch import Tensor, nn

from mmdet.models.detectors.base import BaseDetector
from mmdet.models.utils import unpack_gt_instances
from mmdet.registry import MODELS
from mmdet.structures import SampleList

from pgd.checkpoint import load_checkpoint
from pgd.errors import ConfigError
from pgd.losses.base import BaseKDLoss, FeatureSet, KDContext, gt_from_data_samples
from pgd.models.adapters import build_adapter, detector_name
from pgd.models.taps import TapRecorder, merge_taps, parse_taps


@contextmanager
def ddod_assign_from(head: nn.Module, cls_scores: list[Tensor], bbox_preds: list[Tensor]):
    """Make a DDOD head's label assignment use other (teacher) predictions while its losses use its own.

    ``DDODHead.loss_by_feat`` hands the predictions to ``process_predictions_and_anchors`` only to build the
    per-image score / box lists its two ATSS assigners read (docs/methods.md §1.8: the official distiller calls
    ``get_targets`` with the teacher's outputs); the loss terms use the ``cls_scores`` / ``bbox_preds`` arguments.
    """
    original = head.process_predictions_and_anchors

    def with_teacher_predictions(anchor_list, valid_flag_list, _cls_scores, _bbox_preds, *args, **kwargs):
        return original(anchor_list, valid_flag_list, cls_scores, bbox_preds, *args, **kwargs)

    head.process_predictions_and_anchors = with_teacher_predictions
    try:
        yield
    finally:
        del head.process_predictions_and_anchors   # back to the class method


def _as_cfg(cfg: Any) -> ConfigDict:
    return cfg if isinstance(cfg, ConfigDict) else ConfigDict(cfg)


def build_teacher(teacher: dict | None, teacher_model: dict | None) -> nn.Module:
    """The teacher from ``dict(config=<run config.py>, checkpoint=<model.pth>)``, or ``teacher_model`` (a model
    config, random init: tests and self-distillation smoke runs)."""
    if (teacher is None) == (teacher_model is None):
        raise ConfigError('DistillDetector needs exactly one of teacher=dict(config=..., checkpoint=...) or '
                          'teacher_model=<model cfg>')
    if teacher_model is not None:
        model = MODELS.build(_as_cfg(teacher_model))
        model.init_weights()   # mmdet's own init (e.g. the focal-loss prior bias), as a trained teacher would have
        return model
    missing = {'config', 'checkpoint'} - set(teacher)
    if missing:
        raise ConfigError(f'DistillDetector teacher is missing {sorted(missing)} (got {sorted(teacher)})')
    cfg_path = Path(teacher['config'])
    if not cfg_path.is_file():
        raise FileNotFoundError(f'teacher config not found: {cfg_path}')
    model_cfg = Config.fromfile(str(cfg_path)).model
    if model_cfg.get('type') == 'DistillDetector':
        raise ConfigError(f'teacher config {cfg_path} is itself a distiller; give the plain teacher run config')
    model = MODELS.build(model_cfg)
    ckpt = load_checkpoint(teacher['checkpoint'])   # weights_only with pgd.checkpoint's allow-list
    state = ckpt.get('state_dict', ckpt)
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    reshaped = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or reshaped:
        raise ConfigError(f'teacher checkpoint {teacher["checkpoint"]} does not match {cfg_path}: missing '
                          f'{missing[:5]}, unexpected {unexpected[:5]}, other shape {reshaped[:5]} '
                          f'({len(missing)}/{len(unexpected)}/{len(reshaped)} in all)')
    model.load_state_dict(state, strict=True)
    return model


def copy_matching(src: nn.Module, dst: nn.Module, prefixes: tuple[str, ...] = ('neck.', 'bbox_head.')
                  ) -> tuple[list[str], list[str]]:
    """Copy every ``src`` tensor under ``prefixes`` into ``dst`` where the key exists with the same shape.

    Returns (copied keys, skipped keys). PGD's ``init_student`` (docs/methods.md §1.8) - with a MobileNetV2 student the
    FPN lateral convs differ in input channels and are skipped.
    """
    src_state, dst_state = src.state_dict(), dst.state_dict()
    copied, skipped = [], []
    with torch.no_grad():
        for key, value in src_state.items():
            if not key.startswith(prefixes):
                continue
            if key in dst_state and dst_state[key].shape == value.shape:
                dst_state[key].copy_(value)
                copied.append(key)
            else:
                skipped.append(key)
    return copied, skipped


@MODELS.register_module()
class DistillDetector(BaseDetector):
    """Teacher -> student feature distillation for single-stage dense detectors (FCOS, AutoAssign, ATSS, GFL, DDOD).

    Args:
        student: the plain student detector config.
        teacher: ``dict(config=<teacher run config.py>, checkpoint=<teacher model.pth>)``.
        teacher_model: alternatively a teacher model config built with random weights (tests).
        kd_losses: registered :class:`BaseKDLoss` configs; each gets the step's :class:`KDContext`.
        init_student: copy the teacher's neck and head tensors into the student where shapes match.
        teacher_guided_assign: DDOD only - the student's own label assignment uses the teacher's predictions;
            'auto' = True for DDOD, False otherwise.
        teacher_cache: ``dict(file=..., input_signature=...)``: read the teacher's outputs from a cache built by
            `pgd teacher-cache` instead of running the teacher each step (pgd.models.teacher_cache).
        data_preprocessor: defaults to the student's.
    """

    def __init__(self, student: dict, teacher: dict | None = None, teacher_model: dict | None = None,
                 kd_losses: list[dict] | None = None, init_student: bool = True,
                 teacher_guided_assign: bool | str = False, teacher_cache: dict | None = None,
                 data_preprocessor: dict | None = None, init_cfg: dict | None = None) -> None:
        student = _as_cfg(student)
        if data_preprocessor is None:
            data_preprocessor = student.get('data_preprocessor')
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.student = MODELS.build(student)
        teacher_net = build_teacher(teacher, teacher_model)
        teacher_net.eval()
        teacher_net.requires_grad_(False)
        object.__setattr__(self, 'teacher', teacher_net)   # unregistered on purpose, see the module docstring

        for name, net in (('student', self.student), ('teacher', teacher_net)):
            if not hasattr(net, 'bbox_head') or not hasattr(net, 'neck'):
                raise ConfigError(f'DistillDetector: the {name} must be a single-stage detector with a neck and '
                                  f'a bbox_head, got {type(net).__name__}')
        self.detector = detector_name(self.student.bbox_head)
        teacher_family = detector_name(teacher_net.bbox_head)
        if teacher_family != self.detector:
            raise ConfigError(f'DistillDetector: teacher is {teacher_family} but student is {self.detector}')
        if teacher_net.bbox_head.num_classes != self.student.bbox_head.num_classes:
            raise ConfigError(f'DistillDetector: teacher has {teacher_net.bbox_head.num_classes} classes, student '
                              f'{self.student.bbox_head.num_classes}')
        if teacher_guided_assign == 'auto':
            teacher_guided_assign = self.detector == 'ddod'
        if not isinstance(teacher_guided_assign, bool):
            raise ConfigError(f"teacher_guided_assign must be True, False or 'auto', got {teacher_guided_assign!r}")
        if teacher_guided_assign and self.detector != 'ddod':
            raise ConfigError(f'teacher_guided_assign is DDOD-only (docs/methods.md §1.8), '
                              f'detector is {self.detector}')
        self.teacher_guided_assign = teacher_guided_assign

        self.kd_losses = nn.ModuleList()
        taps, adapter_options = {}, {}
        for i, cfg in enumerate(kd_losses or []):
            cfg = _as_cfg(cfg).copy()
            tap_spec = cfg.pop('taps', None)   # the config's taps override the loss class's, name by name
            loss = MODELS.build(cfg)
            if not isinstance(loss, BaseKDLoss):
                raise ConfigError(f'kd_losses entry {cfg.get("type")} is not a BaseKDLoss')
            loss.check_detector(self.detector)
            loss.bind_detector(self.detector)
            owner = f'kd_losses[{i}] {type(loss).__name__}'
            if tap_spec is not None:
                loss.taps = {**loss.taps, **{name: tap.module if tap.per_level else dict(module=tap.module,
                                                                                           per_level=False)
                                             for name, tap in parse_taps(tap_spec, owner).items()}}
            taps[owner] = parse_taps(loss.required_taps(), owner)
            for key, value in loss.adapter_options().items():
                if adapter_options.setdefault(key, value) != value:
                    raise ConfigError(f'{owner} needs adapter option {key}={value!r}, another KD loss '
                                      f'{adapter_options[key]!r}')
            self.kd_losses.append(loss)

        self.adapter = build_adapter(teacher_net, **adapter_options)
        self.taps = merge_taps(taps)   # recorded in every pass: exactly what the losses read
        self._teacher_taps = TapRecorder(teacher_net, self.taps, 'teacher')
        self._student_taps = TapRecorder(self.student, self.taps, 'student')

        self.teacher_cache = None
        if teacher_cache is not None and self.needs_teacher_pass:
            from pgd.models.teacher_cache import TeacherCache

            self.teacher_cache = TeacherCache.load(teacher_cache['file'])
            self.teacher_cache.check(teacher_cache['input_signature'], self.taps, (teacher or {}).get('checkpoint'))

        self.init_student = init_student
        self.init_student_report: tuple[list[str], list[str]] = ([], [])
        if init_student:
            self._init_student_from_teacher()

    # ------------------------------------------------------------------ teacher handling
    def _init_student_from_teacher(self) -> None:
        self.init_student_report = copy_matching(self.teacher, self.student)
        copied, skipped = self.init_student_report
        MMLogger.get_current_instance().info(
            f'init_student: copied {len(copied)} teacher neck/head tensors into the student, skipped '
            f'{len(skipped)} of another shape: {skipped}')

    def init_weights(self) -> None:
        # the Runner calls this after __init__: it would overwrite the copied teacher weights with the init_cfg
        super().init_weights()
        if self.init_student:
            self._init_student_from_teacher()

    def train(self, mode: bool = True) -> 'DistillDetector':
        super().train(mode)
        self.teacher.eval()   # always: FCOS decodes in pixels and BN / dropout stay fixed only in eval mode
        return self

    def _apply(self, fn, *args, **kwargs):
        super()._apply(fn, *args, **kwargs)
        self.teacher._apply(fn, *args, **kwargs)
        return self

    def student_state_dict(self) -> dict[str, Tensor]:
        """The student alone, with the keys of a plain detector (what ``model.pth`` holds)."""
        return self.student.state_dict()

    # ------------------------------------------------------------------ passes
    @staticmethod
    def _pass(net: nn.Module, recorder: TapRecorder, batch_inputs: Tensor) -> FeatureSet:
        with recorder.recording():
            neck = net.extract_feat(batch_inputs)
            outs = net.bbox_head(neck)
        return FeatureSet(neck=list(neck), head_outs=outs, **recorder.take(len(neck)))

    def _forward_teacher(self, batch_inputs: Tensor) -> FeatureSet:
        self.teacher.eval()
        with torch.no_grad():
            return self._pass(self.teacher, self._teacher_taps, batch_inputs)

    def _cached_teacher(self, batch_inputs: Tensor, batch_data_samples: SampleList) -> FeatureSet:
        meta = [s.metainfo for s in batch_data_samples]
        if any('img_id' not in m or 'flip' not in m for m in meta):
            from pgd.models.teacher_cache import TeacherCacheError

            raise TeacherCacheError('teacher cache: the data samples lack img_id or flip (PackDetInputs meta_keys); '
                                    'a cache is looked up by (image id, flipped)')
        got = self.teacher_cache.lookup([m['img_id'] for m in meta], [m['flip'] for m in meta],
                                        batch_inputs.shape[-2:], ('neck', 'head_outs', *self.taps),
                                        batch_inputs.device)
        got['head_outs'] = tuple(got['head_outs'])
        return FeatureSet(**got)

    def _forward_student(self, batch_inputs: Tensor) -> FeatureSet:
        return self._pass(self.student, self._student_taps, batch_inputs)

    @property
    def needs_teacher_pass(self) -> bool:
        """False for a control (no KD loss, the student's own assignment): nothing reads the teacher's outputs."""
        return bool(self.kd_losses) or self.teacher_guided_assign

    def loss(self, batch_inputs: Tensor, batch_data_samples: SampleList) -> dict[str, Tensor]:
        if not self.needs_teacher_pass:
            return self.student.loss(batch_inputs, batch_data_samples)
        if self.teacher_cache is not None:
            teacher = self._cached_teacher(batch_inputs, batch_data_samples)
        else:
            teacher = self._forward_teacher(batch_inputs)
        student = self._forward_student(batch_inputs)
        gt_instances, gt_ignore, img_metas = unpack_gt_instances(batch_data_samples)

        head = self.student.bbox_head
        if self.teacher_guided_assign:
            with ddod_assign_from(head, teacher.head_outs[0], teacher.head_outs[1]):
                losses = head.loss_by_feat(*student.head_outs, gt_instances, img_metas, gt_ignore)
        else:
            losses = head.loss_by_feat(*student.head_outs, gt_instances, img_metas, gt_ignore)
        if not self.kd_losses:
            return losses

        gt_boxes, gt_labels, gt_valid = gt_from_data_samples(batch_data_samples)
        ctx = KDContext(
            student=student, teacher=teacher,
            teacher_pred=self.adapter.dense_predictions(teacher.head_outs, img_metas),
            gt_boxes=gt_boxes.to(batch_inputs.device), gt_labels=gt_labels.to(batch_inputs.device),
            gt_valid=gt_valid.to(batch_inputs.device),
            batch_input_shape=tuple(img_metas[0]['batch_input_shape']),
            img_shapes=[tuple(m['img_shape'][:2]) for m in img_metas],
            iteration=int(MessageHub.get_current_instance().get_info('iter', 0) or 0),
            student_head=head, batch_data_samples=batch_data_samples)
        for kd in self.kd_losses:
            for key, value in BaseKDLoss.check_keys(kd(ctx), type(kd).__name__).items():
                if key in losses:
                    raise ConfigError(f'KD loss {type(kd).__name__} returns {key!r}, which is already a loss key')
                losses[key] = value
        return losses

    def predict(self, batch_inputs: Tensor, batch_data_samples: SampleList, rescale: bool = True) -> SampleList:
        return self.student.predict(batch_inputs, batch_data_samples, rescale=rescale)

    def _forward(self, batch_inputs: Tensor, batch_data_samples: SampleList | None = None) -> tuple:
        return self.student._forward(batch_inputs, batch_data_samples)

    def extract_feat(self, batch_inputs: Tensor):
        return self.student.extract_feat(batch_inputs)

"""What decides a frozen teacher's input in a distillation step, for the teacher-output cache
(pgd.models.teacher_cache): kept free of torch and mmdet so that composing a config (and the DAG's parse) imports
neither."""
from __future__ import annotations

import copy
import hashlib
import json
from typing import Sequence

CACHE_FILE = 'teacher_cache.pt'   # in the teacher's run directory


def input_signature(train_pipeline: Sequence[dict], data_preprocessor: dict, train_set: dict | None = None) -> str:
    """A digest of the student's training set, train pipeline and preprocessor (the flip probability aside: a
    cache holds both flips): two students whose signatures agree feed their teacher the same tensor for the same
    (image, flip). ``train_set``: the dataset's type, annotation file and image prefix as configured (relative to
    its data_root, which may move), so a cache of another training set is refused rather than read by image id."""
    pipe = copy.deepcopy([dict(t) for t in train_pipeline])
    for t in pipe:
        if t.get('type') == 'RandomFlip':
            t.pop('prob', None)
    doc = dict(pipeline=pipe, preprocessor=dict(data_preprocessor))
    if train_set is not None:
        doc['train_set'] = train_set
    text = json.dumps(doc, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def train_set_identity(dataset: dict) -> dict:
    """What names a training set in a composed config, location aside (see :func:`input_signature`)."""
    return {k: dataset.get(k) for k in ('type', 'ann_file', 'data_prefix')}


def config_signature(cfg) -> str:
    """The input signature of a composed student config (a distillation run: model.student)."""
    dataset = cfg.train_dataloader.dataset
    return input_signature(dataset.pipeline, cfg.model.student.data_preprocessor, train_set_identity(dataset))

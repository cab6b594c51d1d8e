"""What decides a frozen teacher's input in a distillation step, for the teacher-output cache
(pgd.models.teacher_cache): kept free of torch and mmdet so that composing a config (and the DAG's parse) imports
neither."""
from __future__ import annotations

import copy
import hashlib
import json
from typing import Sequence

CACHE_FILE = 'teacher_cache.pt'   # in the teacher's run directory


def input_signature(train_pipeline: Sequence[dict], data_preprocessor: dict) -> str:
    """A digest of the student's train pipeline and preprocessor (the flip probability aside: a cache holds both
    flips): two students whose signatures agree feed their teacher the same tensor for the same (image, flip)."""
    pipe = copy.deepcopy([dict(t) for t in train_pipeline])
    for t in pipe:
        if t.get('type') == 'RandomFlip':
            t.pop('prob', None)
    text = json.dumps(dict(pipeline=pipe, preprocessor=dict(data_preprocessor)), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]

"""Checks of the Snakemake config that run when the Snakefile loads it, before any job is planned.

:func:`check_config` validates the merged config (workflow/config/*.yaml, --configfile, --config) against
``workflow/schemas/config.schema.yaml`` with Snakemake's own ``validate``, after a first pass that names an
unknown key together with the valid ones (jsonschema's message names only the unexpected key, then dumps the
schema). :func:`check_dataset_files` names the config key and the expected layout when a real dataset is missing.
Both raise :class:`ConfigKeyError` / :class:`DatasetMissingError`, which the Snakefile reports as one message and
exit status 2.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import yaml

from pgd.errors import UserError
from pgd.suggest import did_you_mean

# config key and layout of each real dataset (what configs/_base_/datasets/{coco,crowdhuman}.py read)
DATASET_LAYOUT = {
    "coco": ("coco_root", "annotations/instances_train2017.json, annotations/instances_val2017.json, train2017/, "
                          "val2017/"),
    "crowdhuman": ("crowdhuman_root", "annotation_train.odgt, annotation_val.odgt, Images/"),
}


class ConfigKeyError(UserError):
    """The Snakemake config has an unknown key or a value of the wrong type."""


class DatasetMissingError(UserError):
    """A real dataset the planned jobs read is not where the config says."""


def _resolve(schema: Mapping, root: Mapping) -> Mapping:
    ref = schema.get("$ref")
    if not ref:
        return schema
    node: Any = root
    for part in ref.lstrip("#/").split("/"):
        node = node[part]
    return node


def unknown_key(config: Mapping, schema: Mapping, root: Mapping | None = None, path: tuple = ()) -> str | None:
    """A message for the first key the schema does not allow (``additionalProperties: false``), else None."""
    root = schema if root is None else root
    schema = _resolve(schema, root)
    if not isinstance(config, Mapping) or schema.get("type") != "object":
        return None
    props = schema.get("properties") or {}
    if schema.get("additionalProperties") is False:
        for key in config:
            if key not in props:
                name = ".".join((*path, str(key)))
                under = f" under {'.'.join(path)}" if path else ""
                return (f"unknown config key {name!r}{did_you_mean(key, props)}; valid keys{under}: "
                        f"{', '.join(props)}")
    for key, value in config.items():
        if key in props:
            found = unknown_key(value, props[key], root, (*path, str(key)))
            if found:
                return found
    return None


def check_config(config: Mapping, schema_path: str | os.PathLike) -> None:
    """Refuse an unknown key (naming the valid ones) or a mistyped value of the Snakemake config."""
    from jsonschema import ValidationError
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate

    schema_path = Path(schema_path).resolve()
    with open(schema_path) as f:
        schema = yaml.safe_load(f)
    where = f"({schema_path.parent.parent.name}/{schema_path.parent.name}/{schema_path.name})"
    found = unknown_key(config, schema)
    if found:
        raise ConfigKeyError(f"{found} {where}")
    try:
        validate(dict(config), str(schema_path), set_default=False)
    except WorkflowError as err:
        cause = err.__context__   # validate raises WorkflowError while handling jsonschema's error
        if not isinstance(cause, ValidationError):
            raise
        key = ".".join(str(p) for p in cause.absolute_path) or "(top level)"
        description = cause.schema.get("description") if isinstance(cause.schema, Mapping) else None
        if description is None and cause.absolute_path:
            # a failing keyword of a sub-schema (type, minimum) carries no description of its own: use the key's
            node = schema
            for part in cause.absolute_path:
                node = _resolve(node, schema)
                node = (node.get("properties") or {}).get(part, node.get("items", {})) if isinstance(part, str) \
                    else node.get("items", {})
            description = _resolve(node, schema).get("description")
        raise ConfigKeyError(f"config key {key}: {cause.message}" + (f" ({description})" if description else "")
                             + f" {where}") from None


def check_dataset_files(dataset: str, root: str, files: list[str], others: Mapping[str, str] | None = None) -> None:
    """Name the config key, the expected layout and the fix when a real dataset's annotation files are missing.

    ``others``: {dataset: root} of the other real datasets; those missing as well are named in the same message
    (a first run without any data then learns about every key at once).
    """
    missing = [f for f in files if not os.path.isfile(f)]
    if not missing:
        return
    key, layout = DATASET_LAYOUT[dataset]
    also = [f"{DATASET_LAYOUT[d][0]}={r} ({DATASET_LAYOUT[d][1]})" for d, r in (others or {}).items()
            if d != dataset and not os.path.isdir(r)]
    raise DatasetMissingError(
        f"{dataset} dataset not found: {missing[0]} does not exist (config key {key}={root}). "
        f"Expected under {key}: {layout}. Point it at the dataset with --config {key}=/path/to/{dataset}, "
        f"or use profile=mini, which generates synthetic sets"
        + (f". Also missing: {'; '.join(also)}" if also else ""))

"""A profile's training recipe: per-run settings that depend on the detector, backbone, role, dataset or method.

A profile's scale keys (configs/profiles/*.py) are the same for every run. The official PGD recipe is not: the
FCOS / AutoAssign teachers use caffe-style ResNets, CrowdHuman keeps 500 detections per image, teachers train without
gradient clipping, some runs use fp16... A profile states these as an ordered list of rules:

    recipe = [dict(name='teacher_no_clip', when=dict(role='teacher'), cfg={'optim_wrapper.clip_grad': None},
                   source='work_configs/base/3x_setting.py:57'), ...]
    recipe_switches = dict(ddod_assigner='official', ...)   # named deviations, each rule may depend on one

`when` maps run attributes (detector, backbone, role, dataset, method; method 'none' = a plain run) to a value or a
list of values; `switch=(name, value)` makes a rule apply only while that switch has that value. A rule sets dotted
keys on the plain detector model (`model`, before any distiller wraps it), on the whole config (`cfg`, after the
schedule and optimiser) and on every KD loss (`kd_loss`: flat keys, after the method's detector_overrides and before
the matrix row's method_overrides, so a table's sweep still wins). Later rules win. Values replace, never merge.
"""
from __future__ import annotations

import copy
from typing import Any, Mapping

RULE_KEYS = {'name', 'when', 'switch', 'model', 'cfg', 'kd_loss', 'source'}
WHEN_KEYS = ('detector', 'backbone', 'role', 'dataset', 'method')
SWITCH_PREFIX = 'recipe_switches.'


class RecipeError(ValueError):
    """A profile's recipe or a switch override is malformed."""


def pop_switch_overrides(overrides: dict) -> dict[str, Any]:
    """Remove ``recipe_switches.<name>`` keys from a run's overrides and return them as {name: value}."""
    found = {}
    for key in [k for k in overrides if k.startswith(SWITCH_PREFIX)]:
        found[key[len(SWITCH_PREFIX):]] = overrides.pop(key)
    return found


def resolve_switches(profile: str, defaults: Mapping | None, chosen: Mapping[str, Any]) -> dict[str, Any]:
    """The profile's switch defaults with the run's choices applied; an unknown switch name is an error."""
    switches = dict(defaults or {})
    unknown = set(chosen) - set(switches)
    if unknown:
        raise RecipeError(f'profile {profile!r} has no recipe switch {sorted(unknown)}; '
                          f'its switches are {sorted(switches)}')
    switches.update(chosen)
    return switches


def _matches(wanted: Any, actual: Any) -> bool:
    options = wanted if isinstance(wanted, (list, tuple)) else (wanted,)
    return actual in options


def matching_rules(profile: str, rules, run: Mapping[str, Any], switches: Mapping[str, Any]) -> list[dict]:
    """The rules of a profile's recipe that apply to `run` (keys of WHEN_KEYS), in order."""
    out = []
    for i, rule in enumerate(rules or ()):
        rule = dict(rule)
        where = f'profile {profile!r} recipe rule #{i + 1} ({rule.get("name", "unnamed")})'
        bad = set(rule) - RULE_KEYS
        if bad:
            raise RecipeError(f'{where}: unknown keys {sorted(bad)}; a rule may set {sorted(RULE_KEYS)}')
        when = dict(rule.get('when') or {})
        bad = set(when) - set(WHEN_KEYS)
        if bad:
            raise RecipeError(f'{where}: `when` may test {WHEN_KEYS}, not {sorted(bad)}')
        switch = rule.get('switch')
        if switch is not None:
            if not (isinstance(switch, (list, tuple)) and len(switch) == 2):
                raise RecipeError(f'{where}: switch must be (name, value), got {switch!r}')
            if switch[0] not in switches:
                raise RecipeError(f'{where}: switch {switch[0]!r} is not in recipe_switches {sorted(switches)}')
            if not _matches(switch[1], switches[switch[0]]):
                continue
        if all(_matches(v, run.get(k) or 'none') for k, v in when.items()):
            out.append(rule)
    return out


def set_dotted(target: dict, key: str, value: Any) -> None:
    """``target['a']['b'][0]['c'] = value`` for key 'a.b.0.c' (integer parts index lists); parents must exist."""
    parts = key.split('.')
    node = target
    for depth, part in enumerate(parts[:-1]):
        try:
            node = node[int(part)] if isinstance(node, list) else node[part]
        except (KeyError, IndexError, ValueError, TypeError):
            raise RecipeError(f'recipe key {key!r}: {".".join(parts[:depth + 1])!r} does not exist') from None
    last = parts[-1]
    if isinstance(node, list):
        node[int(last)] = copy.deepcopy(value)
    else:
        node[last] = copy.deepcopy(value)


def apply(target: dict, settings: Mapping[str, Any] | None) -> None:
    for key, value in dict(settings or {}).items():
        set_dotted(target, key, value)

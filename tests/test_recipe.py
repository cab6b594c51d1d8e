"""pgd.recipe: rule matching, switches and dotted setting (hand-made rules)."""
from __future__ import annotations

import pytest

from pgd.recipe import RecipeError, matching_rules, pop_switch_overrides, resolve_switches, set_dotted

RULES = [
    dict(name='teachers', when=dict(role='teacher'), cfg={'a': 1}),
    dict(name='two_detectors', when=dict(detector=['fcos', 'atss'], method='none'), cfg={'a': 2}),
    dict(name='switched', when=dict(detector='atss'), switch=('s', 'on'), cfg={'a': 3}),
]
RUN = dict(detector='atss', backbone='r50', role='student', dataset='coco', method=None)


def _names(run, switches):
    return [r['name'] for r in matching_rules('p', RULES, run, switches)]


def test_when_lists_method_none_and_switches():
    assert _names(RUN, {'s': 'off'}) == ['two_detectors']
    assert _names(RUN, {'s': 'on'}) == ['two_detectors', 'switched']
    assert _names(dict(RUN, role='teacher', method='pgd'), {'s': 'off'}) == ['teachers']


def test_switch_overrides_are_popped_and_checked():
    overrides = {'recipe_switches.s': 'on', 'train_cfg.max_iters': 3}
    assert pop_switch_overrides(overrides) == {'s': 'on'} and overrides == {'train_cfg.max_iters': 3}
    assert resolve_switches('p', {'s': 'off'}, {'s': 'on'}) == {'s': 'on'}
    with pytest.raises(RecipeError, match=r"profile 'p' has no recipe switch \['t'\]; its switches are \['s'\]"):
        resolve_switches('p', {'s': 'off'}, {'t': 'on'})


def test_malformed_rules_are_named():
    with pytest.raises(RecipeError, match=r"rule #1 \(x\): unknown keys \['model_cfg'\]"):
        matching_rules('p', [dict(name='x', model_cfg={})], RUN, {})
    with pytest.raises(RecipeError, match=r"rule #1 \(x\): `when` may test .*, not \['depth'\]"):
        matching_rules('p', [dict(name='x', when=dict(depth=50))], RUN, {})
    with pytest.raises(RecipeError, match=r"switch 'q' is not in recipe_switches \['s'\]"):
        matching_rules('p', [dict(name='x', switch=('q', 'on'))], RUN, {'s': 'off'})


def test_set_dotted_replaces_and_indexes_lists():
    target = {'a': {'b': [{'c': 1}, {'c': 2}]}, 'd': {'e': {'f': 1}}}
    set_dotted(target, 'a.b.1.c', 5)
    set_dotted(target, 'd.e', {'g': 2})            # replaced, not merged
    assert target == {'a': {'b': [{'c': 1}, {'c': 5}]}, 'd': {'e': {'g': 2}}}
    with pytest.raises(RecipeError, match=r"recipe key 'x.y': 'x' does not exist"):
        set_dotted(target, 'x.y', 1)

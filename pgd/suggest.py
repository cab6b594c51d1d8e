"""'Did you mean' hints for unknown names (run ids, methods, detectors, commands), from difflib."""
from __future__ import annotations

import difflib
from collections.abc import Iterable


def closest(word: str, choices: Iterable[str], n: int = 3) -> list[str]:
    """Up to n of `choices` that look like `word` (difflib's ratio >= 0.6), best first; a candidate clearly worse
    than the best one (ratio lower by more than 0.05) is left out, so a near-exact match is named alone."""
    if not isinstance(word, str):
        return []
    choices = [str(c) for c in choices]
    close = difflib.get_close_matches(word, choices, n=n, cutoff=0.6)
    ratio = {c: difflib.SequenceMatcher(None, word, c).ratio() for c in close}
    return [c for c in close if ratio[c] >= ratio[close[0]] - 0.05] if close else []


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'atss'?)`` (or ``'atss' or 'fcos'``), or ``''`` when nothing is close: appended to an error."""
    close = closest(word, choices)
    if not close:
        return ""
    return " (did you mean " + " or ".join(repr(c) for c in close) + "?)"

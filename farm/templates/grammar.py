"""Progression grammar: a weighted walk over chord functions that always meets the cadence rules.

Sampling is constrained, not retried: a backward pass marks which function may stand on each bar
so that the rest of the loop can still end on an allowed function and wrap back to bar 1; the
forward walk only picks among those. It never fails for a grammar that passed :func:`load_rules`.
"""
from __future__ import annotations

import random
from typing import Sequence

from farm.templates.rules import Grammar, Rules


def _weighted(rng: random.Random, options: dict[str, float]) -> str:
    names = [k for k, w in options.items() if w > 0]
    return rng.choices(names, weights=[options[k] for k in names])[0]


def _reachable(g: Grammar, bars: int, start: str, looping: bool) -> list[set[str]]:
    """ok[i]: functions bar i+1 may take so the loop can still finish legally (bar 1 fixed to ``start``)."""
    ok: list[set[str]] = [set() for _ in range(bars)]
    ok[-1] = {f for f in g.last if not looping or g.transitions[f].get(start, 0) > 0}
    for i in range(bars - 2, -1, -1):
        ok[i] = {f for f in g.functions if any(g.transitions[f].get(n, 0) > 0 for n in ok[i + 1])}
    return ok


def feasible_starts(g: Grammar, bars: int, *, looping: bool = True) -> dict[str, float]:
    """The ``first`` functions from which a legal ``bars``-bar progression exists, with their weights."""
    return {f: w for f, w in g.first.items() if w > 0 and f in _reachable(g, bars, f, looping)[0]}


def sample_functions(g: Grammar, bars: int, rng: random.Random, *, looping: bool = True) -> list[str]:
    """One function per bar, weighted by the grammar, meeting the cadence rules."""
    starts = feasible_starts(g, bars, looping=looping)
    if not starts:
        raise ValueError(f"no {bars}-bar progression meets the cadence rules")
    first = _weighted(rng, starts)
    ok = _reachable(g, bars, first, looping)
    seq = [first]
    for i in range(1, bars):
        options = {f: w for f, w in g.transitions[seq[-1]].items() if f in ok[i]}
        seq.append(_weighted(rng, options))
    return seq


def sample_progression(g: Grammar, mode: str, bars: int, rng: random.Random) -> list[str]:
    """Roman numerals (the labels' form, ``Vsus4``, ``IIImaj7``), one per bar. A function that repeats picks a new chord
    of that function when it has one, so a bar never just restates the bar before by accident."""
    funcs = sample_functions(g, bars, rng)
    romans: list[str] = []
    for f in funcs:
        table = g.chords[mode][f]
        options = {k: w for k, w in table.items() if not romans or k != romans[-1]}
        if not any(w > 0 for w in options.values()):
            options = table
        romans.append(_weighted(rng, options))
    return romans


def progression_is_valid(rules: Rules, romans: Sequence[str], *, looping: bool = True,
                         mode: str | None = None) -> bool:
    """True when the grammar allows this progression (one roman numeral per bar).

    Every chord must belong to a function in the mode, every successive transition (and with
    ``looping`` the wrap from the last bar back to the first) must have a weight above zero, bar 1
    must take a ``first`` function and the last bar a ``last`` one. Without ``mode``, any of the
    rule set's modes will do. Roman numerals may be readable (``Vsus4``, ``IIImaj7``), music21 figures
    (``V[no3][add4]``) or major sevenths written without ``maj`` (``III7`` in minor).
    """
    g = rules.grammar
    if not romans:
        return False
    for m in ([mode] if mode else rules.modes):
        if m not in g.chords:
            continue
        funcs = [g.function_of(m, r) for r in romans]
        if any(f is None for f in funcs):
            continue
        if g.first.get(funcs[0], 0) <= 0 or funcs[-1] not in g.last:
            continue
        pairs = list(zip(funcs, funcs[1:]))
        if looping:
            pairs.append((funcs[-1], funcs[0]))
        if all(g.transitions[a].get(b, 0) > 0 for a, b in pairs):
            return True
    return False

"""The digits catalogue: described transformations of the input image, single and composed.

A concept applies one to three transformation families (see :mod:`.transforms`) at fixed values,
in the fixed family order. Ids are slugs of ``family-value`` steps joined by ``+`` (a minus sign
is written ``m``): ``rotate-20``, ``shift-x-m2``, ``shear-0.2+blur-1``. Every prompt names the
transformations and their values.

The split is rule-based, so no held-out concept is reachable from the train ones:

* each family has a *train grid* and disjoint held-out values: *interpolation* values strictly
  between two neighbouring grid values, and *extrapolation* values beyond the grid's range;
  train concepts only use grid values;
* ``HELD_OUT_PAIRS`` (one per family at most) are never composed in any train concept, neither
  as a pair nor inside a triple; held-out *composition* concepts compose them at train values;
* a few train pairs reappear held out with one part at an interpolation or extrapolation value.

:func:`sample_concept` draws train concepts at continuous values inside the train range, never
within half a grid gap of a held-out interpolation value nor in the gap around a neutral value
(no rotation, unit scale, half inversion). Everything is deterministic: selections are SHA-256
ranks.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from functools import cache
from typing import Any

from denoised_weights.core.errors import DnwError, UnknownNameError
from denoised_weights.core.interfaces import HELD_OUT, SPLITS, TRAIN, Concept
from denoised_weights.plugins.digits.transforms import FAMILIES, ORDER, fmt

INTERPOLATION, EXTRAPOLATION, COMPOSITION = "interpolation", "extrapolation", "composition"
#: held out by the task's ``exclude_families`` option: a transformation never trained at all
FAMILY = "family"
Step = tuple[str, float]


@dataclass(frozen=True)
class Grid:
    """A family's train values and its held-out interpolation and extrapolation values."""

    train: tuple[float, ...]
    interpolation: tuple[float, ...] = ()
    extrapolation: tuple[float, ...] = ()


GRIDS: dict[str, Grid] = {
    "scale": Grid((0.5, 0.6, 0.8, 0.9, 1.1, 1.2, 1.4, 1.5), (0.7, 1.3), (0.4, 1.7)),
    "rotate": Grid((-60, -40, -20, -10, 10, 20, 40, 60), (30, -50), (80, -75)),
    "shear": Grid((-0.6, -0.4, -0.2, -0.1, 0.1, 0.2, 0.4, 0.6), (0.3, -0.5), (0.85, -0.8)),
    "shift-x": Grid((-3, -2, -1, 1, 2, 3), (1.5, -2.5), (-4,)),
    "shift-y": Grid((-3, -2, -1, 1, 2, 3), (-1.5, 2.5), (4,)),
    "thicken": Grid((0.25, 0.5, 0.75, 1.0, 1.5), (1.25,), (2.0,)),
    "thin": Grid((0.2, 0.4, 0.6, 0.8), (0.5,), (1.0,)),
    "blur": Grid((0.5, 0.75, 1.0, 1.5, 2.0), (1.25, 1.75), (2.5,)),
    "invert": Grid((0.1, 0.2, 0.35, 0.65, 0.8, 1.0), (0.9,)),
    "noise": Grid((0.05, 0.1, 0.15, 0.2, 0.3), (0.25,), (0.4,)),
}

#: pairs never composed: they undo each other
INCOMPATIBLE: frozenset[frozenset[str]] = frozenset({frozenset(("thicken", "thin"))})
N_HELD_OUT_PAIRS = 4
#: value combinations per composed pair (train / held-out)
TRAIN_PAIR_LEVELS, HELD_OUT_PAIR_LEVELS = 3, 2
N_TRAIN_TRIPLES = 30
N_HELD_OUT_TRIPLES = 4
#: train pairs that reappear held out with one part at an interpolation / extrapolation value
N_INTERPOLATION_PAIRS, N_EXTRAPOLATION_PAIRS = 8, 6


def _rank(*parts: object) -> int:
    return int(hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:16], 16)


def _ordered(names: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted(names, key=ORDER.index))


def _combos(size: int) -> list[tuple[str, ...]]:
    """Compatible family combinations of ``size``, in application order, SHA-256 ranked."""
    out = [
        _ordered(c)
        for c in itertools.combinations(ORDER, size)
        if not any(frozenset(p) in INCOMPATIBLE for p in itertools.combinations(c, 2))
    ]
    return sorted(out, key=lambda c: _rank("combo", *c))


def _held_out_pairs() -> frozenset[frozenset[str]]:
    used: set[str] = set()
    pairs = []
    for a, b in _combos(2):
        if {a, b} & used:
            continue
        pairs.append(frozenset((a, b)))
        used |= {a, b}
        if len(pairs) == N_HELD_OUT_PAIRS:
            break
    return frozenset(pairs)


HELD_OUT_PAIRS: frozenset[frozenset[str]] = _held_out_pairs()


def _touches_held_pair(combo: Sequence[str]) -> int:
    return sum(frozenset(p) in HELD_OUT_PAIRS for p in itertools.combinations(combo, 2))


def _inner(name: str) -> tuple[float, ...]:
    """Train values used inside compositions: the grid without its extremes."""
    values = GRIDS[name].train
    return values[1:-1] if len(values) >= 4 else values


def _levels(combo: tuple[str, ...], count: int) -> list[tuple[float, ...]]:
    """``count`` distinct value combinations of ``combo`` at inner train values."""
    grid = itertools.product(*(_inner(n) for n in combo))
    return sorted(grid, key=lambda vs: _rank("levels", *combo, *vs))[:count]


# -- ids, prompts, concepts --------------------------------------------------------------------
def _slug(value: float) -> str:
    return fmt(value).replace("-", "m")


def concept_id(steps: Sequence[Step]) -> str:
    """``"scale-0.8+rotate-m20"``."""
    return "+".join(f"{name}-{_slug(value)}" for name, value in steps)


def prompts(steps: Sequence[Step]) -> tuple[str, ...]:
    """Three paraphrases that name every step and its value."""
    first, second, third = zip(*(FAMILIES[n].describe(v) for n, v in steps), strict=True)

    def join(parts: Sequence[str], last: str) -> str:
        return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + f" {last} " + parts[-1]

    imperative = ", then ".join(third)
    return (
        f"handwritten digits {join(first, 'and')}",
        f"a digit image with {join(second, 'and')}",
        imperative[0].upper() + imperative[1:],
    )


def make_concept(steps: Iterable[Step], split: str = TRAIN, holdout: str = "") -> Concept:
    """The concept of ``(family, value)`` steps (put into application order)."""
    steps = sorted(((n, float(v)) for n, v in steps), key=lambda s: ORDER.index(s[0]))
    return Concept(
        id=concept_id(steps),
        prompts=prompts(steps),
        split=split,
        family="+".join(n for n, _ in steps),
        params=tuple((FAMILIES[n].key, v) for n, v in steps),
        holdout=holdout,
    )


def steps_of(concept: Concept) -> list[Step]:
    """``[(family, value)]`` of a concept, from its params."""
    steps = [(key.split(".", 1)[0], float(value)) for key, value in concept.params]
    unknown = [name for name, _ in steps if name not in FAMILIES]
    if unknown:
        raise DnwError(
            f"concept {concept.id!r} is not a digits transformation ({', '.join(unknown)}); "
            f"use a concept of the digits task (see 'dnw list concepts --task digits')"
        )
    return steps


# -- the catalogue -----------------------------------------------------------------------------
def _build() -> list[Concept]:
    out: list[Concept] = []
    for name in ORDER:
        grid = GRIDS[name]
        out += [make_concept([(name, v)]) for v in grid.train]
        out += [make_concept([(name, v)], HELD_OUT, INTERPOLATION) for v in grid.interpolation]
        out += [make_concept([(name, v)], HELD_OUT, EXTRAPOLATION) for v in grid.extrapolation]

    pairs = _combos(2)
    train_pairs = [c for c in pairs if not _touches_held_pair(c)]
    for combo in train_pairs:
        out += [
            make_concept(zip(combo, vs, strict=True)) for vs in _levels(combo, TRAIN_PAIR_LEVELS)
        ]
    triples = _combos(3)
    for combo in [c for c in triples if not _touches_held_pair(c)][:N_TRAIN_TRIPLES]:
        out += [make_concept(zip(combo, vs, strict=True)) for vs in _levels(combo, 1)]

    # unseen compositions at train values: the held-out pairs, and triples with one of them
    for combo in [c for c in pairs if _touches_held_pair(c)]:
        out += [
            make_concept(zip(combo, vs, strict=True), HELD_OUT, COMPOSITION)
            for vs in _levels(combo, HELD_OUT_PAIR_LEVELS)
        ]
    for combo in [c for c in triples if _touches_held_pair(c) == 1][:N_HELD_OUT_TRIPLES]:
        out += [
            make_concept(zip(combo, vs, strict=True), HELD_OUT, COMPOSITION)
            for vs in _levels(combo, 1)
        ]

    # unseen values inside a seen composition
    n_interp = N_INTERPOLATION_PAIRS
    for i, combo in enumerate(train_pairs[: n_interp + N_EXTRAPOLATION_PAIRS]):
        kind = INTERPOLATION if i < n_interp else EXTRAPOLATION
        steps = list(zip(combo, _levels(combo, 1)[0], strict=True))
        parts = [k for k, n in enumerate(combo) if getattr(GRIDS[n], kind)]
        k = parts[_rank("held-part", *combo) % len(parts)]
        held = getattr(GRIDS[combo[k]], kind)
        steps[k] = (combo[k], held[_rank("held-value", *combo) % len(held)])
        out.append(make_concept(steps, HELD_OUT, kind))

    ids = [c.id for c in out]
    if len(set(ids)) != len(ids):  # pragma: no cover - guards edits to the grids
        raise RuntimeError("duplicate concept ids in the digits catalogue")
    return out


@cache
def _catalogue() -> tuple[Concept, ...]:
    return tuple(_build())


@cache
def _by_id() -> dict[str, Concept]:
    return {c.id: c for c in _catalogue()}


def find(concept_id: str) -> Concept | None:
    """The catalogue concept with this id, or None."""
    return _by_id().get(concept_id)


def concepts(split: str | None = None) -> list[Concept]:
    """Every concept (of one split, ``"train"`` or ``"held-out"``), in a fixed order."""
    if split is None:
        return list(_catalogue())
    if split not in SPLITS:
        raise DnwError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    return [c for c in _catalogue() if c.split == split]


# -- continuous sampling -----------------------------------------------------------------------
def held_out_intervals(name: str) -> list[tuple[float, float]]:
    """Open intervals around the family's interpolation values that sampling never enters:
    half the gap to the nearer train neighbour on each side."""
    train = sorted(GRIDS[name].train)
    out = []
    for v in GRIDS[name].interpolation:
        lo = max(t for t in train if t < v)
        hi = min(t for t in train if t > v)
        half = min(v - lo, hi - v) / 2
        out.append((v - half, v + half))
    return out


def sample_segments(name: str) -> list[tuple[float, float]]:
    """Where a family's values are sampled: between neighbouring train values, except the
    gap around the neutral value and the held-out intervals."""
    train = sorted(GRIDS[name].train)
    neutral = FAMILIES[name].neutral
    segments = [(a, b) for a, b in itertools.pairwise(train) if not a < neutral < b]
    for lo, hi in held_out_intervals(name):
        segments = [
            piece
            for a, b in segments
            for piece in (((a, lo), (hi, b)) if a < lo and hi < b else ((a, b),))
        ]
    return segments


def _sample_value(name: str, generator: Any) -> float:
    import torch

    segments = sample_segments(name)
    blocked = held_out_intervals(name)
    total = sum(b - a for a, b in segments)
    decimals = FAMILIES[name].decimals
    while True:
        u = float(torch.rand((), generator=generator, dtype=torch.float64)) * total
        value = segments[-1][1]
        for a, b in segments:
            if u <= b - a:
                value = a + u
                break
            u -= b - a
        value = round(value, decimals)
        if all(not lo <= value <= hi for lo, hi in blocked):
            return value + 0.0  # no negative zero


@cache
def _train() -> tuple[Concept, ...]:
    return tuple(concepts(TRAIN))


def sample_concept(generator: Any, train: Sequence[Concept] | None = None) -> Concept:
    """A train concept's families (one of ``train``'s, default: the catalogue's) at random values
    in their train ranges (``rotate-23.7``)."""
    import torch

    train = _train() if train is None else train
    template = train[int(torch.randint(len(train), (1,), generator=generator))]
    return make_concept([(name, _sample_value(name, generator)) for name, _ in steps_of(template)])


def parse_families(names: str | Iterable[str] | None) -> frozenset[str]:
    """Family names from ``"rotate,blur"`` (or a list); a one-line error names an unknown one."""
    import difflib

    if isinstance(names, str):
        names = names.split(",")
    wanted = {n.strip().lower().replace("_", "-") for n in names or ()} - {""}
    unknown = sorted(wanted - set(ORDER))
    if unknown:
        close = difflib.get_close_matches(unknown[0], ORDER, n=3, cutoff=0.5)
        hint = f"; closest: {', '.join(close)}" if close else ""
        raise DnwError(
            f"exclude_families: unknown digits transformation {unknown[0]!r}{hint} "
            f"(families: {', '.join(ORDER)})"
        )
    return frozenset(wanted)


def excluding(concept: Concept, families: frozenset[str]) -> Concept:
    """``concept``, held out as "family" when it uses one of ``families``."""
    if not families or not families & set(concept.family.split("+")):
        return concept
    return replace(concept, split=HELD_OUT, holdout=FAMILY)


# -- ids of concepts outside the catalogue -----------------------------------------------------
_STEP = re.compile(r"^(?P<name>[a-z]+(?:-[xy])?)-(?P<value>m?\d+(?:\.\d+)?)$")


def classify(steps: Sequence[Step]) -> tuple[str, str]:
    """``(split, holdout)`` of arbitrary steps under the catalogue's rules."""
    names = [n for n, _ in steps]
    for name, value in steps:
        train = GRIDS[name].train
        if not min(train) <= value <= max(train):
            return HELD_OUT, EXTRAPOLATION
        if any(lo < value < hi for lo, hi in held_out_intervals(name)):
            return HELD_OUT, INTERPOLATION
    if _touches_held_pair(names):
        return HELD_OUT, COMPOSITION
    return TRAIN, ""


def parse_concept(text: str) -> Concept:
    """A concept from an id such as ``rotate-23.7+blur-1.2`` (catalogue or not)."""
    steps = []
    for part in text.strip().split("+"):
        match = _STEP.match(part)
        if not match or match["name"] not in FAMILIES:
            raise UnknownNameError(
                f"cannot read {part!r} as a digits transformation: write family-value "
                f"(families: {', '.join(ORDER)}; a minus sign is 'm', e.g. rotate-m20)"
            )
        steps.append((match["name"], float(match["value"].replace("m", "-"))))
    names = [n for n, _ in steps]
    if len(set(names)) != len(names):
        raise DnwError(f"{text!r} uses a transformation twice; use each family once")
    if any(frozenset(p) in INCOMPATIBLE for p in itertools.combinations(names, 2)):
        raise DnwError(f"{text!r} composes transformations that undo each other")
    split, holdout = classify(steps)
    return make_concept(steps, split, holdout)

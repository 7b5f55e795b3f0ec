"""The concept catalogue: named photo edits, each one primitive or a composition of two or three.

A :class:`Concept` is a sequence of primitive edits (see :mod:`.edits`) at fixed parameter
values, with at least three natural-language prompts that name the primitives and their values,
and a split, ``"train"`` or ``"held-out"``. Ids are slugs: a step is the primitive name (``_``
becomes ``-``) followed by its parameter values (a minus sign is written ``m``), and steps of a
composition are joined by ``+``: ``sepia-0.6``, ``hue-rotate-m90``, ``tint-120-0.3+blur-1.5``.
Compositions apply their steps in group order (tone, style, colour, optics), use primitives
from different groups and skip ``REDUNDANT_PAIRS`` (a grey-output edit such as ``threshold``
followed by an edit that does nothing to grey, such as ``hue_rotate``).

The split is fixed and rule-based, so no held-out concept is reachable from the train ones:

* every primitive parameter has a *train grid* and a disjoint set of *held-out values*, each
  strictly between two train grid values (``median``, whose integer radius is 1 or 2, has none);
  train concepts only ever use train grid values;
* a fixed set of primitive pairs (``HELD_OUT_PAIRS``, one per primitive at most) never occurs
  together in any train concept, neither as a pair nor inside a triple;
* a held-out concept either uses at least one held-out value ("interpolation": single
  primitives and a few compositions whose pair is seen in train), or contains a held-out pair
  ("composition": the pair itself and triples containing it, at train values);
* after all of those, single primitives at values beyond their train range
  (``EXTRAPOLATION_VALUES``, "extrapolation"; appended so the ids before them keep their places).

Concepts outside the catalogue (``gamma-2.43``, sampled ones among them) are read by
:func:`.parsing.resolve` and split by the same rules (:mod:`.rules`); :mod:`.sampling` draws
train concepts at continuous values.

Every prompt contains the parameter values (as numbers or exact names), so prompts are unique
across the whole catalogue. The catalogue is deterministic: selections use SHA-256 ranks.
"""

from __future__ import annotations

import difflib
import hashlib
import itertools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache

import torch

from denoised_weights.core.errors import DnwError
from denoised_weights.plugins.image_translation.edits import GROUPS, PRIMITIVES

Params = dict[str, float]
Step = tuple[str, Params]

TRAIN = "train"
HELD_OUT = "held-out"
SPLITS: tuple[str, ...] = (TRAIN, HELD_OUT)
#: how a held-out concept is unseen (``Concept.holdout``): a held-out value between train values,
#: a value beyond the train range, a held-out pair, or an edit type held out altogether
INTERPOLATION = "interpolation"
EXTRAPOLATION = "extrapolation"
COMPOSITION = "composition"
FAMILY = "family"


@dataclass(frozen=True)
class Concept:
    """One edit: primitive ``steps`` applied in order, ``prompts`` that name it, its ``split``
    and, when held out, how (``holdout``)."""

    id: str
    steps: tuple[Step, ...]
    prompts: tuple[str, ...]
    split: str
    holdout: str = ""

    def __hash__(self) -> int:  # steps hold dicts; the id identifies a concept
        return hash(self.id)

    @property
    def primitives(self) -> tuple[str, ...]:
        """The primitive names, in application order."""
        return tuple(name for name, _ in self.steps)


def apply_concept(concept: Concept, images: torch.Tensor) -> torch.Tensor:
    """Apply ``concept`` to a float batch ``[B, 3, H, W]`` in ``[0, 1]``."""
    for name, params in concept.steps:
        images = PRIMITIVES[name](images, **params)
    return images


# ---------------------------------------------------------------------------------------------
# grids: (train levels, held-out levels) per primitive, each level a full parameter dict


def _one(param: str, train: Iterable[float], held: Iterable[float]) -> tuple[list[Params], ...]:
    return [{param: float(v)} for v in train], [{param: float(v)} for v in held]


def _two(
    a: str, b: str, train: Iterable[tuple[float, float]], held: Iterable[tuple[float, float]]
) -> tuple[list[Params], ...]:
    return (
        [{a: float(x), b: float(y)} for x, y in train],
        [{a: float(x), b: float(y)} for x, y in held],
    )


_TINT_HUES = (0, 30, 60, 120, 180, 240, 280, 320)

GRIDS: dict[str, tuple[list[Params], list[Params]]] = {
    # tone
    "gamma": _one("gamma", (0.4, 0.6, 0.8, 1.3, 1.8, 2.5), (2.2,)),
    "contrast": _one("factor", (0.4, 0.6, 0.8, 1.3, 1.6, 2.2), (0.5,)),
    "brightness": _one("delta", (-0.4, -0.25, -0.1, 0.1, 0.25, 0.4), (0.2,)),
    "exposure": _one("stops", (-1.5, -1, -0.5, 0.5, 1, 1.5), (-0.75,)),
    "faded_blacks": _one("amount", (0.1, 0.2, 0.3, 0.4), (0.25,)),
    "local_contrast": _one("clip_limit", (1.5, 2.5, 4, 6, 8), (3,)),
    # style
    "posterize": _one("bits", (1, 2, 4, 6), (3,)),
    "solarize": _one("threshold", (0.2, 0.35, 0.5, 0.65, 0.8), (0.72,)),
    "threshold": _one("level", (0.3, 0.4, 0.5, 0.6, 0.7), (0.45,)),
    "emboss": _one("strength", (0.25, 0.5, 0.75, 1.0), (0.6,)),
    "sketch": _one("softness", (0.8, 1.5, 2.5, 3.5), (2,)),
    "glowing_edges": _one("strength", (0.25, 0.5, 0.75, 1.0), (0.85,)),
    "cartoon": _one("levels", (3, 4, 6, 8), (5,)),
    "median": _one("radius", (1, 2), ()),  # integer radius: no value in between
    "oil_paint": _one("radius", (1, 2, 4, 5), (3,)),
    "halftone": _one("cell", (3, 4, 6, 8, 10), (5,)),
    "pixelate": _one("block", (2, 3, 4, 6, 8, 12, 16), (5,)),
    # colour
    "sepia": _one("strength", (0.2, 0.4, 0.6, 0.8, 1.0), (0.5, 0.9)),
    "grayscale": _one("strength", (0.3, 0.5, 0.7, 1.0), (0.85,)),
    "hue_rotate": _one(
        "degrees", (-150, -120, -90, -60, -30, 30, 60, 90, 120, 150, 180), (-45, 45, 135)
    ),
    "saturation": _one("factor", (0.2, 0.4, 0.6, 1.5, 2.0, 2.5), (1.75,)),
    "tint": _two(
        "hue",
        "strength",
        [(h, s) for h in _TINT_HUES for s in (0.3, 0.6)],
        [(90, 0.3), (200, 0.6), (0, 0.45), (240, 0.45)],
    ),
    "duotone": _two(
        "shadow_hue",
        "highlight_hue",
        [(240, 60), (240, 30), (280, 30), (280, 60), (0, 180), (120, 320), (0, 60), (120, 30)],
        [(260, 60), (240, 45)],
    ),
    "temperature": _one("shift", (-0.8, -0.5, -0.25, 0.25, 0.5, 0.8), (-0.4, 0.65)),
    "invert": _one("strength", (0.65, 0.75, 0.9, 1.0), (0.8,)),
    "channel_swap": _two(
        "order", "strength", [(o, s) for o in range(3) for s in (0.5, 1.0)], [(1, 0.75), (2, 0.75)]
    ),
    "false_colour": _two(
        "palette", "strength", [(p, s) for p in range(6) for s in (0.6, 1.0)], [(0, 0.8), (3, 0.8)]
    ),
    # optics
    "blur": _one("sigma", (0.7, 1.0, 1.5, 2.0, 3.0, 4.0), (1.25, 2.5)),
    "sharpen": _one("amount", (0.5, 1.0, 1.5, 2.0, 3.0), (2.5,)),
    "motion_blur": _two(
        "length",
        "angle",
        [(n, a) for n in (5, 9, 13) for a in (0, 45, 90, 135)],
        [(7, 0), (9, 60)],
    ),
    "chromatic_aberration": _one("shift", (1, 2, 3, 4), (2.5,)),
    "vignette": _one("strength", (0.2, 0.4, 0.6, 0.8, 1.0), (0.5,)),
}

#: held-out values beyond a parameter's train range (inside the primitive's valid range), one or
#: two per primitive. ``median`` and ``pixelate`` have none (their train grids span the valid
#: range), nor have ``hue_rotate`` and ``duotone``: hues, like motion-blur angles, are cyclic, so
#: every hue lies between two train hues (``tint`` and ``motion_blur`` go beyond in strength and
#: length). Left out as nearly invisible (a mean change of photo crops under 0.02, about half
#: their weakest train value's): ``posterize`` 7 bits, ``sharpen`` 0.25 (the only sides their
#: valid ranges leave), ``blur`` 0.5 and ``sepia``, ``grayscale`` and ``vignette`` below 0.2.
EXTRAPOLATION_VALUES: dict[str, list[Params]] = {
    "gamma": [{"gamma": 0.3}, {"gamma": 3.0}],
    "contrast": [{"factor": 0.3}, {"factor": 2.5}],
    "brightness": [{"delta": -0.5}, {"delta": 0.5}],
    "exposure": [{"stops": -2.0}, {"stops": 2.0}],
    "faded_blacks": [{"amount": 0.5}],
    "local_contrast": [{"clip_limit": 10.0}],
    "solarize": [{"threshold": 0.1}, {"threshold": 0.9}],
    "threshold": [{"level": 0.2}, {"level": 0.8}],
    "emboss": [{"strength": 0.1}],
    "sketch": [{"softness": 0.5}, {"softness": 5.0}],
    "glowing_edges": [{"strength": 0.1}],
    "cartoon": [{"levels": 2.0}, {"levels": 10.0}],
    "oil_paint": [{"radius": 6.0}],
    "halftone": [{"cell": 12.0}],
    "saturation": [{"factor": 0.1}, {"factor": 3.0}],
    "tint": [{"hue": 120.0, "strength": 0.9}, {"hue": 240.0, "strength": 0.15}],
    "temperature": [{"shift": -1.0}, {"shift": 1.0}],
    "invert": [{"strength": 0.6}],
    "channel_swap": [{"order": 1.0, "strength": 0.3}],
    "false_colour": [{"palette": 2.0, "strength": 0.4}],
    "blur": [{"sigma": 5.0}],
    "motion_blur": [{"length": 17.0, "angle": 45.0}, {"length": 21.0, "angle": 90.0}],
    "chromatic_aberration": [{"shift": 5.0}],
}

#: how many concepts of each kind the catalogue holds
N_TRAIN_PAIRS = 240
N_TRAIN_TRIPLES = 80
N_HELD_OUT_PAIRS = 16
N_HELD_OUT_TRIPLES = 6
N_HELD_OUT_VALUE_PAIRS = 8


#: pairs never composed: the second edit does nothing visible after the first (grey output)
REDUNDANT_PAIRS: frozenset[frozenset[str]] = frozenset(
    frozenset((mono, other))
    for mono in ("threshold", "sketch")
    for other in ("hue_rotate", "saturation", "grayscale", "channel_swap")
) | {frozenset(("threshold", "sharpen"))}


def _rank(*parts: str) -> str:
    return hashlib.sha256("|".join(parts).encode()).hexdigest()


def _group_index(name: str) -> int:
    return GROUPS.index(PRIMITIVES[name].group)


def _ordered(names: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted(names, key=lambda n: (_group_index(n), n)))


def _compatible(combo: Iterable[str]) -> bool:
    return not any(frozenset(p) in REDUNDANT_PAIRS for p in itertools.combinations(combo, 2))


def _cross_group(size: int) -> list[tuple[str, ...]]:
    """Compatible primitive combinations of ``size`` from different groups, in group order."""
    out = []
    for combo in itertools.combinations(sorted(PRIMITIVES), size):
        if len({PRIMITIVES[n].group for n in combo}) == size and _compatible(combo):
            out.append(_ordered(combo))
    return sorted(out, key=lambda c: _rank("combo", *c))


def _held_out_pairs() -> frozenset[frozenset[str]]:
    """``N_HELD_OUT_PAIRS`` cross-group pairs, each primitive in at most one (SHA-256 order)."""
    used: set[str] = set()
    pairs = []
    for a, b in _cross_group(2):
        if a in used or b in used:
            continue
        pairs.append(frozenset((a, b)))
        used |= {a, b}
        if len(pairs) == N_HELD_OUT_PAIRS:
            break
    return frozenset(pairs)


HELD_OUT_PAIRS: frozenset[frozenset[str]] = _held_out_pairs()


def _composition_level(combo: tuple[str, ...], name: str) -> Params:
    """A train level for ``name`` inside ``combo``; grid extremes are left to single concepts."""
    levels = GRIDS[name][0]
    if len(levels) >= 4:
        levels = levels[1:-1]
    return levels[int(_rank("level", *combo, name), 16) % len(levels)]


# ---------------------------------------------------------------------------------------------
# ids and prompts


def _fmt(value: float) -> str:
    return f"{value:g}".replace("-", "m")


def _step_id(name: str, params: Mapping[str, float]) -> str:
    values = "-".join(_fmt(params[k]) for k in PRIMITIVES[name].params)
    return f"{name.replace('_', '-')}-{values}"


def _prompts(steps: tuple[Step, ...]) -> tuple[str, ...]:
    phrases = [PRIMITIVES[name].describe(**params) for name, params in steps]
    first, second, third = ([p[i] for p in phrases] for i in range(3))
    if len(steps) == 1:
        return (first[0], f"a photo with {second[0]}", third[0])
    if len(steps) == 2:
        return (
            f"{first[0]} with {first[1]}",
            f"a photo with {second[0]} and {second[1]}",
            f"{third[0]}, then {third[1]}",
        )
    return (
        f"{first[0]} with {first[1]} and {first[2]}",
        f"a photo with {second[0]}, {second[1]} and {second[2]}",
        f"{third[0]}, then {third[1]}, then {third[2]}",
    )


def make_concept(steps: Iterable[Step], split: str, holdout: str = "") -> Concept:
    """The concept of ``steps`` (applied in the order given) with its id and prompts."""
    steps = tuple((name, dict(params)) for name, params in steps)
    cid = "+".join(_step_id(name, params) for name, params in steps)
    return Concept(id=cid, steps=steps, prompts=_prompts(steps), split=split, holdout=holdout)


# ---------------------------------------------------------------------------------------------
# the catalogue


def _build() -> list[Concept]:
    out: list[Concept] = []
    held_pairs = HELD_OUT_PAIRS

    def touches_held_pair(combo: tuple[str, ...]) -> bool:
        return any(frozenset(p) in held_pairs for p in itertools.combinations(combo, 2))

    def at_train_values(combo: tuple[str, ...]) -> list[Step]:
        return [(n, _composition_level(combo, n)) for n in combo]

    # single primitives: train grid, then held-out values
    for name in PRIMITIVES:
        train, held = GRIDS[name]
        out += [make_concept([(name, lv)], TRAIN) for lv in train]
        out += [make_concept([(name, lv)], HELD_OUT, INTERPOLATION) for lv in held]

    pairs = _cross_group(2)
    train_pairs = [c for c in pairs if not touches_held_pair(c)][:N_TRAIN_PAIRS]
    out += [make_concept(at_train_values(c), TRAIN) for c in train_pairs]

    triples = _cross_group(3)
    train_triples = [c for c in triples if not touches_held_pair(c)][:N_TRAIN_TRIPLES]
    out += [make_concept(at_train_values(c), TRAIN) for c in train_triples]

    # unseen compositions: the held-out pairs, and triples containing exactly one of them
    held_pair_combos = [c for c in pairs if touches_held_pair(c)]
    out += [make_concept(at_train_values(c), HELD_OUT, COMPOSITION) for c in held_pair_combos]
    held_triples = [
        c
        for c in triples
        if sum(frozenset(p) in held_pairs for p in itertools.combinations(c, 2)) == 1
    ][:N_HELD_OUT_TRIPLES]
    out += [make_concept(at_train_values(c), HELD_OUT, COMPOSITION) for c in held_triples]

    # unseen values in a seen composition: a train pair with one part at a held-out value
    for combo in train_pairs[:N_HELD_OUT_VALUE_PAIRS]:
        steps = at_train_values(combo)
        parts = [i for i, n in enumerate(combo) if GRIDS[n][1]]
        k = parts[int(_rank("held-part", *combo), 16) % len(parts)]
        name = combo[k]
        held = GRIDS[name][1]
        steps[k] = (name, held[int(_rank("held-level", *combo), 16) % len(held)])
        out.append(make_concept(steps, HELD_OUT, INTERPOLATION))

    # unseen ranges: single primitives beyond their train range (last, so nothing above moves)
    for name in PRIMITIVES:
        out += [
            make_concept([(name, lv)], HELD_OUT, EXTRAPOLATION)
            for lv in EXTRAPOLATION_VALUES.get(name, ())
        ]

    ids = [c.id for c in out]
    if len(set(ids)) != len(ids):  # pragma: no cover - guards edits to the grids
        raise RuntimeError("duplicate concept ids in the catalogue")
    return out


@cache
def _catalogue() -> tuple[Concept, ...]:
    return tuple(_build())


def catalogue() -> list[Concept]:
    """Every concept, train and held-out, in a fixed order."""
    return list(_catalogue())


def concepts(split: str | None = None) -> list[Concept]:
    """The concepts of one split (``"train"`` or ``"held-out"``), or all of them."""
    if split is None:
        return catalogue()
    if split not in SPLITS:
        raise DnwError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    return [c for c in _catalogue() if c.split == split]


def _normalise(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip().lower())


@cache
def _index() -> tuple[dict[str, Concept], dict[str, Concept]]:
    by_id = {c.id: c for c in _catalogue()}
    by_prompt = {}
    for c in _catalogue():
        for prompt in c.prompts:
            by_prompt.setdefault(_normalise(prompt), c)
    return by_id, by_prompt


def find(id_or_text: str) -> Concept | None:
    """The catalogue concept with this id, or with this prompt (case and spacing ignored)."""
    by_id, by_prompt = _index()
    if id_or_text in by_id:
        return by_id[id_or_text]
    key = _normalise(id_or_text)
    return by_id.get(key) or by_prompt.get(key)


def unknown_concept(id_or_text: str, reason: str = "") -> DnwError:
    """The one-line error for a text that names no concept, with the closest ids."""
    by_id, by_prompt = _index()
    key = _normalise(id_or_text)
    close = difflib.get_close_matches(key, list(by_id) + list(by_prompt), n=6, cutoff=0.5)
    ids = list(dict.fromkeys(by_id[m].id if m in by_id else by_prompt[m].id for m in close))[:3]
    hint = f"; closest: {', '.join(ids)}" if ids else ""
    why = f" ({reason})" if reason else ""
    return DnwError(f"unknown concept {id_or_text!r}{why}{hint} (see `dnw list concepts`)")


def get_concept(id_or_text: str) -> Concept:
    """The catalogue concept with this id, or with this prompt (case and spacing ignored);
    :func:`.parsing.resolve` also reads ids and prompts outside the catalogue.

    Raises :class:`DnwError` naming the closest ids when nothing matches exactly.
    """
    found = find(id_or_text)
    if found is None:
        raise unknown_concept(id_or_text)
    return found

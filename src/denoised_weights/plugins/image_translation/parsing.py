"""Concepts outside the catalogue: read from an id or a prompt, split by the catalogue's rules.

:func:`resolve` finds any concept: a catalogue one by id or prompt, else one read here.

An id is ``name-values[+name-values...]``: a primitive's slug (``_`` written ``-``) followed by
its parameter values in order, ``m`` for a minus sign (``hue-rotate-m37``, ``tint-150-0.57``).
Slugs are tried as prefixes, longest first. A prompt is one the catalogue would write for the
concept (:func:`.concepts.make_concept`): it is cut at the composition templates' joins, each
piece is matched against the primitives' ``describe`` at the numbers (and colour, angle or
category names) it contains, and the result must give back the prompt exactly.

A composition takes at most three primitives, from different groups, and never a redundant pair
(``REDUNDANT_PAIRS``); its steps are put into group order, as the catalogue's are.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Iterator, Sequence
from functools import cache, lru_cache

from denoised_weights.plugins.image_translation.concepts import (
    REDUNDANT_PAIRS,
    Concept,
    Step,
    find,
    make_concept,
    unknown_concept,
)
from denoised_weights.plugins.image_translation.edits import ANGLE_NAMES, GROUPS, PRIMITIVES
from denoised_weights.plugins.image_translation.rules import RULES, ParamRule, classify

MAX_STEPS = 3
_VALUE = re.compile(r"m?\d+(?:\.\d+)?")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
#: parameters whose prompts may name a value instead of writing it
_NAMED: dict[tuple[str, str], tuple[float, ...]] = {
    ("motion_blur", "angle"): tuple(float(a) for a in ANGLE_NAMES),
}
#: the prompt templates of :func:`.concepts._prompts` by phrase index: a prefix, then the joins
#: between the phrases of one, two and three steps
_FORMS: tuple[tuple[int, str, tuple[tuple[str, ...], ...]], ...] = (
    (0, "", ((), (" with ",), (" with ", " and "))),
    (1, "a photo with ", ((), (" and ",), (", ", " and "))),
    (2, "", ((), (", then ",), (", then ", ", then "))),
)


class InvalidConcept(ValueError):
    """A well-formed id or prompt whose edit cannot be made (the message says why)."""


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


# -- ids -----------------------------------------------------------------------------------------
@cache
def _slugs() -> tuple[tuple[str, str], ...]:
    slugs = ((name.replace("_", "-"), name) for name in PRIMITIVES)
    return tuple(sorted(slugs, key=lambda s: -len(s[0])))


def read_step(part: str) -> Step | None:
    """``("tint", {"hue": 150.0, "strength": 0.57})`` from ``"tint-150-0.57"``, or None."""
    for slug, name in _slugs():
        if not part.startswith(slug + "-"):
            continue
        values = part[len(slug) + 1 :].split("-")
        keys = list(PRIMITIVES[name].params)
        if len(values) == len(keys) and all(_VALUE.fullmatch(v) for v in values):
            return name, {
                k: float(v.replace("m", "-")) + 0.0 for k, v in zip(keys, values, strict=True)
            }
    return None


def read_id(text: str) -> list[Step] | None:
    """The steps of an id, or None when ``text`` is not shaped like one."""
    steps = [read_step(part) for part in text.split("+")]
    return None if any(s is None for s in steps) else steps  # type: ignore[return-value]


def build(steps: Sequence[Step]) -> Concept:
    """The concept of ``steps`` (put into group order) with its split and holdout; raises
    :class:`InvalidConcept` when the edit cannot be made."""
    names = [name for name, _ in steps]
    if not names:
        raise InvalidConcept("it names no edit")
    if len(set(names)) != len(names):
        raise InvalidConcept("it uses an edit twice")
    if len(names) > MAX_STEPS:
        raise InvalidConcept(f"a composition has at most {MAX_STEPS} edits")
    if len({PRIMITIVES[n].group for n in names}) != len(names):
        raise InvalidConcept(
            f"a composition takes each edit from a different group: {', '.join(GROUPS)}"
        )
    for name, params in steps:
        for key, value in params.items():
            if problem := RULES[name, key].problem(value):
                raise InvalidConcept(problem)
    for pair in itertools.combinations(names, 2):
        if frozenset(pair) in REDUNDANT_PAIRS:
            a, b = (n.replace("_", "-") for n in pair)
            raise InvalidConcept(
                f"{a} and {b} are never composed: the later one does nothing visible"
            )
    ordered = sorted(steps, key=lambda s: GROUPS.index(PRIMITIVES[s[0]].group))
    split, holdout = classify(ordered)
    return make_concept(ordered, split, holdout)


# -- prompts -------------------------------------------------------------------------------------
def _candidates(rule: ParamRule, numbers: Sequence[float]) -> list[float]:
    """Values of ``rule``'s parameter a phrase with these numbers may describe."""
    lo, hi = rule.valid
    found = {round(s * x, 9) + 0.0 for x in numbers for s in (1, -1, 0.01, -0.01)}
    found |= {*rule.lattice, *_NAMED.get((rule.primitive, rule.key), ())}
    return sorted(v for v in found if lo <= v <= hi and not rule.problem(v))


def _words(text: str) -> set[str]:
    return {w for w in _norm(text).split() if not any(ch.isdigit() for ch in w)}


@cache
def _fixed_words(name: str, index: int) -> frozenset[str]:
    """The words (without digits) that ``describe(...)[index]`` of ``name`` writes at all of
    33 values spread over each parameter's valid range, its whole numbers (``1 pixel``), grid,
    lattice and named values: a phrase without all of them is not this primitive's (a cheap
    filter before ``describe``)."""
    prim = PRIMITIVES[name]
    pools = []
    for key, (lo, hi) in prim.params.items():
        rule = RULES[name, key]
        values = {lo + (hi - lo) * i / 32 for i in range(33)} | {*rule.train, *rule.held}
        values |= {*rule.lattice, *_NAMED.get((name, key), ())}
        if rule.kind == "real":
            values |= set(range(math.ceil(lo), math.floor(hi) + 1))
        pools.append(sorted(v for v in values if not rule.problem(v)))
    keys = list(prim.params)
    phrases = (
        prim.describe(**dict(zip(keys, vs, strict=True)))[index] for vs in itertools.product(*pools)
    )
    return frozenset(set.intersection(*map(_words, phrases)))


@lru_cache(maxsize=4096)
def _match(phrase: str, index: int) -> tuple[tuple[str, tuple[tuple[str, float], ...]], ...]:
    """Every ``(primitive, params)`` whose ``describe(...)[index]`` is ``phrase``."""
    numbers = [float(n) for n in _NUMBER.findall(phrase)]
    words = _words(phrase)
    out = []
    for name, prim in PRIMITIVES.items():
        if not _fixed_words(name, index) <= words:
            continue
        keys = list(prim.params)
        pools = [_candidates(RULES[name, key], numbers) for key in keys]
        for values in itertools.product(*pools):
            params = dict(zip(keys, values, strict=True))
            if _norm(prim.describe(**params)[index]) == phrase:
                out.append((name, tuple(params.items())))
    return tuple(out)


def _cuts(text: str, joins: Sequence[str]) -> Iterator[list[str]]:
    """Every way to cut ``text`` at one occurrence of each join, in order."""
    if not joins:
        yield [text]
        return
    start = 0
    while (i := text.find(joins[0], start)) >= 0:
        for rest in _cuts(text[i + len(joins[0]) :], joins[1:]):
            yield [text[:i], *rest]
        start = i + 1


def read_prompt(text: str) -> Concept | None:
    """The concept whose prompt ``text`` is (normalised), or None."""
    text = _norm(text)
    for index, prefix, joins_by_size in _FORMS:
        if not text.startswith(prefix):
            continue
        for joins in joins_by_size:
            for phrases in _cuts(text[len(prefix) :], joins):
                if not all(phrases):
                    continue
                for combo in itertools.product(*(_match(p, index) for p in phrases)):
                    try:
                        concept = build([(name, dict(params)) for name, params in combo])
                    except InvalidConcept:
                        continue
                    if text in {_norm(p) for p in concept.prompts}:
                        return concept
    return None


def parse(text: str) -> Concept | None:
    """The concept of an id or prompt outside the catalogue, or None when ``text`` is neither;
    raises :class:`InvalidConcept` for an id whose edit cannot be made."""
    text = _norm(text)
    if " " not in text:
        steps = read_id(text)
        return None if steps is None else build(steps)
    return read_prompt(text)


def resolve(id_or_text: str) -> Concept:
    """A concept by id or prompt (case and spacing ignored): the catalogue's, or any well-formed
    id or prompt of edits at other values (a sampled ``gamma-1.47``), split by the catalogue's
    rules. Raises :class:`DnwError` naming the closest catalogue ids when nothing matches."""
    found = find(id_or_text)
    if found is not None:
        return found
    try:
        found = parse(id_or_text)
    except InvalidConcept as exc:
        raise unknown_concept(id_or_text, str(exc)) from None
    if found is None:
        raise unknown_concept(id_or_text)
    return find(found.id) or found

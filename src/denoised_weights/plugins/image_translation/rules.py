"""The catalogue's split rules for any parameter value, and where sampling may draw.

For every parameter of every primitive (:data:`RULES`, keyed ``(primitive, parameter)``):

* its *train values* (that parameter's values over the primitive's train grid) span its
  *train range*;
* each of its held-out values (a held-out level's value that is not a train value) has a closed
  *margin*: half the gap to the neighbouring train value on each side;
* a value beyond the train range is held out as "extrapolation", one inside a margin as
  "interpolation"; a composition containing a ``HELD_OUT_PAIRS`` pair is held out as
  "composition"; everything else is train (:func:`classify`), the neutral gaps below included
  (``gamma-1`` is a train id, though sampling never draws it). This reproduces the split of
  every catalogue concept.

Sampling (:meth:`ParamRule.sample`) draws inside the train range, outside every margin, and
skips the train gap around a *neutral* (identity) value, such as gamma 1 or a 0-degree hue
rotation, as the train grids do. Each parameter is drawn by its kind:

* ``real``: uniformly, rounded to ``decimals`` (2; 1 for the CLAHE clip limit; whole degrees
  for hue rotations and motion-blur angles);
* ``int``: uniformly among whole numbers: the edit rounds bits, levels, radii, cell and block
  sizes (a fraction would only give an id that disagrees with its prompt), and palette and
  channel-order indices are categories;
* ``odd``: odd whole numbers (a motion-blur length is rounded to an odd kernel size);
* ``hue``: among the named hues (``HUE_NAMES``): prompts name a hue by its colour word, which a
  text encoder understands, where any other hue reads "137-degree-hue". Hues are cyclic, but
  the rules treat them as the linear 0..360 range the grids use.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from denoised_weights.plugins.image_translation.concepts import (
    COMPOSITION,
    EXTRAPOLATION,
    GRIDS,
    HELD_OUT,
    HELD_OUT_PAIRS,
    INTERPOLATION,
    TRAIN,
    Step,
)
from denoised_weights.plugins.image_translation.edits import HUE_NAMES, PRIMITIVES

KINDS = ("real", "int", "odd", "hue")


@dataclass(frozen=True)
class ParamRule:
    """One parameter of one primitive: its train values, held-out values and how it is drawn."""

    primitive: str
    key: str
    train: tuple[float, ...]
    held: tuple[float, ...] = ()
    kind: str = "real"
    decimals: int = 2
    neutral: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"{self.primitive}.{self.key}: kind must be one of {KINDS}")

    @property
    def valid(self) -> tuple[float, float]:
        """The primitive's valid range of this parameter."""
        return PRIMITIVES[self.primitive].params[self.key]

    @property
    def low(self) -> float:
        return self.train[0]

    @property
    def high(self) -> float:
        return self.train[-1]

    @cached_property
    def margins(self) -> tuple[tuple[float, float], ...]:
        """Closed intervals around the held-out values: half the gap to each train neighbour."""
        out = []
        for v in self.held:
            below = max(t for t in self.train if t < v)
            above = min(t for t in self.train if t > v)
            out.append((round(v - (v - below) / 2, 9), round(v + (above - v) / 2, 9)))
        return tuple(out)

    @cached_property
    def neutral_gap(self) -> tuple[float, float] | None:
        """The train gap around the neutral value (open), which sampling skips."""
        if self.neutral is None:
            return None
        return next(
            ((a, b) for a, b in itertools.pairwise(self.train) if a < self.neutral < b), None
        )

    def holdout(self, value: float) -> str:
        """ "extrapolation", "interpolation" or "" (a train value) under the catalogue's rules."""
        if value < self.low or value > self.high:
            return EXTRAPOLATION
        if any(lo <= value <= hi for lo, hi in self.margins):
            return INTERPOLATION
        return ""

    def sampleable(self, value: float) -> bool:
        """Whether sampling may return ``value``: a train value outside the neutral gap."""
        gap = self.neutral_gap
        return not self.holdout(value) and not (gap and gap[0] < value < gap[1])

    def problem(self, value: float) -> str:
        """Why ``value`` cannot be used in a concept ("" when it can)."""
        lo, hi = self.valid
        what = f"{self.primitive.replace('_', '-')} {self.key} {value:g}"
        if not lo <= value <= hi:
            return f"{what} is outside its valid range {lo:g}..{hi:g}"
        if self.kind in ("int", "odd") and value != round(value):
            return f"{what} must be a whole number"
        if self.kind == "odd" and round(value) % 2 == 0:
            return f"{what} must be odd"
        return ""

    @cached_property
    def lattice(self) -> tuple[float, ...]:
        """Every value a discrete parameter may take in its valid range (none for "real")."""
        lo, hi = self.valid
        if self.kind == "hue":
            return tuple(float(h) for h in sorted(HUE_NAMES) if lo <= h <= hi)
        whole = [float(v) for v in range(math.ceil(lo), math.floor(hi) + 1)]
        if self.kind == "odd":
            return tuple(v for v in whole if v % 2)
        return tuple(whole) if self.kind == "int" else ()

    @cached_property
    def choices(self) -> tuple[float, ...]:
        """The values sampling draws among, for a discrete parameter."""
        return tuple(v for v in self.lattice if self.sampleable(v))

    @cached_property
    def segments(self) -> tuple[tuple[float, float], ...]:
        """Where a real parameter is drawn: the train range without the margins and the
        neutral gap."""
        pieces = [(a, b) for a, b in itertools.pairwise(self.train) if (a, b) != self.neutral_gap]
        for lo, hi in self.margins:
            pieces = [
                piece
                for a, b in pieces
                for piece in (((a, lo), (hi, b)) if a < lo and hi < b else ((a, b),))
            ]
        return tuple(pieces)

    def sample(self, generator: Any) -> float:
        """A random sampleable value, drawn with the ``torch.Generator`` given."""
        import torch

        if self.kind != "real":
            return self.choices[int(torch.randint(len(self.choices), (1,), generator=generator))]
        total = sum(b - a for a, b in self.segments)
        while True:
            u = float(torch.rand((), generator=generator, dtype=torch.float64)) * total
            value = self.segments[-1][1]
            for a, b in self.segments:
                if u <= b - a:
                    value = a + u
                    break
                u -= b - a
            value = round(value, self.decimals) + 0.0  # no negative zero
            if self.sampleable(value):
                return value


#: how each parameter is drawn, where it differs from ``real`` with 2 decimals and no neutral
_HOW: dict[tuple[str, str], dict[str, Any]] = {
    ("gamma", "gamma"): {"neutral": 1.0},
    ("contrast", "factor"): {"neutral": 1.0},
    ("brightness", "delta"): {"neutral": 0.0},
    ("exposure", "stops"): {"neutral": 0.0},
    ("local_contrast", "clip_limit"): {"decimals": 1},
    ("posterize", "bits"): {"kind": "int"},
    ("cartoon", "levels"): {"kind": "int"},
    ("median", "radius"): {"kind": "int"},
    ("oil_paint", "radius"): {"kind": "int"},
    ("halftone", "cell"): {"kind": "int"},
    ("pixelate", "block"): {"kind": "int"},
    ("hue_rotate", "degrees"): {"decimals": 0, "neutral": 0.0},
    ("saturation", "factor"): {"neutral": 1.0},
    ("tint", "hue"): {"kind": "hue"},
    ("duotone", "shadow_hue"): {"kind": "hue"},
    ("duotone", "highlight_hue"): {"kind": "hue"},
    ("temperature", "shift"): {"neutral": 0.0},
    ("channel_swap", "order"): {"kind": "int"},
    ("false_colour", "palette"): {"kind": "int"},
    ("motion_blur", "length"): {"kind": "odd"},
    ("motion_blur", "angle"): {"decimals": 0},
}


def _rule(name: str, key: str) -> ParamRule:
    train_levels, held_levels = GRIDS[name]
    train = sorted({lv[key] for lv in train_levels})
    held = sorted({lv[key] for lv in held_levels} - set(train))
    return ParamRule(name, key, tuple(train), tuple(held), **_HOW.get((name, key), {}))


RULES: dict[tuple[str, str], ParamRule] = {
    (name, key): _rule(name, key) for name, prim in PRIMITIVES.items() for key in prim.params
}


def classify(steps: Sequence[Step]) -> tuple[str, str]:
    """``(split, holdout)`` of any steps under the catalogue's rules."""
    kinds = {RULES[name, key].holdout(v) for name, params in steps for key, v in params.items()}
    for kind in (EXTRAPOLATION, INTERPOLATION):
        if kind in kinds:
            return HELD_OUT, kind
    names = [name for name, _ in steps]
    if any(frozenset(p) in HELD_OUT_PAIRS for p in itertools.combinations(names, 2)):
        return HELD_OUT, COMPOSITION
    return TRAIN, ""

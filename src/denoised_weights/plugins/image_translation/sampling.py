"""Train concepts at random continuous parameter values (``Task.sample_concept``).

A draw picks a template uniformly among the train concepts it is given (a single primitive at
one of its grid values, or a train pair or triple of the catalogue: never a held-out pair), then
draws every parameter of every primitive afresh with :meth:`.rules.ParamRule.sample`: inside the
train range, outside every held-out margin and the neutral gap, rounded so ids and prompts read
well (``gamma-1.47``, ``tint-150-0.57+blur-2.14``). A duotone never gets the same hue twice (a
"duotone of green and green"). Prompts come from the primitives' ``describe``, as for catalogue
concepts, and :func:`.parsing.resolve` reads every id and prompt this returns.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from denoised_weights.plugins.image_translation.concepts import (
    TRAIN,
    Concept,
    Params,
    Step,
    make_concept,
)
from denoised_weights.plugins.image_translation.edits import PRIMITIVES
from denoised_weights.plugins.image_translation.rules import RULES, classify


def sample_params(name: str, generator: Any) -> Params:
    """Every parameter of primitive ``name`` at a random sampleable value."""
    while True:
        params = {key: RULES[name, key].sample(generator) for key in PRIMITIVES[name].params}
        if name != "duotone" or params["shadow_hue"] != params["highlight_hue"]:
            return params


def sample_steps(primitives: Sequence[str], generator: Any) -> list[Step]:
    """The primitives (in the order given) at random sampleable values."""
    return [(name, sample_params(name, generator)) for name in primitives]


def sample_concept(templates: Sequence[Sequence[str]], generator: Any) -> Concept:
    """A train concept: one of ``templates`` (primitive names, in application order) at random
    values, drawn with the ``torch.Generator`` given."""
    import torch

    if not templates:
        raise ValueError("no train concepts to sample from")
    template = templates[int(torch.randint(len(templates), (1,), generator=generator))]
    steps = sample_steps(template, generator)
    split, holdout = classify(steps)
    if split != TRAIN:  # pragma: no cover - guards edits to the rules
        raise RuntimeError(f"sampled a {holdout} concept from {template}")
    return make_concept(steps, split)

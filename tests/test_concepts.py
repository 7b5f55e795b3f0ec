"""Primitive edits and the concept catalogue (edits.py, concepts.py)."""

from __future__ import annotations

import itertools
import re
from collections import defaultdict

import pytest
import torch
import torch.nn.functional as F

from denoised_weights.core.errors import DnwError
from denoised_weights.plugins.image_translation.concepts import (
    Concept,
    apply_concept,
    catalogue,
    concepts,
    get_concept,
)
from denoised_weights.plugins.image_translation.edits import PRIMITIVES

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    """Smooth random colour images with some mid-frequency texture and a gradient."""
    g = torch.Generator().manual_seed(0)
    coarse = F.interpolate(torch.rand(4, 3, 5, 5, generator=g), size=32, mode="bicubic")
    fine = F.interpolate(torch.rand(4, 3, 11, 11, generator=g), size=32, mode="bilinear")
    ramp = torch.linspace(0, 1, 32).view(1, 1, 32, 1)
    return (0.55 * coarse + 0.2 * fine + 0.25 * ramp).clamp(0, 1)


def _at(name: str, t: float) -> dict[str, float]:
    return {k: lo + t * (hi - lo) for k, (lo, hi) in PRIMITIVES[name].params.items()}


def _check_images(out: torch.Tensor, like: torch.Tensor) -> None:
    assert out.shape == like.shape
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()
    assert out.min() >= 0.0 and out.max() <= 1.0


# --------------------------------------------------------------------------------------------
# primitives


def test_enough_primitives() -> None:
    assert len(PRIMITIVES) >= 25
    for name, prim in PRIMITIVES.items():
        assert prim.name == name
        assert 1 <= len(prim.params) <= 2
        assert all(lo < hi for lo, hi in prim.params.values())


@pytest.mark.parametrize("name", sorted(PRIMITIVES))
def test_primitive_mid_range(name: str, images: torch.Tensor) -> None:
    prim = PRIMITIVES[name]
    params = _at(name, 0.75)  # off-centre: the centre of a signed range is the identity
    before = images.clone()
    out = prim(images, **params)
    _check_images(out, images)
    assert torch.equal(images, before), "input must not be modified"
    assert torch.equal(out, prim(images, **params)), "not deterministic"
    assert (out - images).abs().mean() > 1e-3, "edit left the image unchanged"
    phrases = prim.describe(**params)
    assert len(phrases) == 3 and all(p.strip() for p in phrases)


@pytest.mark.parametrize("name", sorted(PRIMITIVES))
def test_primitive_range_ends(name: str, images: torch.Tensor) -> None:
    prim = PRIMITIVES[name]
    keys = list(prim.params)
    for ends in itertools.product((0, 1), repeat=len(keys)):
        params = {k: prim.params[k][e] for k, e in zip(keys, ends, strict=True)}
        _check_images(prim(images[:2], **params), images[:2])


@pytest.mark.parametrize("name", sorted(PRIMITIVES))
def test_primitive_rejects_bad_params(name: str, images: torch.Tensor) -> None:
    prim = PRIMITIVES[name]
    params = _at(name, 0.5)
    key = next(iter(params))
    with pytest.raises(ValueError):
        prim(images, **{**params, key: prim.params[key][1] + 1.0})
    with pytest.raises(ValueError):
        prim(images, **{**params, "bogus": 1.0})


# --------------------------------------------------------------------------------------------
# catalogue


def test_catalogue_size_ids_and_prompts() -> None:
    cat = catalogue()
    assert len(cat) >= 400
    assert [c.id for c in cat] == [c.id for c in catalogue()]  # stable
    ids = [c.id for c in cat]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"[a-z0-9.+-]+", i) for i in ids)
    all_prompts = []
    for c in cat:
        assert isinstance(c, Concept)
        assert len(set(c.prompts)) == len(c.prompts) >= 3
        all_prompts += [p.lower() for p in c.prompts]
    assert len(set(all_prompts)) == len(all_prompts), "prompts must be unique across concepts"


def test_catalogue_steps_are_valid() -> None:
    sizes = set()
    for c in catalogue():
        sizes.add(len(c.steps))
        groups = [PRIMITIVES[name].group for name, _ in c.steps]
        assert len(set(groups)) == len(groups)
        for name, params in c.steps:
            assert set(params) == set(PRIMITIVES[name].params)
            for key, value in params.items():
                lo, hi = PRIMITIVES[name].params[key]
                assert lo <= value <= hi
    assert sizes == {1, 2, 3}
    assert get_concept("sepia-0.6").split == "train"
    assert get_concept("sepia-0.5").split == "held-out"


def test_prompts_vary_with_values() -> None:
    weak, strong = get_concept("sepia-0.2"), get_concept("sepia-1")
    assert all(a != b for a, b in zip(weak.prompts, strong.prompts, strict=True))
    assert any("90 degrees" in p for p in get_concept("hue-rotate-90").prompts)


def test_apply_concept_composes_steps(images: torch.Tensor) -> None:
    comp = next(c for c in catalogue() if len(c.steps) == 3)
    expected = images
    for name, params in comp.steps:
        expected = PRIMITIVES[name](expected, **params)
    out = apply_concept(comp, images)
    _check_images(out, images)
    assert torch.equal(out, expected)


# --------------------------------------------------------------------------------------------
# split


#: the catalogue's size before the extrapolation concepts were appended
N_BEFORE_EXTRAPOLATION = 584


def test_split_counts() -> None:
    train, held = concepts("train"), concepts("held-out")
    assert len(train) + len(held) == len(catalogue())
    before = catalogue()[:N_BEFORE_EXTRAPOLATION]
    held_before = [c for c in before if c.split == "held-out"]
    assert len(held_before) >= 40
    assert 0.10 <= len(held_before) / len(before) <= 0.15
    assert {c.holdout for c in held_before} == {"interpolation", "composition"}
    extrapolation = catalogue()[N_BEFORE_EXTRAPOLATION:]
    assert len(extrapolation) >= 30
    assert all(c.split == "held-out" and c.holdout == "extrapolation" for c in extrapolation)
    assert all(c.holdout == "" for c in train)
    with pytest.raises(DnwError):
        concepts("validation")


def test_held_out_unreachable_from_train() -> None:
    train_values: dict[tuple[str, str], set[float]] = defaultdict(set)
    train_pairs: set[frozenset[str]] = set()
    train_keys = set()
    for c in concepts("train"):
        train_keys.add(frozenset((n, tuple(sorted(p.items()))) for n, p in c.steps))
        train_pairs |= {frozenset(p) for p in itertools.combinations(c.primitives, 2)}
        for name, params in c.steps:
            for key, value in params.items():
                train_values[name, key].add(value)

    kinds = defaultdict(int)
    for c in concepts("held-out"):
        key = frozenset((n, tuple(sorted(p.items()))) for n, p in c.steps)
        assert key not in train_keys
        unseen_values = [
            (name, k, v)
            for name, params in c.steps
            for k, v in params.items()
            if v not in train_values[name, k]
        ]
        for name, k, v in unseen_values:  # between train grid values, or beyond them
            inside = min(train_values[name, k]) < v < max(train_values[name, k])
            assert inside == (c.holdout != "extrapolation"), (c.id, k)
        unseen_pairs = [
            p for p in itertools.combinations(c.primitives, 2) if frozenset(p) not in train_pairs
        ]
        assert unseen_values or unseen_pairs, f"{c.id} is reachable from train"
        kinds["values"] += bool(unseen_values)
        kinds["compositions"] += bool(unseen_pairs)
        kinds["triples"] += bool(unseen_pairs) and len(c.steps) == 3
        kind = ("interpolation", "extrapolation") if unseen_values else ("composition",)
        assert c.holdout in kind, c.id
    assert kinds["values"] >= 10 and kinds["compositions"] >= 10 and kinds["triples"] >= 1


# --------------------------------------------------------------------------------------------
# lookup


def test_get_concept_by_id_and_prompt() -> None:
    for c in catalogue()[::97]:
        assert get_concept(c.id) is c
        for prompt in c.prompts:
            assert get_concept(prompt) is c
        assert get_concept("  " + c.prompts[0].upper() + " ") is c


def test_get_concept_unknown() -> None:
    with pytest.raises(DnwError) as info:
        get_concept("sepia-0.65")  # the catalogue's lookup (parsing.resolve reads such ids)
    message = str(info.value)
    assert "\n" not in message
    assert "dnw list concepts" in message
    assert "sepia-0.6" in message  # closest ids are suggested
    with pytest.raises(DnwError, match="dnw list concepts"):
        get_concept("a zebra wearing a hat")

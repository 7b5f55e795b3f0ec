"""Image translation: sampled concepts at continuous values, ids and prompts outside the
catalogue, extrapolation hold-outs and whole-family hold-outs (sampling.py, parsing.py,
rules.py, task.py)."""

from __future__ import annotations

import hashlib
import itertools
from collections import Counter, defaultdict

import pytest
import torch

from denoised_weights.core.errors import DnwError
from denoised_weights.core.interfaces import Concept
from denoised_weights.pipeline.context import resolve_task
from denoised_weights.plugins.image_translation import concepts as cat
from denoised_weights.plugins.image_translation import parsing
from denoised_weights.plugins.image_translation.edits import HUE_NAMES, PRIMITIVES
from denoised_weights.plugins.image_translation.rules import RULES, classify
from denoised_weights.plugins.image_translation.sampling import sample_steps
from denoised_weights.plugins.image_translation.task import ImageTranslationTask

N_SAMPLES = 6000
#: the catalogue at commit 5bd09c1, before sampling and extrapolation: its 584 concepts and its
#: 73 held-out ones, as the task gives them (id, split, holdout, family, params, prompts)
N_BEFORE, HELD_BEFORE = 584, 73
HASH_BEFORE = "810a6b8204c807488ac6310ca0eaa9ae86354a7ca003ec2d56d510fe920915b3"
HELD_HASH_BEFORE = "b0cee37eb93072d2608ad561318e625b96cd1d6a7a8a215b96bcd9cdd88e810c"
#: identity values whose train gap sampling skips, as the train grids do
NEUTRAL = {
    "gamma.gamma": 1.0,
    "contrast.factor": 1.0,
    "brightness.delta": 0.0,
    "exposure.stops": 0.0,
    "hue_rotate.degrees": 0.0,
    "saturation.factor": 1.0,
    "temperature.shift": 0.0,
}
DECIMALS = {"local_contrast.clip_limit": 1, "hue_rotate.degrees": 0, "motion_blur.angle": 0}
WHOLE = {
    "posterize.bits",
    "cartoon.levels",
    "median.radius",
    "oil_paint.radius",
    "halftone.cell",
    "pixelate.block",
    "channel_swap.order",
    "false_colour.palette",
    "motion_blur.length",
}
HUES = {"tint.hue", "duotone.shadow_hue", "duotone.highlight_hue"}


def _hash(concepts: list[Concept]) -> str:
    text = "\n".join(
        f"{c.id}\t{c.split}\t{c.holdout}\t{c.family}\t{c.params}\t" + "|".join(c.prompts)
        for c in concepts
    )
    return hashlib.sha256(text.encode()).hexdigest()


def _grid(param: str) -> tuple[list[float], list[float]]:
    """Sorted train values and held-out (interpolation) values of ``primitive.key``."""
    name, key = param.split(".")
    train = sorted({lv[key] for lv in cat.GRIDS[name][0]})
    return train, sorted({lv[key] for lv in cat.GRIDS[name][1]} - set(train))


def _margins(param: str) -> list[tuple[float, float]]:
    """Half the gap to the neighbouring train values on each side of every held-out value."""
    train, held = _grid(param)
    out = []
    for v in held:
        below, above = max(t for t in train if t < v), min(t for t in train if t > v)
        out.append((v - (v - below) / 2, v + (above - v) / 2))
    return out


def _neutral_gap(param: str) -> tuple[float, float] | None:
    train, _ = _grid(param)
    n = NEUTRAL.get(param)
    return next(((a, b) for a, b in itertools.pairwise(train) if n is not None and a < n < b), None)


def _parts(c: Concept) -> tuple[str, ...]:
    return tuple(c.family.split("+"))


@pytest.fixture(scope="module")
def task() -> ImageTranslationTask:
    return ImageTranslationTask()


@pytest.fixture(scope="module")
def samples(task: ImageTranslationTask) -> list[Concept]:
    g = torch.Generator().manual_seed(0)
    return [task.sample_concept(g) for _ in range(N_SAMPLES)]


# -- the catalogue ---------------------------------------------------------------------------------
def test_catalogue_before_extrapolation_unchanged(task: ImageTranslationTask) -> None:
    everything = task.concepts()
    assert _hash(everything[:N_BEFORE]) == HASH_BEFORE
    assert _hash(task.concepts("held-out")[:HELD_BEFORE]) == HELD_HASH_BEFORE
    assert all(c.holdout == "extrapolation" for c in everything[N_BEFORE:])
    assert [c.id for c in task.concepts("train")] == [
        c.id for c in everything[:N_BEFORE] if c.split == "train"
    ]


def test_rules_reproduce_every_catalogue_split(task: ImageTranslationTask) -> None:
    for c in cat.catalogue():
        assert classify(c.steps) == (c.split, c.holdout), c.id
        assert parsing.parse(c.id) == c, c.id  # the id parser alone gives it back
        assert task.get_concept(c.id) == task.get_concept(c.prompts[1])
    for c in cat.catalogue()[::5]:  # the prompt parser alone, without the catalogue's index
        assert all(parsing.parse(p) == c for p in c.prompts), c.id


def test_extrapolation_concepts(task: ImageTranslationTask, samples: list[Concept]) -> None:
    extra = [c for c in task.concepts("held-out") if c.holdout == "extrapolation"]
    assert len(extra) >= 30 and len({c.family for c in extra}) >= 20
    reached = defaultdict(list)  # parameter -> every value a train or sampled concept uses
    for c in task.concepts("train") + samples:
        for key, value in c.params:
            reached[key].append(value)
    for c in extra:
        assert "+" not in c.family and c.split == "held-out", c.id
        beyond = []
        for key, value in c.params:
            lo, hi = PRIMITIVES[c.family].params[key.split(".")[1]]
            assert lo <= value <= hi, c.id
            train, _ = _grid(key)
            if value > train[-1]:
                beyond.append(all(v < value for v in reached[key]))
            elif value < train[0]:
                beyond.append(all(v > value for v in reached[key]))
        assert beyond and all(beyond), c.id  # beyond the range, and no train concept reaches it
        assert task.get_concept(c.id) == c and task.get_concept(c.prompts[2]) == c


# -- sampling --------------------------------------------------------------------------------------
def test_samples_stay_inside_the_train_split(
    task: ImageTranslationTask, samples: list[Concept]
) -> None:
    train_families = {_parts(c) for c in task.concepts("train")}
    for c in samples:
        assert c.split == "train" and c.holdout == "", c.id
        assert _parts(c) in train_families, c.id  # a train composition: never a held-out pair
        assert not any(
            frozenset(p) in cat.HELD_OUT_PAIRS for p in itertools.combinations(_parts(c), 2)
        )
        for key, value in c.params:
            train, _ = _grid(key)
            assert train[0] <= value <= train[-1], (c.id, key)
            assert not any(lo - 1e-9 <= value <= hi + 1e-9 for lo, hi in _margins(key)), (c.id, key)
            gap = _neutral_gap(key)
            assert not (gap and gap[0] < value < gap[1]), (c.id, key)
            assert value == round(value, DECIMALS.get(key, 2)), (c.id, key)
            if key in WHOLE:
                assert value == int(value) and (key != "motion_blur.length" or value % 2), c.id
            if key in HUES:
                assert value in HUE_NAMES, c.id
        if c.family == "duotone":
            assert c.params[0][1] != c.params[1][1], c.id


def test_samples_cover_every_primitive_and_value(samples: list[Concept]) -> None:
    singles = Counter(c.family for c in samples if "+" not in c.family)
    assert set(singles) == set(PRIMITIVES)
    assert Counter(len(_parts(c)) for c in samples).keys() == {1, 2, 3}
    values = defaultdict(set)
    for c in samples:
        for key, value in c.params:
            values[key].add(value)
    assert set(values) == {f"{n}.{k}" for n, p in PRIMITIVES.items() for k in p.params}
    for key, seen in values.items():
        train, _ = _grid(key)
        if key in WHOLE or key in HUES:  # every allowed lattice value, and nothing else
            rule = RULES[tuple(key.split("."))]
            assert seen == set(rule.choices), key
            assert all(not any(lo <= v <= hi for lo, hi in _margins(key)) for v in seen)
        else:  # continuous: many values off the grid
            assert len(seen - set(train)) >= 12, (key, sorted(seen))
    assert values["posterize.bits"] == {1, 2, 4, 5, 6}  # 3 held out
    assert values["motion_blur.length"] == {5, 9, 11, 13}  # 7 held out, lengths are odd


def test_samples_read_back(task: ImageTranslationTask, samples: list[Concept]) -> None:
    assert len({c.id for c in samples}) > 0.8 * len(samples)  # singles of few values repeat
    for c in samples:
        assert task.get_concept(c.id) == c, c.id
    for c in samples[::20]:  # prompts too: every paraphrase, case and spacing ignored
        assert len(set(c.prompts)) == 3
        for prompt in c.prompts:
            assert task.get_concept(prompt) == c, prompt
        assert task.get_concept(f"  {c.prompts[0].upper()} ") == c


def test_sampling_is_seeded(task: ImageTranslationTask) -> None:
    def draw(seed: int) -> list[str]:
        g = torch.Generator().manual_seed(seed)
        return [task.sample_concept(g).id for _ in range(20)]

    assert draw(3) == draw(3) and draw(3) != draw(4)


# -- ids outside the catalogue ---------------------------------------------------------------------
def test_get_concept_reads_ids_by_the_catalogue_rules(task: ImageTranslationTask) -> None:
    def kind(text: str) -> tuple[str, str]:
        c = task.get_concept(text)
        return c.split, c.holdout

    assert kind("gamma-1.95") == ("train", "")
    assert kind("gamma-2.1") == ("held-out", "interpolation")  # inside 2.2's margin [2, 2.35]
    assert kind("gamma-2.6") == ("held-out", "extrapolation")
    assert kind("hue-rotate-m40") == ("held-out", "interpolation")
    assert kind("tint-90-0.58") == ("held-out", "interpolation")  # a held-out hue
    assert kind("tint-150-0.58") == ("train", "")
    assert kind("motion-blur-11-30") == ("train", "")
    pair = next(iter(sorted(tuple(sorted(p)) for p in cat.HELD_OUT_PAIRS)))
    g = torch.Generator().manual_seed(1)
    held_pair = cat.make_concept(sample_steps(pair, g), "train").id  # split is decided anew
    assert kind(held_pair) == ("held-out", "composition")
    swapped = task.get_concept("blur-1.9+sepia-0.62")  # steps are put into group order
    assert swapped.id == "sepia-0.62+blur-1.9" and swapped.family == "sepia+blur"
    assert swapped.params == (("sepia.strength", 0.62), ("blur.sigma", 1.9))
    assert task.get_concept("gamma-2.20") == task.get_concept("gamma-2.2")  # the catalogue's
    assert parsing.resolve("sepia-0.65").steps == (("sepia", {"strength": 0.65}),)
    assert parsing.resolve("gamma-2.2") is cat.get_concept("gamma-2.2")
    with pytest.raises(DnwError, match=r"closest: sepia-0\.6"):
        cat.get_concept("sepia-0.65")  # the catalogue's own lookup stays the catalogue's


def test_catalogue_pairs_make_sampled_concepts(samples: list[Concept]) -> None:
    from denoised_weights.plugins.image_translation.pairs import CataloguePairs

    c = samples[0]
    a, b = CataloguePairs(c.id, size=16).pairs(2, seed=0)
    assert a.shape == b.shape == (2, 3, 16, 16) and not torch.equal(a, b)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("sepia-1.5", "outside its valid range"),
        ("pixelate-5.5", "whole number"),
        ("motion-blur-6-0", "must be odd"),
        ("gamma-1.5+contrast-1.2", "different group"),
        ("threshold-0.5+hue-rotate-60", "never composed"),
        ("sepia-0.6+sepia-0.7", "twice"),
        ("zebra-3", "closest"),
        ("sepia-0.6.5", "closest: sepia"),
        ("tint-120", "closest"),
    ],
)
def test_get_concept_rejects_bad_ids(task: ImageTranslationTask, text: str, why: str) -> None:
    with pytest.raises(DnwError, match=why) as info:
        task.get_concept(text)
    assert "\n" not in str(info.value) and "dnw list concepts" in str(info.value)


# -- leaving whole families out --------------------------------------------------------------------
def test_exclude_families(task: ImageTranslationTask, samples: list[Concept]) -> None:
    out = {"sepia", "vignette"}
    held = ImageTranslationTask(exclude_families="Vignette, sepia")
    assert held.options == {"exclude_families": "sepia,vignette"}
    assert "exclude_families" not in task.options
    again = resolve_task("image-translation", **held.options)  # as a worker process makes it
    assert again.concepts() == held.concepts()
    for plain, c in zip(task.concepts(), held.concepts(), strict=True):
        if out & set(_parts(plain)):
            assert (c.split, c.holdout) == ("held-out", "family"), c.id
        else:
            assert c == plain
    assert not any(out & set(_parts(c)) for c in held.select_concepts("train"))
    assert any(out & set(_parts(c)) for c in task.select_concepts("train"))
    g = torch.Generator().manual_seed(0)
    for _ in range(1500):
        c = held.sample_concept(g)
        assert c.split == "train" and not out & set(_parts(c)), c.id
    sampled = next(c for c in samples if "sepia" in _parts(c))
    assert (held.get_concept(sampled.id).split, held.get_concept(sampled.id).holdout) == (
        "held-out",
        "family",
    )
    with pytest.raises(DnwError, match="closest: vignette"):
        ImageTranslationTask(exclude_families="vignete")

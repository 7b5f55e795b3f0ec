"""The digits plugin: catalogue split rules, data, sampling, the classifier and its metrics."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from collections import Counter, defaultdict

import pytest
import torch
import torch.nn.functional as F

from denoised_weights.core.errors import DnwError, UnknownNameError
from denoised_weights.core.interfaces import Concept, TaskPreset
from denoised_weights.core.plugins import Registries, get_plugin_manager
from denoised_weights.plugins import testing
from denoised_weights.plugins.digits import concepts as catalogue
from denoised_weights.plugins.digits.source import sample_sources, split_indices
from denoised_weights.plugins.digits.transforms import apply_steps, fmt, noise_generator

#: words every prompt of a family uses (one of them)
KEYWORDS = {
    "scale": ("scale", "zoom", "enlarged", "shrunk"),
    "rotate": ("rotat", "turn"),
    "shear": ("shear", "slant"),
    "shift-x": ("shift", "offset", "move"),
    "shift-y": ("shift", "offset", "move"),
    "thicken": ("thicken", "bolder", "dilated"),
    "thin": ("thin",),
    "blur": ("blur",),
    "invert": ("invert", "inversion"),
    "noise": ("noise",),
}


@pytest.fixture(scope="module")
def regs() -> Registries:
    return Registries(get_plugin_manager())  # digits is a built-in plugin


@pytest.fixture(scope="module")
def task(regs):
    return regs.tasks.create("digits")


@pytest.fixture(scope="module")
def arch(regs):
    return regs.architectures.create("digit-cnn", "small")


def digits_arch(**options):
    from denoised_weights.plugins.digits.network import DigitCNN

    return DigitCNN(**options)


def _values(concept) -> dict[str, float]:
    return {key.split(".")[0]: value for key, value in concept.params}


def _families(concept) -> tuple[str, ...]:
    return tuple(concept.family.split("+"))


@pytest.fixture(scope="module")
def train_values(task) -> dict[str, list[float]]:
    out = defaultdict(set)
    for c in task.concepts("train"):
        for name, value in _values(c).items():
            out[name].add(value)
    return {k: sorted(v) for k, v in out.items()}


# -- registration ------------------------------------------------------------------------------
def test_registers_lazily(regs):
    assert "digits" in regs.tasks
    assert set(regs.architectures.get("digit-cnn").presets) == {"tiny", "small"}
    assert {"accuracy", "cross-entropy"} <= set(regs.metrics.list())
    code = "import sys, denoised_weights.plugins.digits; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", "importing the plugin imported torch"


def test_task_attributes_and_presets(task, regs):
    assert (task.target_metric, task.higher_is_better) == ("accuracy", True)
    assert task.metrics == ("accuracy", "cross-entropy")
    assert (task.input_keys, task.target_key) == (("x",), "y")
    assert task.default_architecture == "digit-cnn" and task.default_preset in task.presets
    allowed = {"checkpoints", "max_steps", "eval_every", "interval", "n_train", "n_eval"}
    allowed |= {"batch_size", "lr", "concepts"}
    for name in ("tiny", "small"):
        preset = task.presets[name]
        assert isinstance(preset, TaskPreset)
        assert preset.arch in regs.architectures.get("digit-cnn").presets
        assert set(preset.base) <= {"steps", "pairs_per_concept", "batch_size"}
        assert set(preset.collect) <= allowed
        assert set(preset.fit) <= {"max_steps", "batch_size", "val_every", "prediction_type"}


# -- the catalogue -----------------------------------------------------------------------------
def test_catalogue_sizes_ids_and_prompts(task):
    train, held = task.concepts("train"), task.concepts("held-out")
    assert 150 <= len(train) <= 300 and 40 <= len(held) <= 80
    kinds = Counter(c.holdout for c in held)
    assert set(kinds) == {"interpolation", "extrapolation", "composition"}
    assert min(kinds.values()) >= 8
    everything = task.concepts()
    assert len({c.id for c in everything}) == len(everything)
    prompts = [p for c in everything for p in c.prompts]
    assert len(set(prompts)) == len(prompts)
    for c in everything:
        assert len(c.prompts) >= 3 and c.family and c.params
        assert c.id == "+".join(f"{n}-{fmt(v).replace('-', 'm')}" for n, v in _values(c).items())
        for prompt in c.prompts:
            for name, value in _values(c).items():
                assert fmt(abs(value)) in prompt, (c.id, prompt)
                assert any(k in prompt.lower() for k in KEYWORDS[name]), (c.id, prompt)
    assert [c.id for c in catalogue._build()] == [c.id for c in everything]  # deterministic


def test_held_out_values_are_between_or_beyond_train_values(task, train_values):
    for c in task.concepts("held-out"):
        values = _values(c)
        novel = {n: v for n, v in values.items() if v not in train_values[n]}
        if c.holdout == "composition":
            assert not novel, f"{c.id}: a held-out composition uses train values only"
            continue
        assert len(novel) == 1, f"{c.id}: exactly one value is new"
        ((name, value),) = novel.items()
        grid = train_values[name]
        inside = grid[0] < value < grid[-1]
        assert inside == (c.holdout == "interpolation"), (c.id, c.holdout, grid)


def test_held_out_compositions_are_never_trained_together(task):
    trained_pairs = {
        frozenset(p)
        for c in task.concepts("train")
        for p in itertools.combinations(_families(c), 2)
    }
    for c in task.concepts("held-out"):
        pairs = {frozenset(p) for p in itertools.combinations(_families(c), 2)}
        if c.holdout == "composition":
            assert pairs - trained_pairs, f"{c.id}: every pair of it is trained"
        else:
            assert pairs <= trained_pairs, f"{c.id}: only its value should be new"


# -- data --------------------------------------------------------------------------------------
def test_eval_and_train_use_disjoint_source_images():
    train, held = set(split_indices("train").tolist()), set(split_indices("eval").tolist())
    assert not train & held and len(train | held) == 1797
    assert 0.15 < len(held) / 1797 < 0.25
    for split, pool in (("train", train), ("eval", held)):
        _, _, idx = sample_sources(split, 300, seed=3)
        assert set(idx.tolist()) <= pool and len(set(idx.tolist())) == 300
    with pytest.raises(DnwError):
        split_indices("test")


def test_make_data_is_seeded_and_uses_its_split(task, arch):
    concept = task.get_concept("shear-0.2+noise-0.1")
    a = task.make_data(concept, arch=arch, split="eval", n=24, seed=5)
    b = task.make_data(concept, arch=arch, split="eval", n=24, seed=5)
    assert a["x"].shape == (24, 1, 16, 16) and a["x"].dtype == torch.float32
    assert a["y"].dtype == torch.int64 and a["x"].min() >= 0 and a["x"].max() <= 1
    assert all(torch.equal(a[k], b[k]) for k in ("x", "y"))
    assert not torch.equal(
        a["x"], task.make_data(concept, arch=arch, split="eval", n=24, seed=6)["x"]
    )
    x, y, _ = sample_sources("eval", 24, seed=5)
    assert torch.equal(a["y"], y)
    expected = apply_steps(
        x, catalogue.steps_of(concept), noise_generator("digits-noise", "eval", 5)
    )
    assert torch.equal(a["x"], expected)
    with pytest.raises(DnwError, match="image_size"):
        task.make_data(concept, arch=digits_arch(image_size=32), split="train", n=2, seed=0)


def test_every_family_visibly_changes_the_input(task, arch):
    clean, _, _ = sample_sources("train", 32, seed=0)
    for c in task.concepts("train"):
        if "+" in c.family:
            continue
        x = task.make_data(c, arch=arch, split="train", n=32, seed=0)["x"]
        change = (x - clean).abs().mean().item()
        assert change > 0.01, f"{c.id} barely changes the digits ({change:.4f})"
    small = task.make_data(task.get_concept("rotate-10"), arch=arch, split="train", n=32, seed=0)
    large = task.make_data(task.get_concept("rotate-60"), arch=arch, split="train", n=32, seed=0)
    assert (large["x"] - clean).abs().mean() > (small["x"] - clean).abs().mean()


def test_sample_concept_stays_out_of_held_out_intervals(task, train_values):
    trained_combos = {_families(c) for c in task.concepts("train")}
    blocked = defaultdict(list)  # family -> (held-out value, margin)
    for c in task.concepts("held-out"):
        if c.holdout == "interpolation" and "+" not in c.family:
            (name, value), grid = next(iter(_values(c).items())), train_values[c.family]
            gap = min(
                value - max(g for g in grid if g < value), min(g for g in grid if g > value) - value
            )
            blocked[name].append((value, gap / 2))
    g = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(1500):
        c = task.sample_concept(g)
        assert c.split == "train" and _families(c) in trained_combos
        for name, value in _values(c).items():
            assert train_values[name][0] <= value <= train_values[name][-1], c.id
            assert all(abs(value - v) > m - 1e-9 for v, m in blocked[name]), c.id
        assert task.get_concept(c.id) == c  # a sampled id reads back as the same concept
        seen.add(c.id)
    assert len(seen) > 1400
    again = torch.Generator().manual_seed(0)
    assert task.sample_concept(again) == task.sample_concept(torch.Generator().manual_seed(0))


def test_get_concept_reads_ids_outside_the_catalogue(task):
    assert task.get_concept("rotate-33").split == "held-out"  # near the held-out 30
    assert task.get_concept("rotate-33").holdout == "interpolation"
    assert task.get_concept("rotate-95").holdout == "extrapolation"
    assert task.get_concept("blur-1.1+shift-x-m2").split == "train"
    assert task.get_concept(task.concepts()[5].prompts[1]) == task.concepts()[5]
    with pytest.raises(UnknownNameError):
        task.get_concept("spin-30")
    with pytest.raises(DnwError, match="twice"):
        task.get_concept("rotate-20+rotate-30")
    with pytest.raises(DnwError, match="not a digits transformation"):
        task.make_data(
            Concept("sepia-0.6", ("sepia",), params=(("sepia.strength", 0.6),)), n=2, seed=0
        )


# -- the architecture --------------------------------------------------------------------------
@pytest.mark.parametrize("preset", ["tiny", "small"])
def test_architecture_conformance(regs, preset, tmp_path):
    arch = regs.architectures.create("digit-cnn", preset)
    testing.check_builds_and_forward(arch)
    testing.check_lora_targets(arch)
    testing.check_adapter_round_trip(arch, tmp_path)
    testing.check_blocker_round_trip(arch)
    testing.check_fingerprint(arch)
    assert json.loads(json.dumps(arch.config)) == arch.config
    assert type(arch)(**arch.config).config == arch.config
    assert "rank" not in arch.network_config
    names = [
        n
        for n, m in arch.build().named_modules()
        if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)
    ]
    assert arch.lora_spec().target_modules == names


def test_architecture_rejects_bad_options():
    for bad in (
        {"widths": []},
        {"rank": 0},
        {"norm": "batch"},
        {"image_size": 0},
        {"widths": [4, -1]},
    ):
        with pytest.raises(DnwError, match="digit-cnn"):
            digits_arch(**bad)


def test_init_training_picks_the_learning_rate(arch):
    from denoised_weights.core.components import build_lora_model

    full = arch.init_training(arch.build(), lr=None, unknown_option=1)
    assert full.param_groups[0]["lr"] == arch.learning_rates["full"]
    lora = arch.init_training(build_lora_model(arch))
    assert lora.param_groups[0]["lr"] == arch.learning_rates["lora"]
    assert arch.init_training(arch.build(), lr=0.5).param_groups[0]["lr"] == 0.5


def test_training_learns_a_train_concept(task, arch, regs):
    concept = task.get_concept("shift-x-1")
    train = task.make_data(concept, arch=arch, split="train", n=512, seed=0)
    held = task.make_data(concept, arch=arch, split="eval", n=200, seed=1)
    model = arch.build(seed=0)
    state = arch.init_training(model)
    metrics = {"accuracy": regs.metrics.create("accuracy")}
    before = task.evaluate(arch, model, held, metrics)["accuracy"]
    for step in range(100):
        losses = arch.training_step(
            model, state, task.batch(train, batch_size=32, seed=0, step=step)
        )
    assert set(losses) == {"loss", "accuracy"} and all(
        isinstance(v, float) for v in losses.values()
    )
    after = task.evaluate(arch, model, held, metrics)["accuracy"]
    assert after > 0.4 and after > before + 0.25, (before, after)
    quick = arch.evaluate(model, held)
    assert set(quick) == {"loss", "accuracy"} and abs(quick["accuracy"] - after) < 1e-6


# -- metrics and preview -----------------------------------------------------------------------
def test_metrics(regs):
    accuracy, ce = regs.metrics.create("accuracy"), regs.metrics.create("cross-entropy")
    assert (accuracy.name, accuracy.higher_is_better) == ("accuracy", True)
    assert (ce.name, ce.higher_is_better) == ("cross-entropy", False)
    logits = torch.tensor([[3.0, 0, 0], [0, 3.0, 0], [0, 0, 3.0], [3.0, 0, 0]])
    logits = F.pad(logits, (0, 7), value=-5.0)
    labels = torch.tensor([0, 1, 2, 1])
    for metric in (accuracy, ce):
        metric.reset()
        metric.update(logits[:2], labels[:2])
        metric.update(logits[2:], labels[2:])
    assert accuracy.compute() == pytest.approx(0.75)
    assert ce.compute() == pytest.approx(F.cross_entropy(logits, labels).item(), rel=1e-5)
    for metric in (accuracy, ce):
        metric.reset()
        with pytest.raises(DnwError):
            metric.compute()
        with pytest.raises(ValueError):
            metric.update(logits, labels[:3])


def test_preview_writes_a_png(task, arch, tmp_path):
    from PIL import Image

    data = task.make_data(task.get_concept("rotate-20"), arch=arch, split="eval", n=8, seed=0)
    logits = F.one_hot(data["y"], 10).float()
    path = task.preview(
        data, {"base": logits, "generated": logits.roll(1, 0)}, tmp_path / "g.png", "rotate"
    )
    with Image.open(path) as image:
        assert image.size[0] == 8 * 64 and image.mode == "RGB"


def test_exclude_families_holds_whole_families_out_of_everything_trained(regs):
    from denoised_weights.core.components import create_task

    families = {"rotate", "shear", "blur", "invert"}
    task = create_task("digits", registries=regs, exclude_families="blur, Invert,shear,rotate")
    assert task.options == {"exclude_families": "rotate,shear,blur,invert"}  # catalogue order
    train, held = task.concepts("train"), task.concepts("held-out")
    assert train and all(not families & set(_families(c)) for c in train)
    family = [c for c in held if c.holdout == "family"]
    assert family and all(families & set(_families(c)) for c in family)
    assert len(train) + len(held) == len(create_task("digits", registries=regs).concepts())
    g = torch.Generator().manual_seed(0)
    assert all(not families & set(_families(task.sample_concept(g))) for _ in range(200))
    assert task.get_concept("rotate-23.7").holdout == "family"
    assert task.get_concept("scale-0.8").split == "train"
    with pytest.raises(DnwError, match="closest: rotate"):
        create_task("digits", registries=regs, exclude_families="rotat")


def test_the_digits_benchmark_targets_what_the_standard_fine_tune_reaches(tmp_path):
    """Scratch ends below the digits base's own accuracy, so the target is the standard LoRA
    fine-tune's final value: every init's steps to it are comparable (standard reaches it)."""
    from click.testing import CliRunner

    from denoised_weights.cli import create_cli

    cli = create_cli(get_plugin_manager())
    args = ["benchmark", "--task", "digits", "--preset", "tiny", "--out", str(tmp_path / "b")]
    result = CliRunner().invoke(cli, [*args, "--inits", "scratch,standard,mean"])
    assert result.exit_code == 0, result.output
    res = json.loads((tmp_path / "b" / "results.json").read_text())
    assert res["config"]["target_init"] == "standard"
    comparisons = list((tmp_path / "b" / "runs").glob("*/seed*/comparison.json"))
    assert comparisons
    for path in comparisons:
        comp = json.loads(path.read_text())
        assert comp["target"] == comp["inits"]["standard"]["final"]
        assert comp["inits"]["standard"]["steps_to_target"] is not None
    assert "Target: standard's final" in (tmp_path / "b" / "report.md").read_text()
    refused = CliRunner().invoke(cli, [*args[:-1], str(tmp_path / "c"), "--inits", "scratch,mean"])
    assert refused.exit_code != 0 and "must include scratch and standard" in refused.output


def test_a_dataset_keeps_the_task_options_it_was_collected_with(tmp_path):
    """A leave-family-out dataset is never topped up with the excluded families."""
    import denoised_weights as dnw

    dnw.train_base(tmp_path / "base", task="digits", preset="tiny", steps=2, eval_every=2)
    held_out = {"task": "digits", "preset": "tiny", "checkpoints": 1, "max_steps": 2}
    short = dict(eval_every=2, interval=1, n_train=8, n_eval=4, n_concepts=1)
    opts = {"exclude_families": "rotate"}
    dnw.collect(tmp_path / "base", tmp_path / "ds", task_options=opts, **held_out, **short)
    with pytest.raises(DnwError, match=r"other task options \({'exclude_families': 'rotate'}\)"):
        dnw.collect(tmp_path / "base", tmp_path / "ds", **held_out, **short)
    again = dnw.collect(tmp_path / "base", tmp_path / "ds", task_options=opts, **held_out, **short)
    assert len(again.concepts) == 1

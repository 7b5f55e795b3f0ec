"""Conformance kits for plugins: architectures, and tasks with the whole pipeline.

Use them from pytest by subclassing a mixin::

    from denoised_weights.plugins.testing import ArchitectureConformance, TaskConformance

    class TestMyNet(ArchitectureConformance):
        architecture = "my-net"
        preset = "tiny"

    class TestMyTask(TaskConformance):
        task = "my-task"          # its default architecture, preset "tiny"

or call :func:`check_architecture`, :func:`check_task_catalogue` and
:func:`check_task_pipeline` directly. Every check goes through the public API; a failure says
which promise was broken. The task kit runs a tiny base -> collect -> fit -> generate ->
finetune, so a plugin author knows the whole flow works before publishing.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch

from denoised_weights.core.components import (
    bind_blocker,
    build_lora_model,
    create_architecture,
    create_blocker,
    lora_fingerprint,
)
from denoised_weights.core.interfaces import TargetArchitecture, Task, data_size
from denoised_weights.core.lora import load_adapter, load_lora_state, lora_state, save_adapter


def randomized_state(
    arch: TargetArchitecture, seed: int = 0, scale: float = 0.05
) -> dict[str, torch.Tensor]:
    """A LoRA state of ``arch`` with every value random (B non-zero), for round trips."""
    g = torch.Generator().manual_seed(seed)
    template = lora_state(build_lora_model(arch))
    state = {}
    for key, value in template.items():
        if not value.is_floating_point():  # e.g. batch-norm's num_batches_tracked
            state[key] = value.clone()
            continue
        random = torch.randn(value.shape, generator=g) * scale
        if key.endswith("running_var"):
            random = random.abs() + 1.0
        state[key] = random.to(value.dtype)
    return state


def check_builds_and_forward(arch: TargetArchitecture) -> None:
    model = arch.build(seed=0).eval()
    batch = arch.dummy_batch(2)
    with torch.no_grad():
        out = arch.forward(model, batch)
    assert torch.isfinite(out).all(), "forward on the dummy batch gave non-finite values"
    again = arch.build(seed=0)
    for (n1, p1), (_, p2) in zip(
        model.state_dict().items(), again.state_dict().items(), strict=True
    ):
        assert torch.equal(p1, p2), f"build(seed=0) is not deterministic ({n1})"


def check_lora_targets(arch: TargetArchitecture) -> None:
    from peft.tuners.lora import LoraLayer

    spec = arch.lora_spec()
    model = build_lora_model(arch)
    lora_modules = {name for name, m in model.named_modules() if isinstance(m, LoraLayer)}
    assert lora_modules == set(spec.target_modules), (
        f"LoRA landed on {sorted(lora_modules ^ set(spec.target_modules))[:5]} unexpectedly"
    )
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable, "no trainable parameters after LoRA injection"
    bad = sorted(n for n in trainable if ".lora_" not in n and ".modules_to_save." not in n)
    assert not bad, f"non-LoRA parameters are trainable: {bad[:5]}"
    if not spec.train_norms:
        assert not any(".modules_to_save." in n for n in trainable), (
            "norms train although train_norms=False"
        )


def check_training_updates_only_lora(arch: TargetArchitecture) -> None:
    model = build_lora_model(arch)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    buffers = {n: b.detach().clone() for n, b in model.named_buffers()}
    state = arch.init_training(model, seed=0)
    losses = arch.training_step(model, state, arch.dummy_batch(2))
    assert losses and all(isinstance(v, float) for v in losses.values()), (
        "training_step must return floats"
    )
    changed = {n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])}
    adapter = {n for n in before if ".lora_" in n or ".modules_to_save." in n}
    assert changed, "a training step changed no parameter"
    assert changed <= adapter, f"frozen parameters changed: {sorted(changed - adapter)[:5]}"
    moved = [n for n, b in model.named_buffers() if n in buffers and not torch.equal(b, buffers[n])]
    assert not moved, (
        f"buffers (e.g. batch-norm statistics) changed, an adapter cannot store them: {moved[:3]}"
    )
    metrics = arch.evaluate(model, arch.dummy_batch(2, seed=1))
    assert metrics and all(isinstance(v, float) for v in metrics.values()), (
        "evaluate must report its figures as floats"
    )


def check_adapter_round_trip(arch: TargetArchitecture, directory: str | Path | None = None) -> None:
    """save_adapter → load_adapter and → peft's own PeftModel.from_pretrained give the same
    network."""
    from peft import PeftModel

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(directory or tmp) / "adapter"
        state = randomized_state(arch)
        model = build_lora_model(arch)
        load_lora_state(model, state)
        blocker = bind_blocker(arch, create_blocker("layerwise"))
        fp = lora_fingerprint(arch, blocker)
        save_adapter(path, state, arch.lora_spec(), fingerprint=fp)
        loaded, info = load_adapter(path, expected_fingerprint=fp)
        assert info["fingerprint"] == fp
        assert set(loaded) == set(state) and all(torch.equal(loaded[k], state[k]) for k in state)
        batch = arch.dummy_batch(2)
        with torch.no_grad():
            ours = arch.forward(model.eval(), batch)
            peft_model = PeftModel.from_pretrained(arch.build(seed=0), str(path)).eval()
            theirs = arch.forward(peft_model, batch)
        assert torch.allclose(ours, theirs, atol=1e-5), (
            "peft loads the adapter into a different network"
        )


def check_blocker_round_trip(arch: TargetArchitecture, block_size: int | None = None) -> None:
    opts = {"block_size": block_size} if block_size else {}
    blocker = bind_blocker(arch, create_blocker("layerwise", **opts))
    states = [randomized_state(arch, seed=s) for s in range(3)]
    blocker.fit(states)
    shared = arch.lora_spec().shared_a  # shared down-projections are left out of the blocks
    expected = {k for k in states[0] if not (shared and ".lora_A." in k)}
    for state in states:
        blocks = blocker.to_blocks(state)
        assert blocks.shape == (blocker.n_blocks, blocker.block_size)
        back = blocker.from_blocks(blocks)
        assert set(back) == expected
        for key in expected:
            assert torch.equal(back[key], state[key]), (
                f"blocker round trip is not bit-exact for {key}"
            )
    total = sum(states[0][k].numel() for k in expected)
    assert blocker.n_blocks == -(-total // blocker.block_size)


def check_fingerprint(arch: TargetArchitecture) -> None:
    blocker = bind_blocker(arch, create_blocker("layerwise"))
    fp = lora_fingerprint(arch, blocker)
    assert fp == lora_fingerprint(arch, bind_blocker(arch, create_blocker("layerwise")))
    other = bind_blocker(arch, create_blocker("layerwise", block_size=blocker.block_size + 1))
    assert lora_fingerprint(arch, other) != fp, "the fingerprint ignores the block layout"


CHECKS = (
    check_builds_and_forward,
    check_lora_targets,
    check_training_updates_only_lora,
    check_adapter_round_trip,
    check_blocker_round_trip,
    check_fingerprint,
)


def check_architecture(arch: TargetArchitecture) -> None:
    """Run every conformance check on ``arch``; raises AssertionError on the first failure."""
    for check in CHECKS:
        check(arch)


class ArchitectureConformance:
    """pytest mixin: set ``architecture`` (registered name) and ``preset``; override ``make``."""

    architecture: str = ""
    preset: str | None = None
    options: dict[str, Any] = {}  # noqa: RUF012 - read-only class default

    def make(self) -> TargetArchitecture:
        return create_architecture(self.architecture, self.preset, **self.options)

    def test_builds_and_forward(self) -> None:
        check_builds_and_forward(self.make())

    def test_lora_targets(self) -> None:
        check_lora_targets(self.make())

    def test_training_updates_only_lora(self) -> None:
        check_training_updates_only_lora(self.make())

    def test_adapter_round_trip(self, tmp_path: Path) -> None:
        check_adapter_round_trip(self.make(), tmp_path)

    def test_blocker_round_trip(self) -> None:
        check_blocker_round_trip(self.make())

    def test_fingerprint(self) -> None:
        check_fingerprint(self.make())


# -- tasks: the whole pipeline -------------------------------------------------------------------
def check_task_catalogue(task: Task, arch: TargetArchitecture) -> None:
    """Concepts, splits, seeded data, batches and evaluation behave as the pipeline needs."""
    train, held = task.concepts("train"), task.concepts("held-out")
    assert train, "the task has no training concepts"
    assert held, "the task has no held-out concepts (nothing to measure generalisation on)"
    ids = [c.id for c in task.concepts()]
    assert len(ids) == len(set(ids)), "concept ids are not unique"
    assert all(c.prompts and all(p.strip() for p in c.prompts) for c in task.concepts()), (
        "a concept without a prompt"
    )
    for concept in (train[0], held[0]):
        assert task.get_concept(concept.id) == concept, (
            "get_concept does not return the concept by id"
        )
        assert task.get_concept(concept.prompt).id == concept.id, (
            "get_concept does not find a prompt"
        )
        one = task.make_data(concept, arch=arch, split="train", n=6, seed=3)
        again = task.make_data(concept, arch=arch, split="train", n=6, seed=3)
        assert data_size(one) == 6 and set(one) >= {*task.input_keys, task.target_key}, (
            "make_data's keys or size"
        )
        assert all(torch.equal(one[k], again[k]) for k in one), "make_data is not deterministic"
        held_data = task.make_data(concept, arch=arch, split="eval", n=4, seed=3)
        assert data_size(held_data) == 4
        b1 = task.batch(one, batch_size=4, seed=1, step=7)
        b2 = task.batch(one, batch_size=4, seed=1, step=7)
        assert all(torch.equal(b1[k], b2[k]) for k in b1), "batches are not fixed by (seed, step)"
    metric = task.target_metric
    assert metric in task.metrics, "the target metric is not among the task's metrics"
    from denoised_weights.pipeline.context import build_metrics

    values = task.evaluate(arch, arch.build(0), held_data, build_metrics([metric]))
    assert isinstance(values.get(metric), float), f"evaluate gave no float {metric!r}"


def check_task_pipeline(
    task: Task, arch: TargetArchitecture, workdir: str | Path
) -> dict[str, Any]:
    """A tiny base -> collect -> fit -> generate -> finetune for ``task`` and ``arch``; returns
    the fine-tuning curve from the generated init on a held-out concept."""
    from denoised_weights.core.components import lora_fingerprint
    from denoised_weights.core.dataset import WeightDataset
    from denoised_weights.generators.diffusion import DiffusionGenerator
    from denoised_weights.pipeline.base import BaseOptions, train_base
    from denoised_weights.pipeline.collect import CollectOptions, collect
    from denoised_weights.pipeline.finetune import FinetuneOptions, finetune_concept
    from denoised_weights.pipeline.fit import FitConfig, fit

    work = Path(workdir)
    concepts = [c.id for c in task.select_concepts("train", n=3)]
    base = train_base(
        task,
        arch,
        work / "base",
        concepts=concepts,
        options=BaseOptions(steps=4, pairs_per_concept=4, eval_every=2, batch_size=4),
    )
    ds = collect(
        task,
        arch,
        base,
        work / "dataset",
        concept_ids=concepts,
        opts=CollectOptions(
            checkpoints=2,
            max_steps=4,
            min_steps=1,
            eval_every=2,
            interval=2,
            n_train=8,
            n_eval=4,
            batch_size=4,
        ),
    )
    assert len(ds.concepts) == len(concepts) and ds.verify() == [], (
        "collection did not store every concept"
    )
    assert WeightDataset(work / "dataset").fingerprint == lora_fingerprint(arch)
    size = 32 if ds.config["lora_params"] < 4096 else 64
    fit(
        work / "dataset",
        work / "generator",
        FitConfig(
            max_steps=4,
            val_every=2,
            batch_size=16,
            block_size=size,
            preset="tiny",
            prediction_type="sample",
        ),
    )
    generator = DiffusionGenerator(work / "generator")
    generator.check_fits(arch)
    held = task.concepts("held-out")[0]
    state = generator.generate(held.prompt)
    assert all(torch.isfinite(v).all() for v in state.values()), "the generated LoRA is not finite"
    curve = finetune_concept(
        task,
        arch,
        work / "finetune",
        held.id,
        n_train=8,
        n_eval=4,
        init="generated",
        base=base,
        initialiser=generator,
        options=FinetuneOptions(max_steps=2, eval_every=1, batch_size=4),
        fingerprint=lora_fingerprint(arch),
    )
    assert [p["step"] for p in curve["points"]] == [0, 1, 2], "the fine-tuning curve is incomplete"
    assert (
        curve["metric"] == task.target_metric and curve["higher_is_better"] == task.higher_is_better
    )
    assert curve["points"][0][task.target_metric] is not None, "no target metric at step 0"
    return curve


class TaskConformance:
    """pytest mixin that certifies a task + architecture for the whole pipeline: set ``task``
    (registered name), and optionally ``architecture`` (default: the task's), ``preset``
    (default ``"tiny"``) and ``task_options``."""

    task: str = ""
    architecture: str | None = None
    preset: str | None = "tiny"
    task_options: dict[str, Any] = {}  # noqa: RUF012 - read-only class default

    def make(self) -> tuple[Task, TargetArchitecture]:
        from denoised_weights.core.components import create_task

        task = create_task(self.task, **self.task_options)
        return task, create_architecture(
            self.architecture or task.default_architecture, self.preset
        )

    def test_catalogue_data_and_evaluation(self) -> None:
        check_task_catalogue(*self.make())

    def test_architecture_conformance(self) -> None:
        check_architecture(self.make()[1])

    def test_pipeline_end_to_end(self, tmp_path: Path) -> None:
        check_task_pipeline(*self.make(), tmp_path)

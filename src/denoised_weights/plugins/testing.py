"""Conformance kit for architecture plugins.

Use it from pytest by subclassing the mixin::

    from denoised_weights.plugins.testing import ArchitectureConformance

    class TestMyNet(ArchitectureConformance):
        architecture = "my-net"
        preset = "tiny"

or call :func:`check_architecture` on an instance. Every check builds the network, injects
LoRA and asserts behaviour through the public API; a failure says which promise was broken.
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
from denoised_weights.core.interfaces import TargetArchitecture
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
    """save_adapter → load_adapter and → peft's own PeftModel.from_pretrained give the same network."""
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
    for state in states:
        blocks = blocker.to_blocks(state)
        assert blocks.shape == (blocker.n_blocks, blocker.block_size)
        back = blocker.from_blocks(blocks)
        assert set(back) == set(state)
        for key in state:
            assert torch.equal(back[key], state[key]), (
                f"blocker round trip is not bit-exact for {key}"
            )
    total = sum(v.numel() for v in states[0].values())
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

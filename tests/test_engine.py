"""The training engine and the merged LoRA layers behind the fast LoRA step."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from torch import nn

import denoised_weights as dnw
from denoised_weights.core.engine import (
    Callback,
    TrainableState,
    Trainer,
    TrainingDiverged,
    architecture_step,
)
from denoised_weights.core.fastlora import MergedConv2d, MergedLinear
from denoised_weights.core.interfaces import TargetArchitecture
from denoised_weights.core.lora import apply_lora, lora_state


def _random_b(model: nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)


class Pads(nn.Module):
    """Every padding and stride the fast path must reproduce exactly (and a grouped conv,
    which it leaves to peft's forward)."""

    def __init__(self) -> None:
        super().__init__()
        self.reflect = nn.Conv2d(3, 8, 7, padding=3, padding_mode="reflect")
        self.strided = nn.Conv2d(8, 8, 3, stride=2, padding=1, bias=False)
        self.replicate = nn.Conv2d(8, 8, 5, stride=2, padding=2, padding_mode="replicate")
        self.grouped = nn.Conv2d(8, 8, 3, padding=1, groups=2)
        self.linear = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.grouped(self.replicate(self.strided(self.reflect(x))))
        return self.linear(h.mean((2, 3)))


@pytest.mark.parametrize("size", [(16, 16), (13, 22)])
@pytest.mark.filterwarnings("ignore:LoRA adapter added to ConvNd layer with groups")
def test_merged_layers_compute_what_peft_computes(size):
    spec = dnw.LoraSpec(
        target_modules=["reflect", "strided", "replicate", "grouped", "linear"], rank=2
    )
    base = Pads()
    peft_model = apply_lora(copy.deepcopy(base), spec, fast=False)
    fast_model = apply_lora(copy.deepcopy(base), spec)
    assert isinstance(fast_model.reflect, MergedConv2d) and isinstance(
        fast_model.linear, MergedLinear
    )
    assert not isinstance(peft_model.reflect, MergedConv2d)
    _random_b(peft_model)
    _random_b(fast_model)
    x = torch.randn(3, 3, *size)
    a, b = peft_model(x), fast_model(x)
    assert torch.allclose(a, b, atol=1e-5), (a - b).abs().max()
    a.square().sum().backward()
    b.square().sum().backward()
    grads = {n: p.grad for n, p in peft_model.named_parameters() if p.grad is not None}
    for n, p in fast_model.named_parameters():
        if n in grads:
            assert torch.allclose(p.grad, grads[n], rtol=1e-4, atol=1e-5), n
    assert set(grads) == {n for n, p in fast_model.named_parameters() if p.grad is not None}
    # the same state dict, and peft's own loader reads the adapter either model writes
    assert lora_state(peft_model).keys() == lora_state(fast_model).keys()


def test_fast_lora_step_equals_peft_step_on_e2gan():
    arch = dnw.create_architecture("e2gan", "tiny")
    base = arch.build(0)
    models = {
        fast: apply_lora(copy.deepcopy(base), arch.lora_spec(), fast=fast) for fast in (False, True)
    }
    states = {fast: arch.init_training(m, seed=0, lr=1e-3) for fast, m in models.items()}
    for step in range(3):
        batch = arch.dummy_batch(2, seed=step)
        for fast in models:
            architecture_step(arch, models[fast], states[fast])(batch)
    a, b = lora_state(models[False]), lora_state(models[True])
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-5


class _Counter(Callback):
    name = "counter"

    def __init__(self, stop_at: int | None = None) -> None:
        self.seen: list[int] = []
        self.stop_at = stop_at

    def on_step(self, trainer: Trainer) -> None:
        self.seen.append(trainer.step)
        if trainer.step % 2 == 0:
            trainer.evaluate()
            trainer.evaluate()  # memoised: one evaluation per step
            trainer.request_checkpoint()
        if trainer.step == self.stop_at:
            trainer.stop()

    def state_dict(self):
        return {"seen": self.seen}

    def load_state_dict(self, state):
        self.seen = list(state["seen"])


def _linear_run(tmp_path, max_steps, callbacks, losses=None):
    torch.manual_seed(0)
    net = nn.Linear(2, 1)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    values = iter(losses or [])
    calls = {"eval": 0}

    def step(i):
        loss = net(torch.ones(1, 2)).square().sum() + next(values, 0.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return {"loss": loss.detach()}

    def evaluate():
        calls["eval"] += 1
        return {"w": float(net.weight.detach().sum())}

    trainer = Trainer(
        step,
        max_steps=max_steps,
        parts={"net": net, "opt": opt},
        ckpt_dir=tmp_path,
        evaluate=evaluate,
        callbacks=callbacks,
        progress=False,
    )
    return trainer, net, calls


def test_engine_runs_callbacks_memoises_evaluation_and_stops(tmp_path):
    counter = _Counter(stop_at=5)
    trainer, _, calls = _linear_run(tmp_path / "a", 10, [counter])
    trainer.run()
    assert counter.seen == [0, 1, 2, 3, 4, 5] and trainer.step == 5
    assert calls["eval"] == 3 == trainer.evaluations  # steps 0, 2, 4
    assert json.loads((tmp_path / "a" / "checkpoint.json").read_text())["step"] == 4


def test_engine_resumes_where_the_checkpoint_was(tmp_path):
    whole, net_whole, _ = _linear_run(tmp_path / "w", 6, [_Counter()])
    whole.run()
    first, _, _ = _linear_run(tmp_path / "c", 6, [_Counter(stop_at=3)])
    first.run()  # stopped after step 3; its last checkpoint is step 2
    counter = _Counter()
    again, net, _ = _linear_run(tmp_path / "c", 6, [counter])
    again.run()
    assert counter.seen == [0, 1, 2, 3, 4, 5, 6]  # steps 0-2 from the checkpoint, then 3-6
    assert torch.equal(net.weight, net_whole.weight)


def test_divergence_is_caught_before_anything_is_written(tmp_path):
    trainer, _, _ = _linear_run(tmp_path, 10, [_Counter()], losses=[0.0, float("nan")])
    with pytest.raises(TrainingDiverged, match="diverged at step 2"):
        trainer.run()
    assert json.loads((tmp_path / "checkpoint.json").read_text())["step"] == 0


def test_checkpoint_of_a_lora_run_leaves_the_frozen_base_out():
    arch = dnw.create_architecture("e2gan", "tiny")
    model = apply_lora(arch.build(0), arch.lora_spec())
    state = TrainableState(model).state_dict()
    assert state and all(".lora_" in k for k in state)
    full = TrainableState(arch.build(0)).state_dict()
    assert full.keys() == arch.build(0).state_dict().keys()


class _OldStyle(TargetArchitecture):
    """A plugin written before the engine: only ``training_step``."""

    config = {}  # noqa: RUF012

    def build(self, seed=0):
        return nn.Linear(2, 2)

    def lora_spec(self):
        return dnw.LoraSpec(target_modules=[""], rank=1)

    def dummy_batch(self, batch_size=2, seed=0):
        return {"x": torch.ones(batch_size, 2)}

    def forward(self, model, batch):
        return model(batch["x"])

    def init_training(self, model, *, seed=0, **options):
        return torch.optim.SGD(model.parameters(), lr=0.1)

    def training_step(self, model, state, batch):
        loss = model(batch["x"]).square().mean()
        state.zero_grad()
        loss.backward()
        state.step()
        return {"loss": loss.item()}

    def evaluate(self, model, batch):
        return {}


def test_old_style_architectures_still_train_and_incomplete_ones_get_one_line():
    arch = _OldStyle()
    model = arch.build()
    before = model.weight.detach().clone()
    logs = architecture_step(arch, model, arch.init_training(model))(arch.dummy_batch())
    assert set(logs) == {"loss"} and not torch.equal(before, model.weight)

    class Neither(_OldStyle):
        training_step = TargetArchitecture.training_step

    with pytest.raises(dnw.DnwError, match="implements neither training_phases nor training_step"):
        Neither().training_step(model, arch.init_training(model), arch.dummy_batch())


def test_speed_command_prints_the_table(tmp_path, tiny_base):
    from click.testing import CliRunner

    from denoised_weights.cli import create_cli

    result = CliRunner().invoke(
        create_cli(),
        ["speed", "--preset", "tiny", "--base", str(tiny_base), "--threads", "1", "--rounds", "1"],
    )
    assert result.exit_code == 0, result.output
    for row in (
        "fp32 matmul",
        "full step (scratch)",
        "LoRA step, peft's layers",
        "LoRA step, engine",
    ):
        assert row in result.output
    bad = CliRunner().invoke(create_cli(), ["speed", "--threads", "x"])
    assert bad.exit_code == 2 and "--threads" in bad.output


@pytest.mark.parametrize("text_dim", [32, 24])  # packed (text as wide as the channels) or not
def test_unet_reads_each_prompt_once_with_the_same_result(text_dim):
    from denoised_weights.generators.unet1d import WeightUNet1D

    torch.manual_seed(0)
    net = WeightUNet1D(
        block_size=64,
        channels=(32, 64),
        heads=2,
        text_dim=text_dim,
        pooled_text=True,
        emb_head=True,
    )
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    prompts, length, blocks = 3, 5, 4
    text = torch.randn(prompts, length, text_dim)
    mask = torch.ones(prompts, length, dtype=torch.bool)
    mask[1, 3:] = False
    index = torch.arange(prompts).repeat_interleave(blocks)
    args = (
        torch.randn(prompts * blocks, 64),
        torch.randint(1000, (prompts * blocks,)),
        torch.arange(blocks).repeat(prompts),
    )
    repeated = net(*args, text[index], mask[index])
    shared = net(*args, text, mask, text_index=index)
    assert torch.allclose(repeated, shared, atol=1e-5)


def test_the_time_budget_is_rank_zeros_decision(monkeypatch):
    """Under DDP every rank stops at the step rank 0 decides, whatever its own clock says
    (ranks that disagreed would wait forever in the next all-reduce)."""
    import denoised_weights.core.engine as engine

    said = []

    def rank_zero_says(value):
        said.append(value)
        return True  # rank 0 is out of time

    monkeypatch.setattr(engine, "broadcast_object", rank_zero_says)
    steps = []
    trainer = Trainer(
        lambda i: steps.append(i) or {},
        max_steps=5,
        max_minutes=60.0,
        rank=1,
        world=2,
        progress=False,
    )
    trainer.run()
    assert steps == [] and said == [None]  # rank 1 offers nothing, follows rank 0
    monkeypatch.setattr(engine, "broadcast_object", lambda value: False)
    Trainer(
        lambda i: steps.append(i) or {},
        max_steps=3,
        max_minutes=1e-9,
        rank=1,
        world=2,
        progress=False,
    ).run()
    assert steps == [0, 1, 2]  # its own clock is past the budget; rank 0 says go on

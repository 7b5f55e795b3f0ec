"""A test-only architecture plugin: a tiny conv net whose norm layer trains with the LoRA."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from denoised_weights import hookimpl
from denoised_weights.core.interfaces import TargetArchitecture
from denoised_weights.core.lora import LoraSpec


class FakeNet(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, width, 3, padding=1)
        self.norm = nn.GroupNorm(2, width)
        self.out = nn.Conv2d(width, 3, 1)
        self.skip = nn.Linear(3, 3)  # not a LoRA target: checks LoRA lands only where intended

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(F.relu(self.norm(self.conv(x))))


class FakeArch(TargetArchitecture):
    def __init__(self, width: int = 4, rank: int = 2, train_norms: bool = True) -> None:
        self._config = {"width": width, "rank": rank, "train_norms": train_norms}

    @property
    def config(self) -> dict[str, Any]:
        return dict(self._config)

    def build(self, seed: int = 0) -> nn.Module:
        torch.manual_seed(seed)
        return FakeNet(self._config["width"])

    def lora_spec(self) -> LoraSpec:
        return LoraSpec(
            target_modules=["conv", "out"],
            rank=self._config["rank"],
            norm_modules={"norm": "conv"},
            train_norms=self._config["train_norms"],
        )

    def dummy_batch(self, batch_size: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(seed)
        a = torch.rand(batch_size, 3, 8, 8, generator=g)
        return {"A": a, "B": a.flip(1)}

    def forward(self, model: nn.Module, batch: Any) -> torch.Tensor:
        return model(batch["A"])

    def init_training(self, model: nn.Module, *, seed: int = 0, **options: Any) -> Any:
        return torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)

    def training_step(self, model: nn.Module, state: Any, batch: Any) -> dict[str, float]:
        state.zero_grad()
        loss = F.l1_loss(model(batch["A"]), batch["B"])
        loss.backward()
        state.step()
        return {"l1": loss.item()}

    def evaluate(self, model: nn.Module, batch: Any) -> dict[str, float]:
        with torch.no_grad():
            return {"l1": F.l1_loss(model(batch["A"]), batch["B"]).item()}


class FakePlugin:
    """Registered as an object plugin in tests."""

    __name__ = "fake_plugin"

    @hookimpl
    def register_architectures(self, register):
        register("fake", FakeArch, tiny={"width": 4}, wide={"width": 8})

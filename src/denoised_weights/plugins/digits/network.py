"""DigitCNN: a small convolutional classifier of ``[n, 1, H, W]`` images into 10 classes.

A 3x3 conv stem, then per further width a stride-2 3x3 conv (optionally followed by a stride-1
one), ReLU after each (GroupNorm before it when ``norm="group"``, the default: from scratch it
learns about twice as fast), global average pooling and a linear head. Every conv and linear
layer gets LoRA; no BatchNorm, so a LoRA fine-tune changes no buffer.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from denoised_weights.core.errors import DnwError
from denoised_weights.core.interfaces import Phase, TargetArchitecture
from denoised_weights.core.lora import LoraSpec

NORMS = ("none", "group")
N_CLASSES = 10


def _block(cin: int, cout: int, stride: int, norm: str) -> nn.Sequential:
    layers: OrderedDict[str, nn.Module] = OrderedDict(conv=nn.Conv2d(cin, cout, 3, stride, 1))
    if norm == "group":
        layers["norm"] = nn.GroupNorm(min(4, cout), cout)
    layers["act"] = nn.ReLU()
    return nn.Sequential(layers)


class DigitNet(nn.Module):
    def __init__(self, widths: Sequence[int], extra_convs: bool, norm: str) -> None:
        super().__init__()
        self.stem = _block(1, widths[0], 1, norm)
        stages: list[nn.Module] = []
        for cin, cout in itertools.pairwise(widths):
            stage = nn.Sequential()
            stage.add_module("down", _block(cin, cout, 2, norm))
            if extra_convs:
                stage.add_module("mix", _block(cout, cout, 1, norm))
            stages.append(stage)
        self.stages = nn.Sequential(*stages)
        self.head = nn.Linear(widths[-1], N_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [n, 1, H, W]`` in [0, 1] → logits ``[n, 10]``."""
        h = self.stages(self.stem(x * 2 - 1))
        return self.head(h.mean(dim=(2, 3)))


class DigitCNN(TargetArchitecture):
    """The digits task's classifier: cross-entropy training, accuracy evaluation."""

    lora_config_keys = ("rank", "alpha", "train_norms", "lora_seed", "shared_a")
    #: Adam step sizes, measured on the small preset (one thread, batch 32): base accuracy after
    #: 1500 mixture steps 0.46 / 0.62 / 0.12 at 1e-3 / 3e-3 / 1e-2; LoRA from a 4000-step base
    #: on 8 held-out concepts, mean accuracy after 200 steps 0.942 / 0.947 / 0.947 at
    #: 1e-2 / 2e-2 / 3e-2 (after 50: 0.924 / 0.921 / 0.939)
    learning_rates = {"full": 3e-3, "lora": 2e-2}  # noqa: RUF012

    def __init__(
        self,
        widths: Sequence[int] = (8, 16, 32),
        extra_convs: bool = False,
        norm: str = "group",
        image_size: int = 16,
        rank: int = 4,
        alpha: float | None = None,
        train_norms: bool = False,
        lora_seed: int = 0,
        shared_a: bool = False,
    ) -> None:
        widths = list(widths) if isinstance(widths, list | tuple) else widths
        if not isinstance(widths, list) or not widths:
            raise DnwError(f"digit-cnn: widths must be a non-empty list, got {widths!r}")
        checks = [("image_size", image_size), ("rank", rank), *(("widths", w) for w in widths)]
        for key, value in checks:
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise DnwError(f"digit-cnn: {key} must be a positive integer, got {value!r}")
        if norm not in NORMS:
            raise DnwError(f"digit-cnn: norm must be one of {', '.join(NORMS)}, got {norm!r}")
        if alpha is not None and alpha <= 0:
            raise DnwError(f"digit-cnn: alpha must be positive, got {alpha!r}")
        self._config = {
            "widths": widths,
            "extra_convs": bool(extra_convs),
            "norm": norm,
            "image_size": image_size,
            "rank": rank,
            "alpha": alpha,
            "train_norms": bool(train_norms),
            "lora_seed": lora_seed,
            **({"shared_a": True} if shared_a else {}),  # recorded only when on (fingerprints)
        }
        self._spec: LoraSpec | None = None
        self.name = "digit-cnn"

    @property
    def config(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, list) else v for k, v in self._config.items()}

    def build(self, seed: int = 0) -> DigitNet:
        c = self._config
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return DigitNet(c["widths"], c["extra_convs"], c["norm"])

    def lora_spec(self) -> LoraSpec:
        """Every conv and linear layer; a GroupNorm joins the conv before it."""
        if self._spec is None:
            targets: list[str] = []
            norms: dict[str, str] = {}
            for name, module in self.build().named_modules():
                if isinstance(module, nn.Conv2d | nn.Linear):
                    targets.append(name)
                elif isinstance(module, nn.GroupNorm):
                    norms[name] = targets[-1]
            c = self._config
            self._spec = LoraSpec(
                target_modules=targets,
                rank=c["rank"],
                alpha=c["alpha"],
                norm_modules=norms,
                train_norms=c["train_norms"],
                init_seed=c["lora_seed"],
                shared_a=c.get("shared_a", False),
            )
        return dataclasses.replace(self._spec)

    def dummy_batch(self, batch_size: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(seed)
        s = self._config["image_size"]
        return {
            "x": torch.rand(batch_size, 1, s, s, generator=g),
            "y": torch.randint(N_CLASSES, (batch_size,), generator=g),
        }

    def forward(self, model: nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return model(batch["x"])

    def init_training(
        self, model: nn.Module, *, seed: int = 0, lr: float | None = None, **options: Any
    ) -> torch.optim.Adam:
        """Adam over the trainable parameters; ``lr`` defaults by what trains (full or LoRA)."""
        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            raise DnwError("the model has no trainable parameters")
        if lr is None:
            full = len(params) == sum(1 for _ in model.parameters())
            lr = self.learning_rates["full" if full else "lora"]
        if lr <= 0:
            raise DnwError(f"the learning rate must be positive, got {lr}")
        return torch.optim.Adam(params, lr=lr)

    def training_phases(
        self, model: nn.Module, state: torch.optim.Optimizer, batch: Mapping[str, torch.Tensor]
    ) -> Iterator[Phase]:
        model.train()
        logits = model(batch["x"])
        accuracy = (logits.detach().argmax(1) == batch["y"]).float().mean()
        yield Phase("loss", F.cross_entropy(logits, batch["y"]), state, {"accuracy": accuracy})

    @torch.no_grad()
    def evaluate(self, model: nn.Module, batch: Mapping[str, torch.Tensor]) -> dict[str, float]:
        was_training = model.training
        model.eval()
        logits = model(batch["x"])
        model.train(was_training)
        return {
            "loss": F.cross_entropy(logits, batch["y"]).item(),
            "accuracy": (logits.argmax(1) == batch["y"]).float().mean().item(),
        }

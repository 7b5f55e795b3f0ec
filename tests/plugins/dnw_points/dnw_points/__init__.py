"""A third-party plugin written against the public interfaces only: a task of 2-D point maps
(rotate or scale the plane by a described amount) learned by a small MLP, scored by MSE."""

from __future__ import annotations

import math

import torch
from torch import nn

from denoised_weights import Concept, Metric, TargetArchitecture, Task, hookimpl
from denoised_weights.core.lora import LoraSpec

ROTATE_TRAIN, ROTATE_HELD = (-90, -60, -30, 30, 60, 90), (-45, 45)
SCALE_TRAIN, SCALE_HELD = (0.5, 0.75, 1.5, 2.0), (1.25,)


def _concept(family: str, value: float, split: str) -> Concept:
    if family == "rotate":
        prompts = (
            f"rotate the plane by {value:g} degrees",
            f"points turned {value:g} degrees",
            f"a {value:g} degree rotation",
        )
    else:
        prompts = (
            f"scale the plane by {value:g}",
            f"points stretched {value:g} times",
            f"a zoom of {value:g}",
        )
    holdout = "interpolation" if split == "held-out" else ""
    return Concept(
        f"{family}-{value:g}", prompts, split, family, ((f"{family}.value", float(value)),), holdout
    )


CONCEPTS = (
    [_concept("rotate", v, "train") for v in ROTATE_TRAIN]
    + [_concept("scale", v, "train") for v in SCALE_TRAIN]
    + [_concept("rotate", v, "held-out") for v in ROTATE_HELD]
    + [_concept("scale", v, "held-out") for v in SCALE_HELD]
)


class PointsTask(Task):
    name = "points"
    target_metric, higher_is_better, metrics = "mse", False, ("mse",)
    default_architecture, default_preset = "point-mlp", "tiny"
    input_keys, target_key = ("x",), "y"

    def concepts(self, split=None):
        return [c for c in CONCEPTS if split is None or c.split == split]

    def make_data(self, concept, *, arch, split, n, seed):
        g = torch.Generator().manual_seed(seed * 2 + (split == "eval"))
        x = torch.randn(n, 2, generator=g)
        value = dict(concept.params)[f"{concept.family}.value"]
        if concept.family == "rotate":
            a = math.radians(value)
            y = x @ torch.tensor([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]])
        else:
            y = x * value
        return {"x": x, "y": y}


class PointMLP(TargetArchitecture):
    lora_config_keys = ("rank",)
    learning_rates = {"full": 1e-2, "lora": 1e-2}  # noqa: RUF012

    def __init__(self, width: int = 16, rank: int = 2) -> None:
        self._config = {"width": width, "rank": rank}

    @property
    def config(self):
        return dict(self._config)

    def build(self, seed=0):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            w = self._config["width"]
            return nn.Sequential(
                nn.Linear(2, w), nn.Tanh(), nn.Linear(w, w), nn.Tanh(), nn.Linear(w, 2)
            )

    def lora_spec(self):
        return LoraSpec(target_modules=["0", "2", "4"], rank=self._config["rank"])

    def dummy_batch(self, batch_size=2, seed=0):
        x = torch.randn(batch_size, 2, generator=torch.Generator().manual_seed(seed))
        return {"x": x, "y": -x}

    def forward(self, model, batch):
        return model(batch["x"])

    def init_training(self, model, *, seed=0, lr=1e-2, **_):
        return torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)

    def training_step(self, model, state, batch):
        loss = nn.functional.mse_loss(model(batch["x"]), batch["y"])
        state.zero_grad()
        loss.backward()
        state.step()
        return {"mse": loss.item()}

    def evaluate(self, model, batch):
        with torch.no_grad():
            return {"mse": nn.functional.mse_loss(model(batch["x"]), batch["y"]).item()}


class MSE(Metric):
    name, higher_is_better = "mse", False

    def reset(self):
        self.total, self.count = 0.0, 0

    def update(self, pred, target):
        self.total += float(((pred - target) ** 2).sum())
        self.count += target.numel()

    def compute(self):
        return self.total / max(self.count, 1)


@hookimpl
def register_tasks(register):
    register("points", PointsTask)


@hookimpl
def register_architectures(register):
    register("point-mlp", PointMLP, tiny={"width": 16, "rank": 2})


@hookimpl
def register_metrics(register):
    register("mse", MSE)

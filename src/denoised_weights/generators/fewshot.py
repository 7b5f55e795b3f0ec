"""Few-shot inits built on the generator: a handful of coefficients fitted on the new concept's
data, every fitting step counted as a training step (``training_steps``).

``fine-generated``  FINE (Xie et al. 2024) on the generated LoRA itself: per layer the SVD of
                    the generated update ΔW = U·diag(s)·Vᵀ, then only the singular values are
                    fitted (as ``fine`` does with bases shared across the dataset).
``blend``           LoraHub-style (Huang et al. 2023): per layer, coefficients over {the
                    generated LoRA, the k LoRAs of the nearest prompts, the dataset mean},
                    starting at the generated one, fitted on the task's own loss.

Their controls (arXiv 2602.12323), so that a few-shot win reads as transfer, not as the fit:
``blend-random``    the same fit over {the mean, k stored LoRAs drawn at random}
``nearest-tuned``   retrieval by prompt, then as many ordinary fine-tuning steps
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from denoised_weights.core.errors import DnwError
from denoised_weights.core.interfaces import StateDict, TargetArchitecture, WeightGenerator
from denoised_weights.generators.baselines import FittedSteps, train_steps


def _layers(state: Mapping[str, torch.Tensor]) -> dict[str, list[str]]:
    """LoRA layer -> its tensor keys (A and B; other tensors each a layer of their own)."""
    out: dict[str, list[str]] = {}
    for key in state:
        layer = key.split(".lora_", 1)[0] if ".lora_" in key else key
        out.setdefault(layer, []).append(key)
    return out


class _GeneratedInit(FittedSteps, WeightGenerator):
    def __init__(
        self,
        path: str | Path,
        fit_steps: int = 20,
        lr: float = 1e-2,
        batch_size: int = 8,
        registries: Any = None,
        **_: Any,
    ) -> None:
        from denoised_weights.generators.diffusion import DiffusionGenerator

        self.generator = DiffusionGenerator(path, registries=registries)
        self.path = self.generator.path
        self.fit_steps, self.lr, self.batch_size = fit_steps, lr, batch_size

    def check_fits(self, arch: TargetArchitecture) -> None:
        self.generator.check_fits(arch)

    def generate(self, prompt: str, *, seed: int = 0) -> StateDict:
        return self.generator.generate(prompt, seed=seed)


class FineGeneratedInit(_GeneratedInit):
    """FINE on the generated LoRA: its own per-layer SVD, only the singular values fitted."""

    def initialise(
        self,
        prompt: str,
        *,
        arch: TargetArchitecture | None = None,
        model: nn.Module | None = None,
        data: Mapping[str, torch.Tensor] | None = None,
        carry: Any = None,
        seed: int = 0,
        **_: Any,
    ) -> StateDict:
        from denoised_weights.core.lora import lora_products
        from denoised_weights.generators.baselines import _pad_columns, fit_sigma

        state = self.generate(prompt, seed=seed)
        if not self.fits_here(data, arch, model):
            return state
        bases = {}
        for layer, delta in lora_products(state).items():
            r = state[f"{layer}.lora_A.weight"].shape[0]
            u, s, vh = torch.linalg.svd(delta, full_matrices=False)
            u, v = _pad_columns(u[:, :r], r), _pad_columns(vh[:r].T, r)
            sigma = torch.nn.functional.pad(s[:r], (0, r - min(r, len(s))))
            a_key = f"{layer}.lora_A.weight"
            state[a_key] = v.T.float().reshape(state[a_key].shape).contiguous()
            bases[layer] = (u.float(), v.float(), sigma.float())
        return fit_sigma(
            state,
            bases,
            arch=arch,
            model=model,
            data=data,
            carry=carry,
            seed=seed,
            steps=self.fit_steps,
            lr=self.lr,
            batch_size=self.batch_size,
        )


class _Blending(FittedSteps):
    """What ``blend`` and its control share: per-layer coefficients over ``candidates``
    (the first is the start), fitted by :func:`fit_blend`."""

    lr: float
    batch_size: int

    def candidates(self, prompt: str, seed: int) -> list[StateDict]:
        raise NotImplementedError

    def initialise(
        self,
        prompt: str,
        *,
        arch: TargetArchitecture | None = None,
        model: nn.Module | None = None,
        task: Any = None,
        data: Mapping[str, torch.Tensor] | None = None,
        seed: int = 0,
        **_: Any,
    ) -> StateDict:
        cands = self.candidates(prompt, seed)
        if not self.fits_here(data, arch, model, task):
            return cands[0]
        return fit_blend(
            cands, arch, model, task, data, seed, self.fit_steps, self.lr, self.batch_size
        )


class BlendInit(_Blending, _GeneratedInit):
    """Per-layer coefficients over {generated, k nearest, mean}, fitted on the task's loss."""

    def __init__(
        self,
        path: str | Path,
        data: str | Path,
        k: int = 3,
        fit_steps: int = 20,
        lr: float = 5e-2,
        batch_size: int = 8,
        registries: Any = None,
        **_: Any,
    ) -> None:
        from denoised_weights.generators.baselines import MeanInit, NearestInit

        super().__init__(
            path, fit_steps=fit_steps, lr=lr, batch_size=batch_size, registries=registries
        )
        self.k = k
        self.nearest = NearestInit(data, registries=registries)
        self.mean = MeanInit(data)

    def candidates(self, prompt: str, seed: int) -> list[StateDict]:
        """The generated LoRA first, then the k nearest trained ones, then the mean."""
        picked = [concept for concept, _ in self.nearest.nearest_concepts(prompt, self.k)]
        ds = self.nearest.dataset
        return [
            self.generate(prompt, seed=seed),
            *[ds.load_concept(c)[-1] for c in picked],
            self.mean.generate(prompt),
        ]


class BlendRandomInit(_Blending, WeightGenerator):
    """The control of ``blend`` (after arXiv 2602.12323): the same per-layer fit, at the same
    fitting steps, over {the dataset mean, k stored LoRAs drawn at random}, starting at the
    mean. If ``blend`` wins only as much as this, its win is the fit, not transfer from the
    generated and retrieved LoRAs."""

    def __init__(
        self,
        data: str | Path,
        k: int = 3,
        fit_steps: int = 20,
        lr: float = 5e-2,
        batch_size: int = 8,
        **_: Any,
    ) -> None:
        from denoised_weights.generators.baselines import MeanInit

        self.mean = MeanInit(data)
        self.dataset = self.mean.dataset
        self.k, self.fit_steps, self.lr, self.batch_size = k, fit_steps, lr, batch_size

    def check_fits(self, arch: TargetArchitecture) -> None:
        self.mean.check_fits(arch)

    def candidates(self, prompt: str, seed: int) -> list[StateDict]:
        """The mean first, then ``k`` stored LoRAs (final checkpoints) drawn by ``seed``."""
        concepts = self.dataset.concepts
        g = torch.Generator().manual_seed(seed)
        picked = torch.randperm(len(concepts), generator=g)[: self.k].tolist()
        return [
            self.mean.generate(prompt),
            *[self.dataset.load_concept(concepts[i])[-1] for i in picked],
        ]

    def generate(self, prompt: str, *, seed: int = 0) -> StateDict:
        return self.mean.generate(prompt, seed=seed)


class NearestTunedInit(FittedSteps, WeightGenerator):
    """The other control of the few-shot inits: retrieval by prompt (``nearest``), then
    ``fit_steps`` ordinary LoRA fine-tuning steps on the new concept's data (the
    architecture's own training step), counted as training steps like every few-shot fit."""

    def __init__(self, data: str | Path, fit_steps: int = 20, registries: Any = None, **_: Any):
        from denoised_weights.generators.baselines import NearestInit

        self.nearest = NearestInit(data, registries=registries)
        self.dataset = self.nearest.dataset
        self.fit_steps = fit_steps

    def check_fits(self, arch: TargetArchitecture) -> None:
        self.nearest.check_fits(arch)

    def generate(self, prompt: str, *, seed: int = 0) -> StateDict:
        return self.nearest.generate(prompt, seed=seed)

    def initialise(
        self,
        prompt: str,
        *,
        arch: TargetArchitecture | None = None,
        model: nn.Module | None = None,
        task: Any = None,
        data: Mapping[str, torch.Tensor] | None = None,
        carry: Mapping[str, torch.Tensor] | None = None,
        seed: int = 0,
        **_: Any,
    ) -> StateDict:
        from denoised_weights.core.lora import load_lora_state, lora_state

        state = self.generate(prompt, seed=seed)
        if not self.fits_here(data, arch, model, task):
            return state
        device = next(model.parameters()).device
        load_lora_state(model, {k: v.to(device) for k, v in state.items()})
        train_steps(
            arch,
            model,
            lambda step: task.batch(data, batch_size=8, seed=seed, step=step),
            steps=self.fit_steps,
            lr=arch.learning_rates["lora"],
            carry=carry,
            seed=seed,
            desc="nearest-tuned",
        )
        return {k: v.detach().cpu().clone() for k, v in lora_state(model).items()}


def fit_blend(
    cands: list[StateDict],
    arch: TargetArchitecture,
    model: nn.Module,
    task: Any,
    data: Mapping[str, torch.Tensor],
    seed: int,
    fit_steps: int,
    lr: float,
    batch_size: int,
) -> StateDict:
    """Per-layer coefficients over the candidate LoRAs, starting at the first, fitted on the
    task's loss for ``fit_steps`` steps (the blend and its control)."""
    from denoised_weights.core.engine import Trainer
    from denoised_weights.core.interfaces import data_size
    from denoised_weights.core.lora import functional_forward, lora_parameter_names

    device = next(model.parameters()).device
    layers = _layers(cands[0])
    coef = torch.zeros(len(layers), len(cands), device=device)
    coef[:, 0] = 1.0  # start at the first candidate
    coef.requires_grad_(True)
    stacked = {k: torch.stack([c[k] for c in cands]).to(device) for k in cands[0]}
    row = {key: i for i, keys in enumerate(layers.values()) for key in keys}
    names = lora_parameter_names(model)
    missing = [k for k in cands[0] if k not in names]
    if missing:
        raise DnwError(f"blend: the LoRA state has tensors the network lacks ({missing[0]})")
    opt = torch.optim.Adam([coef], lr=lr)
    n, g = data_size(data), torch.Generator().manual_seed(seed)
    was = model.training
    model.eval()

    def blended() -> dict[str, torch.Tensor]:
        return {k: torch.tensordot(coef[row[k]], v, dims=1) for k, v in stacked.items()}

    def batches(_: int) -> dict[str, torch.Tensor]:
        idx = torch.randint(n, (min(batch_size, n),), generator=g)
        return {k: v[idx].to(device) for k, v in data.items()}

    def step(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        params = {names[k]: v for k, v in blended().items()}
        loss = task.loss(functional_forward(arch, model, params, batch), batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return {"loss": loss.detach()}

    Trainer(step, max_steps=fit_steps, batches=batches, desc="blend", progress=False).run()
    model.train(was)
    with torch.no_grad():
        return {k: v.detach().cpu() for k, v in blended().items()}

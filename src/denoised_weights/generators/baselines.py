"""Baseline initialisers: what a weight generator has to beat.

``mean``           the mean of the dataset's LoRA states
``nearest``        the trained LoRA of the training concept whose prompt is closest in the text
                   encoder's space (retrieval; a generator that merely copies does this)
``noisy-nearest``  nearest + Gaussian noise at the dataset's spread (per tensor)
``nearest-examples`` retrieval by examples: the stored LoRA whose concept's examples embed
                   closest to the new concept's (a generator's example encoder)
``scored-examples`` retrieval by examples, scored: the stored LoRA with the lowest task loss
                   on the new concept's examples
``fine``           after FINE (Xie et al. 2024, arXiv 2409.19289): per layer, shared bases U, V
                   from SVDs of the dataset's LoRA products B·A; only the per-layer singular
                   values Σ are fitted on a few batches of the new concept's pairs.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from torch import nn

from denoised_weights.core.dataset import WeightDataset
from denoised_weights.core.errors import DnwError, FingerprintMismatchError
from denoised_weights.core.interfaces import StateDict, TargetArchitecture, WeightGenerator


class FittedSteps:
    """For inits fitted on the new concept's data: their ``fit_steps`` count as training
    steps (the benchmark adds them to the steps to target)."""

    fit_steps: int

    @property
    def training_steps(self) -> int:
        """Fitting steps on the new concept's data: they count as training steps."""
        return self.fit_steps

    def fits_here(self, data: Any, *needed: Any) -> bool:
        """Whether the fit runs: steps to run, the concept's ``data`` and every ``needed``
        part (the architecture, the model, ...) given; else the init is its start."""
        return self.fit_steps != 0 and bool(data) and all(x is not None for x in needed)


def train_steps(
    arch: TargetArchitecture,
    model: nn.Module,
    batches: Any,
    *,
    steps: int,
    lr: float,
    carry: Mapping[str, torch.Tensor] | None,
    seed: int,
    desc: str,
) -> None:
    """``steps`` of the architecture's own training step on ``model`` (a fresh training state,
    the base's ``carry`` loaded), ``batches(step)`` feeding them."""
    from denoised_weights.core.engine import Trainer, architecture_step

    tstate = arch.init_training(model, seed=seed, lr=lr)
    if carry:
        arch.load_training_carry(tstate, carry)
    step = architecture_step(arch, model, tstate, next(model.parameters()).device)
    Trainer(step, max_steps=steps, batches=batches, desc=desc, progress=False).run()


class _DatasetInit(WeightGenerator):
    def __init__(self, data: str | Path, **_: Any) -> None:
        self.dataset = WeightDataset(data)

    def check_fits(self, arch: TargetArchitecture) -> None:
        from denoised_weights.core.components import lora_fingerprint

        if lora_fingerprint(arch) != self.dataset.fingerprint:
            raise FingerprintMismatchError(
                f"{self.dataset.path}: the dataset was collected for another network "
                f"(preset {self.dataset.config.get('preset')}); use a dataset of this preset"
            )

    @cached_property
    def states(self) -> list[tuple[dict[str, Any], StateDict]]:
        return list(self.dataset.iter_states())

    @cached_property
    def mean_state(self) -> StateDict:
        keys = self.states[0][1].keys()
        return {k: torch.stack([s[k] for _, s in self.states]).mean(0) for k in keys}

    @cached_property
    def spread(self) -> dict[str, float]:
        """Per tensor: the standard deviation across the dataset's states (around their mean)."""
        mean = self.mean_state
        return {k: torch.stack([s[k] - mean[k] for _, s in self.states]).std().item() for k in mean}


class MeanInit(_DatasetInit):
    """The average LoRA of the dataset."""

    def generate(self, prompt: str, *, seed: int = 0) -> StateDict:
        return {k: v.clone() for k, v in self.mean_state.items()}


class NearestInit(_DatasetInit):
    """Retrieval: the final checkpoint of the concept with the most similar prompt."""

    def __init__(
        self,
        data: str | Path,
        text_encoder: str = "minilm",
        text_encoder_path: str | None = None,
        registries: Any = None,
    ) -> None:
        super().__init__(data)
        self.text_encoder = text_encoder
        self.text_encoder_path = text_encoder_path
        self.registries = registries

    @cached_property
    def _bank(self) -> tuple[Any, torch.Tensor, list[str]]:
        from denoised_weights.generators.diffusion import create_text_encoder

        encoder = create_text_encoder(self.text_encoder, self.text_encoder_path, self.registries)
        prompts, owners = [], []
        for frag in self.dataset.fragments():
            for p in frag["entries"][0]["prompts"]:
                prompts.append(p)
                owners.append(frag["concept"])
        vectors = torch.cat(
            [encoder.pooled(prompts[i : i + 64]) for i in range(0, len(prompts), 64)]
        )
        return encoder, torch.nn.functional.normalize(vectors, dim=-1), owners

    def nearest_concepts(self, prompt: str, k: int = 1) -> list[tuple[str, float]]:
        """The ``k`` training concepts whose prompts are closest to ``prompt`` (cosine), best
        first."""
        encoder, vectors, owners = self._bank
        query = torch.nn.functional.normalize(encoder.pooled([prompt]), dim=-1)[0]
        sims = vectors @ query
        ranked: dict[str, float] = {}
        for i in torch.argsort(sims, descending=True, stable=True).tolist():
            ranked.setdefault(owners[i], float(sims[i]))
            if len(ranked) == k:
                break
        return list(ranked.items())

    def nearest_concept(self, prompt: str) -> tuple[str, float]:
        return self.nearest_concepts(prompt, 1)[0]

    def generate(self, prompt: str, *, seed: int = 0) -> StateDict:
        concept, _ = self.nearest_concept(prompt)
        return self.dataset.load_concept(concept)[-1]


class NearestExamplesInit(_DatasetInit):
    """Retrieval by examples (LoRAuter-style): the final checkpoint of the training concept
    whose examples embed closest (cosine of the mean embedding) to the new concept's. The
    embedding is the example encoder of an example-conditioned generator (``--generator``),
    so this baseline reads exactly what the generator reads; every training concept's
    examples are made by the task with a fixed seed."""

    SEED = 20_240_711

    def __init__(
        self, path: str | Path, data: str | Path, registries: Any = None, **_: Any
    ) -> None:
        from denoised_weights.generators.diffusion import DiffusionGenerator

        super().__init__(data)
        self.generator = DiffusionGenerator(path, registries=registries)
        self.path = self.generator.path
        if not self.generator.reads_examples:
            raise DnwError(
                "--init nearest-examples needs a generator that reads examples "
                f"(dnw fit --conditioning examples); {path} reads prompts only"
            )
        self._bank: tuple[torch.Tensor, list[str]] | None = None

    @torch.no_grad()
    def embed(self, data: Any) -> torch.Tensor:
        """The normalised mean embedding of the first ``n_examples`` examples of ``data``."""
        cond = self.generator.conditioner
        n = cond.n_examples
        tokens = cond.examples({k: v[:n] for k, v in data.items()})
        return torch.nn.functional.normalize(tokens.mean(0), dim=-1)

    def bank(self, task: Any, arch: Any) -> tuple[torch.Tensor, list[str]]:
        if self._bank is None:
            owners = self.dataset.concepts
            n = self.generator.conditioner.n_examples
            vectors = [
                self.embed(
                    task.make_data(
                        task.get_concept(c), arch=arch, split="train", n=n, seed=self.SEED
                    )
                )
                for c in owners
            ]
            self._bank = (torch.stack(vectors), owners)
        return self._bank

    def nearest_concept(self, data: Any, task: Any, arch: Any) -> tuple[str, float]:
        vectors, owners = self.bank(task, arch)
        sims = vectors @ self.embed(data)
        best = int(torch.argmax(sims))
        return owners[best], float(sims[best])

    def generate(self, prompt: str, *, seed: int = 0) -> StateDict:
        raise DnwError(
            "--init nearest-examples retrieves by the new concept's "
            "examples: fine-tune on data (--pairs DIR or --concept)"
        )

    def initialise(
        self,
        prompt: str,
        *,
        arch: TargetArchitecture | None = None,
        task: Any = None,
        data: Any = None,
        seed: int = 0,
        **_: Any,
    ) -> StateDict:
        if task is None or arch is None or not data:
            return self.generate(prompt, seed=seed)
        concept, _ = self.nearest_concept(data, task, arch)
        return self.dataset.load_concept(concept)[-1]


class ScoredExamplesInit(_DatasetInit):
    """Retrieval by examples, scored: of the dataset's stored LoRAs (each concept's final
    checkpoint, or every checkpoint with ``checkpoints="all"``), the one whose task loss on the
    new concept's first ``n_examples`` examples is lowest. Forward passes only, no gradient
    step: the strongest zero-shot use of a stored LoRA and the same examples a generator that
    reads examples gets (its default ``n_examples``: 8)."""

    def __init__(
        self, data: str | Path, n_examples: int = 8, checkpoints: str = "last", **_: Any
    ) -> None:
        super().__init__(data)
        if checkpoints not in ("last", "all"):
            raise DnwError(
                f"scored-examples: checkpoints must be 'last' or 'all', not {checkpoints!r}"
            )
        if n_examples < 1:
            raise DnwError(f"scored-examples: n_examples must be at least 1, got {n_examples}")
        self.n_examples = n_examples
        self.checkpoints = checkpoints

    @cached_property
    def candidates(self) -> list[tuple[str, StateDict]]:
        """``(concept, state)`` of every stored LoRA this baseline scores."""
        out = []
        for concept in self.dataset.concepts:
            states = self.dataset.load_concept(concept)
            out += [(concept, s) for s in (states if self.checkpoints == "all" else states[-1:])]
        return out

    @torch.no_grad()
    def scores(
        self, arch: TargetArchitecture, model: nn.Module, task: Any, data: Mapping[str, Any]
    ) -> list[tuple[str, float]]:
        """``(concept, task loss on the examples)`` of every candidate, in dataset order."""
        from denoised_weights.core.lora import functional_forward, lora_parameter_names

        device = next(model.parameters()).device
        batch = {k: v[: self.n_examples].to(device) for k, v in data.items()}
        names = lora_parameter_names(model)
        if not self.candidates:
            raise DnwError(f"scored-examples: {self.dataset.path} holds no LoRA to score")
        missing = [k for k in self.candidates[0][1] if k not in names]
        if missing:
            raise DnwError(
                f"scored-examples: the dataset's LoRAs have tensors the network lacks "
                f"({missing[0]}); use a dataset collected for this network"
            )
        was = model.training
        model.eval()
        try:
            out = []
            for concept, state in self.candidates:
                params = {names[k]: v.to(device) for k, v in state.items()}
                loss = task.loss(functional_forward(arch, model, params, batch), batch)
                out.append((concept, float(loss)))
            return out
        finally:
            model.train(was)

    def generate(self, prompt: str, *, seed: int = 0) -> StateDict:
        raise DnwError(
            "--init scored-examples scores the stored LoRAs on the new concept's "
            "examples: fine-tune on data (--pairs DIR or --concept)"
        )

    def initialise(
        self,
        prompt: str,
        *,
        arch: TargetArchitecture | None = None,
        model: nn.Module | None = None,
        task: Any = None,
        data: Any = None,
        seed: int = 0,
        **_: Any,
    ) -> StateDict:
        if arch is None or model is None or task is None or not data:
            return self.generate(prompt, seed=seed)
        scores = self.scores(arch, model, task, data)
        best = min(range(len(scores)), key=lambda i: scores[i][1])
        return {k: v.clone() for k, v in self.candidates[best][1].items()}


class NoisyNearestInit(NearestInit):
    """Nearest + noise with the dataset's per-tensor spread times ``scale``."""

    def __init__(self, data: str | Path, scale: float = 1.0, **kw: Any) -> None:
        super().__init__(data, **kw)
        self.scale = scale

    def generate(self, prompt: str, *, seed: int = 0) -> StateDict:
        state = super().generate(prompt, seed=seed)
        g = torch.Generator().manual_seed(seed)
        return {
            k: v + torch.randn(v.shape, generator=g) * self.spread[k] * self.scale
            for k, v in state.items()
        }


def _pad_columns(x: torch.Tensor, r: int) -> torch.Tensor:
    """Zero columns up to ``r`` (a layer with fewer outputs or inputs than the LoRA rank has
    fewer than ``r`` singular directions; the extra rank components stay zero)."""
    return torch.nn.functional.pad(x, (0, r - x.shape[1])) if x.shape[1] < r else x


class _SigmaB(nn.Module):
    """lora_B.weight = U · diag(σ), reshaped; σ is the only trainable parameter."""

    def __init__(self, u: torch.Tensor, sigma: torch.Tensor, shape: torch.Size) -> None:
        super().__init__()
        self.register_buffer("u", u)
        self.sigma = nn.Parameter(sigma.clone())
        self.shape = tuple(shape)

    def forward(self, _original: torch.Tensor) -> torch.Tensor:
        return (self.u * self.sigma).reshape(self.shape)


class FineInit(FittedSteps, _DatasetInit):
    """FINE: shared per-layer bases from the dataset; Σ fitted on the new concept's pairs."""

    def __init__(
        self, data: str | Path, fit_steps: int = 20, lr: float = 1e-2, batch_size: int = 8, **_: Any
    ) -> None:
        super().__init__(data)
        self.fit_steps = fit_steps
        self.lr = lr
        self.batch_size = batch_size

    @cached_property
    def bases(self) -> dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Per LoRA layer: ``(U [out, r], V [in, r], mean σ [r])``."""
        from denoised_weights.core.lora import lora_products

        products = [lora_products(s) for _, s in self.states]
        bases = {}
        for layer in products[0]:
            r = self.mean_state[f"{layer}.lora_A.weight"].shape[0]
            deltas = [p[layer] for p in products]
            u = _pad_columns(
                torch.linalg.svd(torch.cat(deltas, dim=1), full_matrices=False)[0][:, :r], r
            )
            v = _pad_columns(
                torch.linalg.svd(torch.cat(deltas, dim=0), full_matrices=False)[2][:r].T, r
            )
            sigma = torch.stack([torch.diagonal(u.T @ d @ v) for d in deltas]).mean(0)
            bases[layer] = (u.float(), v.float(), sigma.float())
        return bases

    def generate(self, prompt: str, *, seed: int = 0) -> StateDict:
        """Without pairs: the bases with the dataset's mean Σ."""
        state = {k: v.clone() for k, v in self.mean_state.items()}
        for layer, (u, v, sigma) in self.bases.items():
            a_key, b_key = f"{layer}.lora_A.weight", f"{layer}.lora_B.weight"
            state[a_key] = v.T.reshape(state[a_key].shape).contiguous()
            state[b_key] = (u * sigma).reshape(state[b_key].shape).contiguous()
        return state

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
    ) -> StateDict:
        state = self.generate(prompt, seed=seed)
        if not self.fits_here(data, arch, model):
            return state
        return fit_sigma(
            state,
            self.bases,
            arch=arch,
            model=model,
            data=data,
            carry=carry,
            seed=seed,
            steps=self.fit_steps,
            lr=self.lr,
            batch_size=self.batch_size,
        )


def fit_sigma(
    state: StateDict,
    bases: Mapping[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    *,
    arch: TargetArchitecture,
    model: nn.Module,
    data: Mapping[str, torch.Tensor],
    carry: Mapping[str, torch.Tensor] | None,
    seed: int,
    steps: int,
    lr: float,
    batch_size: int,
) -> StateDict:
    """FINE's fit: with ``lora_B = U·diag(σ)`` per layer and everything else frozen, train
    only σ for ``steps`` architecture training steps on ``data``; returns the LoRA state."""
    from torch.nn.utils import parametrize

    from denoised_weights.core.interfaces import data_size
    from denoised_weights.core.lora import load_lora_state, lora_state

    model = copy.deepcopy(model)
    load_lora_state(model, state)
    for p in model.parameters():
        p.requires_grad_(False)
    wrapped = []
    for layer, (u, _, sigma) in bases.items():
        module = model.get_submodule(layer).lora_B["default"]
        device = module.weight.device
        parametrize.register_parametrization(
            module, "weight", _SigmaB(u.to(device), sigma.to(device), module.weight.shape)
        )
        module.parametrizations.weight.original.requires_grad_(False)
        wrapped.append(module)
    n = data_size(data)
    g = torch.Generator().manual_seed(seed)

    def batches(_: int) -> dict[str, torch.Tensor]:
        idx = torch.randint(n, (min(batch_size, n),), generator=g)
        return {k: v[idx] for k, v in data.items()}

    train_steps(arch, model, batches, steps=steps, lr=lr, carry=carry, seed=seed, desc="fit σ")
    for module in wrapped:
        parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
    return {k: v.cpu() for k, v in lora_state(model).items()}


class _OracleInit(_DatasetInit):
    """Reference inits that know the new concept's true family and parameter values (an
    oracle: a user has only the prompt). They resolve the prompt through the task, so they
    work only where the pipeline passes the task (fine-tuning, step 0, the benchmark)."""

    def __init__(self, data: str | Path, registries: Any = None, **_: Any) -> None:
        super().__init__(data)
        self.registries = registries
        self._cache: dict[str, Any] = {}

    def _dataset_concepts(self, task: Any) -> list[Any]:
        if "concepts" not in self._cache:
            self._cache["concepts"] = [task.get_concept(c) for c in self.dataset.concepts]
        return self._cache["concepts"]

    def _fallback(self, prompt: str, seed: int) -> StateDict:
        nearest = self._cache.setdefault(
            "nearest", NearestInit(self.dataset.path, registries=self.registries)
        )
        return nearest.generate(prompt, seed=seed)

    def _family_peers(self, task: Any, target: Any) -> list[tuple[Any, float]]:
        """Dataset concepts of the target's family with their parameter distance to it (each
        parameter scaled by its spread among them)."""
        peers = [c for c in self._dataset_concepts(task) if c.family == target.family and c.params]
        if not peers or not target.params:
            return []
        names = [k for k, _ in target.params]
        values = {k: [dict(c.params).get(k, 0.0) for c in peers] for k in names}
        spread = {k: (max(v) - min(v)) or 1.0 for k, v in values.items()}
        want = dict(target.params)
        return [
            (c, sum(abs(dict(c.params).get(k, 0.0) - want[k]) / spread[k] for k in names))
            for c in peers
        ]

    def generate(self, prompt: str, *, seed: int = 0) -> StateDict:
        raise DnwError(
            f"{type(self).__name__} is an oracle: it needs the task to know "
            "the concept; use it through finetune, compare or the benchmark"
        )


class NearestParamInit(_OracleInit):
    """Oracle retrieval: the trained LoRA of the dataset concept of the same family whose
    parameter values are closest (no same-family concept: the nearest by prompt)."""

    def initialise(self, prompt: str, *, task: Any = None, seed: int = 0, **_: Any) -> StateDict:
        if task is None:
            return self.generate(prompt, seed=seed)
        peers = self._family_peers(task, task.get_concept(prompt))
        if not peers:
            return self._fallback(prompt, seed)
        best = min(peers, key=lambda p: p[1])[0]
        return self.dataset.load_concept(best.id)[-1]


class InterpolateInit(_OracleInit):
    """Oracle interpolation: along the one parameter in which the concept differs from
    same-family dataset concepts, the LoRAs of the two trained values that bracket its value,
    mixed linearly by position (beyond the trained range, or with no such pair: the nearest
    by parameters, then by prompt)."""

    def initialise(self, prompt: str, *, task: Any = None, seed: int = 0, **_: Any) -> StateDict:
        if task is None:
            return self.generate(prompt, seed=seed)
        target = task.get_concept(prompt)
        peers = self._family_peers(task, target)
        if not peers:
            return self._fallback(prompt, seed)
        want = dict(target.params)
        for name in want:  # the concept's parameter that its peers vary in, the others equal
            line = [
                c
                for c, _ in peers
                if all(
                    abs(dict(c.params).get(k, 0.0) - v) < 1e-9 for k, v in want.items() if k != name
                )
            ]
            below = [c for c in line if dict(c.params)[name] < want[name]]
            above = [c for c in line if dict(c.params)[name] > want[name]]
            if below and above:
                lo = max(below, key=lambda c: dict(c.params)[name])
                hi = min(above, key=lambda c: dict(c.params)[name])
                a, b = dict(lo.params)[name], dict(hi.params)[name]
                w = (want[name] - a) / (b - a)
                s_lo, s_hi = (
                    self.dataset.load_concept(lo.id)[-1],
                    self.dataset.load_concept(hi.id)[-1],
                )
                return {k: (1 - w) * s_lo[k] + w * s_hi[k] for k in s_lo}
        best = min(peers, key=lambda p: p[1])[0]
        return self.dataset.load_concept(best.id)[-1]

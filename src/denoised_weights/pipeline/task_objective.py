"""Training a weight generator on what its weights do (``dnw fit --objective task|both``).

Each step draws concepts from the task's catalogue at random values of the training ranges
(``Task.sample_concept``: never a held-out value), makes a fresh batch of each concept's data,
and asks the generator for every block of each concept's LoRA in one batched one-step
estimate. The blocks are un-centred and un-blocked differentiably, put in place of the frozen
base's adapter with a functional call (no copies of the network), and the task's own loss
(``Task.loss``: L1 for image translation, cross-entropy for a classifier) is backpropagated into
the generator. Draws are seeded by the step, so a resumed fit sees what an unbroken one saw.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import nn

from denoised_weights.core.interfaces import Concept, TargetArchitecture, Task
from denoised_weights.core.lora import functional_forward
from denoised_weights.generators.diffusion import DEFAULT_TIMESTEP, one_step

#: concepts and examples a validation of the task loss uses (fixed draws)
VAL_CONCEPTS, VAL_EXAMPLES = 8, 16


class Draw(NamedTuple):
    """One sampled concept of a step: its prompt, the data the loss is computed on and, for
    an example-conditioned generator, the (disjoint) examples it reads."""

    concept: Concept
    prompt: str
    data: dict[str, torch.Tensor]
    examples: dict[str, torch.Tensor] | None = None


class TaskObjective:
    """The task loss of the generator's weights for concepts drawn from the task's catalogue."""

    def __init__(
        self, task: Task, arch: TargetArchitecture, base: Any, fit: Any, *, fast: bool = True
    ) -> None:
        from denoised_weights.core.lora import apply_lora, lora_parameter_names
        from denoised_weights.pipeline.base import load_base

        self.task, self.arch, self.fit = task, arch, fit
        self.config, self.device = fit.config, fit.device
        model, _ = load_base(base, arch, device=fit.device)
        model = apply_lora(model, arch.lora_spec(), fast=fast).eval()
        model.requires_grad_(False)
        self.model = model
        self.names = lora_parameter_names(model)
        bd = fit.bd
        self.offset = (
            bd.mean_blocks if self.config.center else torch.zeros_like(bd.mean_blocks)
        ).to(fit.device)
        self.scale = bd.scale_blocks.to(fit.device)
        self.sampled: list[list[Any]] = []  # [step, concept id, prompt] of every draw
        self._val = self._draw(
            torch.Generator().manual_seed(4_242_421), VAL_CONCEPTS, VAL_EXAMPLES, "eval"
        )

    @property
    def n_examples(self) -> int:
        """Examples per draw the generator reads (made beside, and disjoint from, those the
        loss is computed on); 0 for a text-conditioned generator."""
        cond = self.fit.conditioner
        return cond.n_examples if cond is not None and cond.reads_examples else 0

    def _draw(self, g: torch.Generator, k: int, n: int, split: str) -> list[Draw]:
        draws = []
        extra = self.n_examples
        for _ in range(k):
            concept = self.task.sample_concept(g)
            prompt = concept.prompts[int(torch.randint(len(concept.prompts), (1,), generator=g))]
            seed = int(torch.randint(2**31 - 1, (1,), generator=g))
            data = self.task.make_data(concept, arch=self.arch, split=split, n=n + extra, seed=seed)
            examples = {key: value[:extra] for key, value in data.items()} if extra else None
            loss_data = {key: value[extra:] for key, value in data.items()} if extra else data
            draws.append(Draw(concept, prompt, loss_data, examples))
        return draws

    def states(
        self, model: nn.Module, draws: list[Draw], seed: int, drop: torch.Tensor | None = None
    ) -> list[dict[str, torch.Tensor]]:
        """Differentiable LoRA states, one per draw, from one batched one-step estimate
        conditioned on each draw's prompt and/or examples."""
        bd, dev, kind = self.fit.bd, self.device, self.config.prediction_type
        n, b, k = bd.n_blocks, bd.block_size, len(draws)
        cond = self.fit.conditioner
        if cond is None:
            tokens, mask = bd.encoder.encode([d.prompt for d in draws])
        else:  # each concept read once; its blocks share it
            examples = [d.examples for d in draws] if cond.reads_examples else None
            tokens, mask = cond([d.prompt for d in draws], examples, device=dev, drop=drop)
        shared = torch.arange(k, device=dev).repeat_interleave(n)
        noise = torch.randn(k * n, b, generator=torch.Generator().manual_seed(seed)).to(dev)
        start = None if self.fit.gen_start is None else self.fit.gen_start.repeat(k, 1)
        index = torch.arange(n, device=dev).repeat(k)
        x0 = one_step(
            model,
            self.fit.alphas,
            kind,
            start,
            noise,
            DEFAULT_TIMESTEP[kind],
            index,
            tokens.to(dev),
            mask.to(dev),
            shared,
        )
        blocks = self.offset + self.scale * x0.view(k, n, b)
        return [bd.blocker.from_blocks_differentiable(blocks[i]) for i in range(k)]

    def _loss(
        self, model: nn.Module, draws: list[Draw], seed: int, drop: torch.Tensor | None = None
    ) -> torch.Tensor:
        states = self.states(model, draws, seed, drop)
        losses = []
        for state, draw in zip(states, draws, strict=True):
            params = {self.names[key]: value for key, value in state.items() if key in self.names}
            batch = {key: value.to(self.device) for key, value in draw.data.items()}
            out = functional_forward(self.arch, self.model, params, batch)
            losses.append(self.task.loss(out, batch))
        return torch.stack(losses).mean()

    def loss(self, step: int) -> torch.Tensor:
        """The task loss of training step ``step`` (its draws fixed by the seed, step and rank)."""
        fit, config = self.fit, self.config
        g = torch.Generator().manual_seed(config.seed * 7_919_003 + step * fit.world + fit.rank)
        draws = self._draw(g, config.task_concepts, config.task_batch, "train")
        self.sampled += [[step, d.concept.id, d.prompt] for d in draws]
        seed = int(torch.randint(2**31 - 1, (1,), generator=g))
        drop = fit.conditioner.draw_drops(len(draws), g) if fit.conditioner is not None else None
        return self._loss(fit.train_model, draws, seed=seed, drop=drop)

    @torch.no_grad()
    def validate(self, model: nn.Module) -> float:
        """The task loss on fixed draws (eval-split data of sampled training concepts)."""
        return float(self._loss(model, self._val, seed=12345))

    def forget_after(self, step: int) -> None:
        """Drop the draws logged after ``step`` (a resumed fit redraws them)."""
        self.sampled = [s for s in self.sampled if s[0] < step]

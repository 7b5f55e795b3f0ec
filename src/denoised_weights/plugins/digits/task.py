"""The digits task: classify scikit-learn's handwritten digits under described transformations.

A concept is a transformation of the *input* image (see :mod:`.concepts`); the label stays the
digit. Data ``{"x": [n, 1, 16, 16] float32 in [0, 1], "y": [n] int64}``; the network outputs
logits, scored by accuracy (higher is better) and cross-entropy.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import cached_property
from pathlib import Path
from typing import Any

from denoised_weights.core.errors import DnwError, UnknownNameError
from denoised_weights.core.interfaces import (
    TRAIN,
    Concept,
    TargetArchitecture,
    Task,
    TaskData,
    TaskPreset,
)
from denoised_weights.plugins.digits import concepts as catalogue
from denoised_weights.plugins.digits.transforms import ORDER

# Measured with one torch thread on this 2-core machine while other jobs kept it busy (load
# ~4), so a quiet machine is faster. A training step of the small network (widths 8-16-32,
# GroupNorm, rank 4) on a batch of 32: ~11-13 ms full, ~20 ms LoRA (peft's extra convs cost
# more than the frozen base saves on a network this small); tiny (4-8, rank 2), batch 16:
# ~5-8 ms full, ~10 ms LoRA. Through the pipeline itself: base 15.8 ms a step (evaluation
# included); collection 3.9 s a concept at 150 steps + 3 x 20 kept (8 concepts, 31 s); the
# generator (small model, blocks of 256, 6 blocks an adapter) 0.42 s a step at batch 64 and
# 1.3 s at batch 256. The small preset, one worker:
#   base      4000 steps x 16 ms                                            ~  65 s
#   collect   211 concepts x <=160 steps (<=100 + 3 x 20) x ~20 ms, with
#             evaluations and checkpoints: ~3.3 s a concept                 ~ 700 s
#   fit       1500 steps x 0.42 s (batch 64; ~3800 blocks: 25 epochs)       ~ 630 s
#   finetune  8 concepts x 2 seeds x 7 inits = 112 runs x 200 steps x 20 ms ~ 450 s
#             + ~16 evaluations of 128 examples a run                       ~  35 s
#   total ~ 31 minutes; ~21 with two 1-thread workers for collect and finetune.
SMALL = TaskPreset(
    arch="small",
    base={"steps": 4000, "pairs_per_concept": 32, "batch_size": 32},
    collect={
        "checkpoints": 3,
        "max_steps": 100,
        "eval_every": 20,
        "interval": 20,
        "n_train": 256,
        "n_eval": 64,
        "batch_size": 32,
        "lr": None,
        "concepts": None,
    },
    fit={"max_steps": 1500, "batch_size": 64, "val_every": 250, "prediction_type": "sample"},
    concepts=8,
    seeds=2,
    max_steps=200,
    eval_every=25,
    n_train=256,
    n_eval=128,
    batch_size=32,
    metrics=("accuracy", "cross-entropy"),
    snapshot_at=(0, 20, 100),
    # scratch reaches 0.83 in 200 steps, below the base's own 0.85 (every LoRA init would start
    # past the target): the target is what the standard LoRA fine-tune reaches in the budget
    target_init="standard",
)

TINY = TaskPreset(
    arch="tiny",
    base={"steps": 40, "pairs_per_concept": 4, "batch_size": 16},
    collect={
        "checkpoints": 2,
        "max_steps": 12,
        "eval_every": 6,
        "interval": 3,
        "n_train": 32,
        "n_eval": 16,
        "batch_size": 16,
        "lr": None,
        "concepts": 4,
    },
    fit={"max_steps": 20, "batch_size": 32, "val_every": 10, "prediction_type": "sample"},
    concepts=2,
    seeds=1,
    max_steps=12,
    eval_every=6,
    n_train=32,
    n_eval=16,
    batch_size=16,
    metrics=("accuracy", "cross-entropy"),
    snapshot_at=(0, 6),
    step0_all=False,
    target_init="standard",
)


class DigitsTask(Task):
    """Handwritten digits (scikit-learn, 8x8 upsampled to 16x16) under input transformations."""

    name = "digits"
    default_example_encoder = "labelled-cnn"
    target_metric = "accuracy"
    higher_is_better = True
    metrics = ("accuracy", "cross-entropy")
    default_architecture = "digit-cnn"
    default_preset = "small"
    input_keys = ("x",)
    target_key = "y"

    def __init__(self, exclude_families: str | Iterable[str] | None = None) -> None:
        """``exclude_families`` (``"rotate,blur"``): every concept using one of these
        transformations is held out (kind "family"), so the base, the weight dataset and the
        generator never see them: the leave-family-out split."""
        self.exclude_families = catalogue.parse_families(exclude_families)
        self.options: dict[str, Any] = {}
        if self.exclude_families:  # in catalogue order, so equal sets give equal options
            names = [n for n in ORDER if n in self.exclude_families]
            self.options["exclude_families"] = ",".join(names)

    @cached_property
    def _concepts(self) -> list[Concept]:
        return [catalogue.excluding(c, self.exclude_families) for c in catalogue.concepts()]

    @cached_property
    def _train(self) -> list[Concept]:
        train = [c for c in self._concepts if c.split == TRAIN]
        if not train:
            raise DnwError("exclude_families holds out every transformation: nothing to train")
        return train

    def concepts(self, split: str | None = None) -> list[Concept]:
        if split is not None:
            catalogue.concepts(split)  # an unknown split: a one-line error
        return [c for c in self._concepts if split is None or c.split == split]

    def get_concept(self, id_or_prompt: str) -> Concept:
        """A catalogue concept by id or prompt, or any ``family-value[+...]`` id (such as a
        sampled ``rotate-23.7``), whose split follows the catalogue's rules."""
        found = catalogue.find(id_or_prompt)
        if found is None:
            try:
                found = catalogue.parse_concept(id_or_prompt)
            except UnknownNameError:  # not an id: a prompt, or an error naming close ids
                found = super().get_concept(id_or_prompt)
        return catalogue.excluding(found, self.exclude_families)

    def make_data(
        self,
        concept: Concept,
        *,
        arch: TargetArchitecture | None = None,
        split: str = "train",
        n: int,
        seed: int,
    ) -> TaskData:
        from denoised_weights.plugins.digits.source import IMAGE_SIZE, sample_sources
        from denoised_weights.plugins.digits.transforms import apply_steps, noise_generator

        size = arch.config.get("image_size", IMAGE_SIZE) if arch is not None else IMAGE_SIZE
        if size != IMAGE_SIZE:
            raise DnwError(
                f"the digits task makes {IMAGE_SIZE}x{IMAGE_SIZE} images; "
                f"use an architecture with image_size {IMAGE_SIZE}, not {size}"
            )
        x, y, _ = sample_sources(split, n, seed)
        steps = catalogue.steps_of(concept)
        x = apply_steps(x, steps, noise_generator("digits-noise", split, seed))
        return {"x": x.contiguous(), "y": y}

    def sample_concept(self, generator: Any) -> Concept:
        return catalogue.sample_concept(generator, self._train)

    def loss(self, output: Any, batch: Mapping[str, Any]) -> Any:
        """Cross-entropy of the logits against the digit labels."""
        import torch.nn.functional as F

        return F.cross_entropy(output, batch["y"])

    @property
    def presets(self) -> dict[str, TaskPreset]:
        return {"tiny": TINY, "small": SMALL}

    def preview(
        self, data: TaskData, outputs: Mapping[str, Any], path: Any, title: str = ""
    ) -> Path:
        from denoised_weights.plugins.digits.preview import preview_grid

        return preview_grid(data["x"], data["y"], outputs, path, title=title)

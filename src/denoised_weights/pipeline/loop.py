"""The evaluation schedule of base pretraining and fine-tuning, on the training engine.

Batches are drawn by ``batch_fn(step)`` (seeded by the step), so a run resumed from a
checkpoint sees the same batches as an unbroken one. The checkpoint holds what training changes
(the trainable parameters and buffers, the architecture's training state), the curve so far and
the RNG state (:mod:`denoised_weights.core.engine`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from denoised_weights.core.engine import (
    Callback,
    TrainableState,
    Trainer,
    TrainingDiverged,
    architecture_step,
    to_device,
)
from denoised_weights.core.interfaces import TargetArchitecture

#: steps between checkpoints when no evaluation falls in between
CHECKPOINT_EVERY = 200

__all__ = [
    "CHECKPOINT_EVERY",
    "TrainingDiverged",
    "dense_schedule",
    "evaluation_cost",
    "steps_to_reach",
    "to_device",
    "train_loop",
]


class EvalSchedule(Callback):
    """Evaluate (and checkpoint) at step 0, every ``every`` steps, at ``extra`` steps and at
    the end; each evaluation becomes a curve point."""

    name = "curve"

    def __init__(
        self,
        every: int,
        extra: Sequence[int],
        show: str | None,
        on_record: Callable[[int], None] | None,
    ) -> None:
        self.every, self.extra, self.show, self.on_record = every, set(extra), show, on_record
        self.points: list[dict[str, Any]] = []

    def on_step(self, trainer: Trainer) -> None:
        step = trainer.step
        if step and step % self.every and step != trainer.max_steps and step not in self.extra:
            return
        values = trainer.evaluate()
        self.points.append(
            {"step": step, "train_seconds": round(trainer.train_seconds, 4), **values}
        )
        if self.on_record is not None:
            self.on_record(step)
        trainer.request_checkpoint()
        if self.show and values.get(self.show) is not None:
            trainer.show({self.show: values[self.show]})

    def state_dict(self) -> dict[str, Any]:
        return {"points": self.points}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.points = list(state.get("points", []))


def train_loop(
    *,
    arch: TargetArchitecture,
    model: nn.Module,
    tstate: Any,
    batch_fn: Callable[[int], Mapping[str, torch.Tensor]],
    max_steps: int,
    eval_every: int,
    evaluate: Callable[[nn.Module], dict[str, float | None]] | None,
    ckpt_dir: Path,
    desc: str,
    device: torch.device,
    extra_seconds: float = 0.0,
    eval_at: Sequence[int] = (),
    on_record: Callable[[int, nn.Module], None] | None = None,
    show: str | None = None,
) -> tuple[list[dict[str, Any]], Trainer]:
    """Train to ``max_steps``, evaluating (and checkpointing) at step 0, every ``eval_every``
    steps, at the steps in ``eval_at`` and at the end; ``on_record(step, model)`` runs after
    each evaluation. ``show`` names the metric the progress bar displays.

    Returns the curve points (each has ``step``, ``train_seconds``: training plus
    ``extra_seconds`` such as init time, evaluation excluded, and the metrics) and the
    finished :class:`Trainer` (its ``eval_seconds``, ``evaluations``).
    """
    schedule = EvalSchedule(
        eval_every, eval_at, show, (lambda step: on_record(step, model)) if on_record else None
    )
    trainer = Trainer(
        architecture_step(arch, model, tstate, device),
        max_steps=max_steps,
        batches=batch_fn,
        parts={"model": TrainableState(model), "training": tstate},
        ckpt_dir=ckpt_dir,
        evaluate=(lambda: evaluate(model)) if evaluate else None,
        callbacks=[schedule],
        checkpoint_every=CHECKPOINT_EVERY,
        extra_seconds=extra_seconds,
        desc=desc,
    ).run()
    return schedule.points, trainer


def evaluation_cost(trainer: Trainer) -> dict[str, Any]:
    """What a run spent evaluating, for its curve: seconds (all sessions of a resumed run),
    evaluations, seconds per evaluation."""
    n = trainer.evaluations
    return {
        "eval_seconds": round(trainer.eval_seconds, 3),
        "evaluations": n,
        "seconds_per_evaluation": round(trainer.eval_seconds / n, 4) if n else None,
    }


def steps_to_reach(
    points: Sequence[dict[str, Any]],
    target: float,
    key: str = "l1",
    sustained: float = 0.0,
    higher_is_better: bool = False,
) -> dict[str, Any] | None:
    """The first curve point whose ``key`` is at least as good as ``target`` (None if never).

    With ``sustained`` > 0: the first point from which every later point stays within
    ``sustained`` (relative) of ``target``, so a single lucky dip of a noisy curve does not count.
    """
    sign = -1.0 if higher_is_better else 1.0
    values = [p.get(key) for p in points]
    for i, p in enumerate(points):
        if values[i] is None or sign * values[i] > sign * target:
            continue
        slack = abs(target) * sustained
        if sustained <= 0 or all(
            v is not None and sign * v <= sign * target + slack for v in values[i:]
        ):
            return p
    return None


def dense_schedule(max_steps: int, every: int) -> list[int]:
    """Evaluation steps dense early (where a good init shows) and every ``every`` later."""
    early = [s for s in (5, 10, 15, 20, 30, 40, 60, 80, 100, 130, 160, 200) if s < max_steps]
    return sorted(set(early) | set(range(every, max_steps + 1, every)) | {max_steps})

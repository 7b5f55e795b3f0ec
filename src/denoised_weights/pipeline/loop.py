"""The training loop every stage shares: steps, evaluation, checkpoints, divergence guard.

Batches are drawn by ``batch_fn(step)`` (seeded by the step), so a run resumed from a
checkpoint sees the same batches as an unbroken one. The checkpoint holds the model and the
architecture's training state (``state_dict()``), the curve so far and the RNG state.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from denoised_weights.core import interrupt
from denoised_weights.core.checkpoint import load_checkpoint, save_checkpoint
from denoised_weights.core.errors import DnwError
from denoised_weights.core.interfaces import TargetArchitecture

#: steps between checkpoints when no evaluation falls in between
CHECKPOINT_EVERY = 200


class TrainingDiverged(DnwError):
    """A loss became NaN or infinite: nothing after it is trusted or written."""


def check_losses(losses: Mapping[str, float], step: int) -> None:
    bad = {k: v for k, v in losses.items() if not math.isfinite(v)}
    if bad:
        name, value = next(iter(bad.items()))
        raise TrainingDiverged(
            f"training diverged at step {step} ({name} = {value}); nothing more was written: "
            "lower the learning rate (--lr) or check the inputs (a damaged base model?)"
        )


def to_device(batch: Mapping[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in batch.items()}


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
) -> list[dict[str, Any]]:
    """Train to ``max_steps``, evaluating (and checkpointing) at step 0, every ``eval_every``
    steps, at the steps in ``eval_at`` and at the end; ``on_record(step, model)`` runs after
    each evaluation. ``show`` names the metric the progress bar displays.

    Returns the curve points; each has ``step``, ``train_seconds`` (training plus
    ``extra_seconds`` such as init time, evaluation excluded) and the metrics.
    """
    parts = {"model": model, "training": tstate}
    meta = load_checkpoint(ckpt_dir, parts)
    step = meta["step"] if meta else 0
    train_seconds = meta["train_seconds"] if meta else extra_seconds
    points: list[dict[str, Any]] = meta["points"] if meta else []
    extra_evals = set(eval_at)

    def checkpoint() -> None:
        save_checkpoint(
            ckpt_dir, parts, {"step": step, "train_seconds": train_seconds, "points": points}
        )

    def record() -> None:
        values = evaluate(model) if evaluate else {}
        points.append({"step": step, "train_seconds": round(train_seconds, 4), **values})
        if on_record is not None:
            on_record(step, model)
        checkpoint()

    if not points:
        record()
    bar = tqdm(
        total=max_steps, initial=step, desc=desc, unit="step", dynamic_ncols=True, leave=False
    )
    while step < max_steps:
        interrupt.check()
        batch = to_device(batch_fn(step), device)
        t0 = time.perf_counter()
        losses = arch.training_step(model, tstate, batch)
        train_seconds += time.perf_counter() - t0
        check_losses(losses, step + 1)
        step += 1
        bar.update(1)
        if step % eval_every == 0 or step == max_steps or step in extra_evals:
            record()
            value = points[-1].get(show) if show else None
            if value is not None:
                bar.set_postfix({show: f"{value:.4f}"})
        elif step % CHECKPOINT_EVERY == 0:
            checkpoint()
    bar.close()
    return points


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

"""The training engine: the one loop every stage trains with.

It lives in the core so that every layer trains with it: the pipeline's stages and the
initialisers of :mod:`denoised_weights.generators` that fit a few coefficients.

Base pretraining, collection, fine-tuning, the generator's fit and the few-shot fitting loops
all run :class:`Trainer`. It owns what a loop has to get right once: the step counter, resuming
from a checkpoint (the parts' ``state_dict()``, the RNG, the stage's own state), the interrupt
flag, the divergence guard, progress, the wall-clock budget (decided on rank 0 and shared under
DDP, so ranks cannot disagree), and the time spent training versus evaluating. A stage says what
one step does (:func:`architecture_step` for a :class:`TargetArchitecture`, a closure for the
generator's fit) and hangs its schedule on :class:`Callback` objects: when to evaluate, when to
checkpoint, when to stop.

Order of events: on a fresh start the callbacks run once at step 0; then each training step is
followed by the callbacks for the new step, then a checkpoint if one was asked for (or
``checkpoint_every`` says so). A resumed run continues after the step its checkpoint was taken
at, so it sees the batches and makes the decisions an unbroken run would.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from denoised_weights.core import checkpoint, interrupt
from denoised_weights.core.errors import DnwError
from denoised_weights.core.interfaces import TargetArchitecture, overrides

#: what a step returns: losses and other figures, as tensors (read when needed) or floats
Logs = Mapping[str, "torch.Tensor | float"]


class TrainingDiverged(DnwError):
    """A loss became NaN or infinite: nothing after it is trusted or written."""


class Callback:
    """A piece of a stage's schedule. ``name`` keys its state in the checkpoint."""

    name = ""

    def on_step(self, trainer: Trainer) -> None:
        """At step 0 of a fresh run and after every training step (``trainer.step``)."""

    def on_end(self, trainer: Trainer) -> None:
        """After the last step (also after a stop or the time budget)."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class TrainableState:
    """A module's checkpoint part holding what training changes: the parameters that require
    gradients (a LoRA run's checkpoint leaves the frozen base, its buffers included, out; a
    network that trains whole is saved whole)."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module

    def state_dict(self) -> dict[str, torch.Tensor]:
        params = dict(self.module.named_parameters())
        trainable = {n for n, p in params.items() if p.requires_grad}
        if len(trainable) == len(params):  # the whole network trains: its buffers change too
            return self.module.state_dict()
        return {k: v for k, v in self.module.state_dict().items() if k in trainable}

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        own = self.state_dict()
        missing = sorted(set(own) - set(state))
        if missing:
            raise KeyError(f"missing {missing[0]}")
        self.module.load_state_dict({k: state[k] for k in own}, strict=False)


class Trainer:
    """Runs ``step_fn`` from the current step to ``max_steps`` (or a stop).

    ``batches(step)``, when given, makes each step's input outside the timed part and
    ``step_fn`` receives it; otherwise ``step_fn`` receives the step index. ``parts`` (name ->
    anything with ``state_dict``/``load_state_dict``) and ``ckpt_dir`` make the run resumable;
    ``evaluate`` gives the stage's metrics (memoised per step, its time counted apart).
    """

    def __init__(
        self,
        step_fn: Callable[[Any], Logs],
        *,
        max_steps: int,
        batches: Callable[[int], Any] | None = None,
        parts: Mapping[str, Any] | None = None,
        ckpt_dir: Path | None = None,
        evaluate: Callable[[], Mapping[str, Any]] | None = None,
        callbacks: Iterable[Callback] = (),
        checkpoint_every: int | None = None,
        max_minutes: float | None = None,
        extra_seconds: float = 0.0,
        desc: str = "train",
        progress: bool = True,
        position: int = 0,
        rank: int = 0,
        world: int = 1,
    ) -> None:
        self.step_fn, self.batches, self.max_steps = step_fn, batches, max_steps
        self.parts, self.ckpt_dir = dict(parts or {}), ckpt_dir
        self._evaluate, self.callbacks = evaluate, list(callbacks)
        self.checkpoint_every, self.max_minutes = checkpoint_every, max_minutes
        self.desc, self.progress, self.position = desc, progress, position
        self.rank, self.world = rank, world
        self.step = 0
        self.train_seconds = extra_seconds
        self.eval_seconds = 0.0
        self.evaluations = 0
        self.last_logs: dict[str, Any] = {}
        self._wall_before = 0.0  # wall seconds of earlier (killed) sessions of this run
        self._started = time.perf_counter()
        self._stop = False
        self._want_checkpoint = False
        self._evaluated: tuple[int, dict[str, Any]] | None = None
        self._unchecked: list[tuple[int, Logs]] = []
        self._bar: Any = None

    # -- what callbacks use ----------------------------------------------------------------
    @property
    def wall_seconds(self) -> float:
        """Wall-clock seconds of this run so far, earlier sessions of a resumed run included."""
        return self._wall_before + time.perf_counter() - self._started

    def evaluate(self) -> dict[str, Any]:
        """The stage's metrics at the current step (evaluated once per step)."""
        if self._evaluate is None:
            return {}
        if self._evaluated is None or self._evaluated[0] != self.step:
            self.guard()
            t0 = time.perf_counter()
            values = dict(self._evaluate())
            self.eval_seconds += time.perf_counter() - t0
            self.evaluations += 1
            self._evaluated = (self.step, values)
        return dict(self._evaluated[1])

    def request_checkpoint(self) -> None:
        self._want_checkpoint = True

    def stop(self) -> None:
        """End the run after the current callbacks (no checkpoint: the stage writes its
        outputs)."""
        self._stop = True

    def show(self, values: Mapping[str, Any]) -> None:
        """Put figures on the progress bar."""
        if self._bar is not None:
            self._bar.set_postfix(
                {k: f"{v:.4f}" if isinstance(v, float) else v for k, v in values.items()}
            )

    def guard(self) -> None:
        """Raise :class:`TrainingDiverged` if a loss since the last check was not finite.
        Called before anything is written, so a diverged run writes nothing after it."""
        if not self._unchecked:
            return
        window, self._unchecked = self._unchecked, []
        flags = torch.stack(
            [
                torch.stack([torch.as_tensor(v, dtype=torch.float64).cpu() for v in logs.values()])
                .isfinite()
                .all()
                for _, logs in window
            ]
        )
        if bool(flags.all()):
            return
        step, logs = window[int((~flags).nonzero()[0])]
        name, value = next((k, float(v)) for k, v in logs.items() if not math.isfinite(float(v)))
        raise TrainingDiverged(
            f"training diverged at step {step} ({name} = {value}); nothing more was written: "
            "lower the learning rate (--lr, in a new --out folder) or check the inputs "
            "(a damaged base model?)"
        )

    # -- the loop --------------------------------------------------------------------------
    def run(self) -> Trainer:
        from tqdm.auto import tqdm

        fresh = not self._resume()
        self._bar = tqdm(
            total=self.max_steps,
            initial=self.step,
            desc=self.desc,
            unit="step",
            position=self.position,
            leave=False,
            dynamic_ncols=True,
            mininterval=2,
            disable=not self.progress or self.rank != 0,
        )
        try:
            if fresh:
                self._after_step()
            while not self._stop and self.step < self.max_steps:
                interrupt.check()
                if self._out_of_time():
                    break
                batch = self.batches(self.step) if self.batches is not None else self.step
                t0 = time.perf_counter()
                logs = self.step_fn(batch)
                self.train_seconds += time.perf_counter() - t0
                self.step += 1
                self.last_logs = dict(logs)
                if logs:
                    self._unchecked.append((self.step, logs))
                self._bar.update(1)
                self._after_step()
            self.guard()
            for cb in self.callbacks:
                cb.on_end(self)
        finally:
            self._bar.close()
            self._bar = None
        return self

    def _after_step(self) -> None:
        self._want_checkpoint = False
        for cb in self.callbacks:
            cb.on_step(self)
        if self._stop:
            return
        every = self.checkpoint_every
        if self._want_checkpoint or (every and self.step % every == 0 and self.step > 0):
            self.save()

    def _out_of_time(self) -> bool:
        """The wall-clock budget, decided on rank 0 and shared with every rank."""
        if self.max_minutes is None:
            return False
        over = self.wall_seconds / 60 >= self.max_minutes
        if self.world > 1:
            flag = broadcast_object(over if self.rank == 0 else None)
            over = bool(flag)
        return over

    # -- checkpoints -----------------------------------------------------------------------
    def save(self) -> None:
        if self.ckpt_dir is None or self.rank != 0:
            return
        self.guard()
        meta = {
            "step": self.step,
            "engine": {
                "train_seconds": self.train_seconds,
                "wall_seconds": self.wall_seconds,
                "eval_seconds": self.eval_seconds,
                "evaluations": self.evaluations,
            },
            "callbacks": {cb.name: cb.state_dict() for cb in self.callbacks if cb.name},
        }
        checkpoint.save_checkpoint(self.ckpt_dir, self.parts, meta)

    def _resume(self) -> bool:
        if self.ckpt_dir is None:
            return False
        meta = checkpoint.load_checkpoint(self.ckpt_dir, self.parts)
        if meta is not None and "engine" not in meta:
            raise DnwError(
                f"{self.ckpt_dir} holds a checkpoint of an older version; move that folder "
                "away to start this run over"
            )
        if self.world > 1:  # every rank must resume from the step rank 0 resumes from
            mine = None if meta is None else int(meta["step"])
            theirs = broadcast_object(mine)
            if mine != theirs:
                raise DnwError(
                    f"rank {self.rank} found {'no checkpoint' if mine is None else f'step {mine}'} "
                    f"in {self.ckpt_dir} where rank 0 resumes from "
                    f"{'nothing' if theirs is None else f'step {theirs}'}; run every rank on one "
                    "shared output folder"
                )
        if meta is None:
            return False
        self.step = int(meta["step"])
        engine = meta["engine"]
        self.train_seconds = engine["train_seconds"]
        self._wall_before = engine["wall_seconds"]
        self.eval_seconds = engine["eval_seconds"]
        self.evaluations = engine["evaluations"]
        states = meta.get("callbacks", {})
        for cb in self.callbacks:
            if cb.name:
                cb.load_state_dict(states.get(cb.name, {}))
        return True


def broadcast_object(value: Any) -> Any:
    """Rank 0's ``value`` on every rank (DDP)."""
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


# -- the step of a TargetArchitecture ------------------------------------------------------
def architecture_step(
    arch: TargetArchitecture, model: nn.Module, tstate: Any, device: torch.device | None = None
) -> Callable[[Mapping[str, torch.Tensor]], Logs]:
    """One training step of ``arch`` on a batch: each phase of ``training_phases`` is
    back-propagated and its optimiser stepped, in order. Architectures that implement only
    ``training_step`` (written before the engine) run that as it is."""
    phased = overrides(arch, "training_phases")

    def step(batch: Mapping[str, torch.Tensor]) -> Logs:
        if device is not None:
            batch = to_device(batch, device)
        if not phased:
            return arch.training_step(model, tstate, batch)
        logs: dict[str, Any] = {}
        for phase in arch.training_phases(model, tstate, batch):
            phase.optimizer.zero_grad(set_to_none=True)
            phase.loss.backward()
            phase.optimizer.step()
            logs.update(phase.logged())
        return logs

    return step


def to_device(batch: Mapping[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in batch.items()}

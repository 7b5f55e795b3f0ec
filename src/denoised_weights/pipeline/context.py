"""What every stage resolves first: registries, task, architecture, device, metrics, seeds."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from denoised_weights.core.device import resolve_device  # noqa: F401 - the stages import it here
from denoised_weights.core.errors import DnwError
from denoised_weights.core.plugins import Registries, default_registries

if TYPE_CHECKING:
    from denoised_weights.core.interfaces import Metric, TargetArchitecture, Task

DEFAULT_TASK = "image-translation"
#: seeds are combined with step numbers and concept hashes; keep them in a range torch takes
MAX_SEED = 2**32 - 1


def registries_or_default(registries: Registries | None) -> Registries:
    return registries if registries is not None else default_registries()


def resolve_task(
    task: str | Task | None, registries: Registries | None = None, **options: Any
) -> Task:
    """A task object: given, or created by name (default: image translation) with ``options``."""
    from denoised_weights.core.components import create_task
    from denoised_weights.core.interfaces import Task

    if isinstance(task, Task):
        return task
    return create_task(task or DEFAULT_TASK, registries=registries, **options)


def resolve_architecture(
    task: Task,
    arch: str | TargetArchitecture | None = None,
    preset: str | None = None,
    registries: Registries | None = None,
    **overrides: Any,
) -> TargetArchitecture:
    """The architecture: given, or created by name (default: the task's) and preset."""
    from denoised_weights.core.components import create_architecture
    from denoised_weights.core.interfaces import TargetArchitecture

    if isinstance(arch, TargetArchitecture):
        return arch
    name = arch or task.default_architecture
    if not name:
        raise DnwError(f"task {task.name!r} names no default architecture; pass --architecture")
    return create_architecture(
        name, preset or task.default_preset, registries=registries, **overrides
    )


def build_metrics(names: Sequence[str], registries: Registries | None = None) -> dict[str, Metric]:
    regs = registries_or_default(registries)
    return {name: regs.metrics.create(name) for name in names}


def metric_names(task: Task, names: Sequence[str] | None) -> list[str]:
    """The metrics to evaluate: ``names`` (default: the task's), the target metric first."""
    chosen = list(names) if names else list(task.metrics)
    return [task.target_metric, *[n for n in chosen if n != task.target_metric]]


def check_seed(seed: int) -> int:
    if not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise DnwError(f"--seed must be an integer from 0 to {MAX_SEED}, got {seed}")
    return seed


def check_lr(lr: float | None) -> float | None:
    if lr is not None and (not math.isfinite(lr) or lr <= 0 or lr > 10):
        raise DnwError(f"--lr must be a positive finite number up to 10, got {lr}")
    return lr


def better(a: float, b: float, higher_is_better: bool) -> bool:
    """Whether ``a`` is at least as good as ``b``."""
    return a >= b if higher_is_better else a <= b

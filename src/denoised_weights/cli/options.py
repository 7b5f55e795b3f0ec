"""Options shared by the pipeline commands, and parameter types that refuse bad numbers."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

MAX_SEED = 2**32 - 1


class FiniteFloat(click.ParamType):
    """A finite float in ``(low, high]`` (``nan`` and ``inf`` are refused)."""

    name = "float"

    def __init__(self, low: float = 0.0, high: float = 10.0) -> None:
        self.low, self.high = low, high

    def convert(self, value: Any, param: Any, ctx: Any) -> float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(number) or not self.low < number <= self.high:
            self.fail(
                f"{value} is not a finite number in ({self.low:g}, {self.high:g}]", param, ctx
            )
        return number


SEED = click.IntRange(0, MAX_SEED)
LR = FiniteFloat(0.0, 10.0)


def positive(maximum: int = 10**7) -> click.IntRange:
    return click.IntRange(1, maximum)


def task_options(f: Callable) -> Callable:
    """``--task``, ``--task-option KEY=VALUE`` (repeatable) and ``--photos`` (image translation)."""
    f = click.option("--photos", type=click.Path(file_okay=False, path_type=Path), default=None,
                     help="Your own photo folder (image-translation task).")(f)  # fmt: skip
    f = click.option("--task-option", "-T", "task_option", multiple=True, metavar="KEY=VALUE",
                     help="An option of the task's factory (repeatable).")(f)  # fmt: skip
    return click.option("--task", "task", default="image-translation", show_default=True,
                        help="Registered task (see 'dnw list tasks').")(f)  # fmt: skip


def parse_task_options(pairs: tuple[str, ...], photos: Path | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="--task-option")
        out[key.strip().replace("-", "_")] = value
    if photos is not None:
        out["photos_dir"] = str(photos)
    return out


def common(f: Callable) -> Callable:
    """``--device`` and ``--overwrite``."""
    f = click.option("--overwrite", is_flag=True,
                     help="Write into an existing output folder (replaces only what this command wrote there before).")(f)  # fmt: skip
    return click.option("--device", default="auto", show_default=True,
                        help="auto (CUDA when present, else CPU), cpu, cuda, cuda:N.")(f)  # fmt: skip


def arch_options(f: Callable) -> Callable:
    f = click.option("--arch-option", "-A", "arch_option", multiple=True, metavar="KEY=VALUE",
                     help="Override an architecture setting, e.g. -A rank=8 or -A shared_a=true (repeatable).")(f)  # fmt: skip
    f = click.option("--architecture", "-a", default=None, help="Registered architecture (default: the task's).")(f)  # fmt: skip
    return click.option("--preset", "-p", default=None, help="Architecture preset (default: the task's; e.g. tiny, small).")(f)  # fmt: skip


def parse_arch_options(pairs: tuple[str, ...]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs with JSON values where they parse (numbers, true/false), else text."""
    import json

    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="--arch-option")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def csv(text: str | None) -> list[str]:
    return [t.strip() for t in (text or "").split(",") if t.strip()]


def existing_dir(option: str, path: Path | None, what: str) -> Path | None:
    """A one-line error unless ``path`` (when given) is an existing folder."""
    from denoised_weights.core.errors import DnwError

    if path is not None and not path.is_dir():
        state = "is a file, not a folder" if path.exists() else "is no such folder"
        raise DnwError(f"{option} {path} {state}; give {what}")
    return path

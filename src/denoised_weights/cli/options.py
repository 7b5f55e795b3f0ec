"""Options shared by the pipeline commands, parameter types that refuse bad numbers, and the
options made from the pipeline's option dataclasses (:func:`dataclass_options`)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any

import click

from denoised_weights.pipeline.context import MAX_SEED


class FiniteFloat(click.ParamType):
    """A finite float in ``(low, high]`` (``[low, high]`` when ``low_open`` is False; ``nan``
    and ``inf`` are refused)."""

    name = "float"

    def __init__(self, low: float = 0.0, high: float = 10.0, low_open: bool = True) -> None:
        self.low, self.high, self.low_open = low, high, low_open

    def convert(self, value: Any, param: Any, ctx: Any) -> float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        above = number > self.low if self.low_open else number >= self.low
        if not math.isfinite(number) or not (above and number <= self.high):
            left = "(" if self.low_open else "["
            self.fail(
                f"{value} is not a finite number in {left}{self.low:g}, {self.high:g}]", param, ctx
            )
        return number


SEED = click.IntRange(0, MAX_SEED)
LR = FiniteFloat(0.0, 10.0)


def positive(maximum: int = 10**7) -> click.IntRange:
    return click.IntRange(1, maximum)


def task_options(f: Callable) -> Callable:
    """``--task``, ``--task-option KEY=VALUE`` (repeatable) and ``--photos`` (image translation)."""
    from denoised_weights.pipeline.context import DEFAULT_TASK

    f = click.option(
        "--photos",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="Your own photo folder (image-translation task).",
    )(f)
    f = click.option(
        "--task-option",
        "-T",
        "task_option",
        multiple=True,
        metavar="KEY=VALUE",
        help="An option of the task's factory (repeatable).",
    )(f)
    return click.option(
        "--task",
        "task",
        default=DEFAULT_TASK,
        show_default=True,
        cls=NamesOption,
        names_kind="tasks",
        help="Task.",
    )(f)


def source_options(default: str | None = None) -> Callable[[Callable], Callable]:
    """``--source NAME``, ``--model DIR`` and ``--source-option/-S KEY=VALUE``: where a task's
    pairs come from (image translation: a registered pair source). ``dnw pairs`` builds the
    source from them; ``dnw base`` and ``dnw collect`` pass them to the task as its options
    ``source``, ``model_dir`` and ``source_options`` (:func:`source_task_options`)."""
    shown = "" if default else " (default: the task's own, the catalogue's edits)"

    def decorate(f: Callable) -> Callable:
        f = click.option(
            "--source-option",
            "-S",
            "source_option",
            multiple=True,
            metavar="KEY=VALUE",
            help="Another argument of the pair source's factory, e.g. -S steps=20 (repeatable).",
        )(f)
        f = click.option(
            "--model",
            type=click.Path(path_type=Path),
            default=None,
            help="Local model folder of the pair source (instruct-pix2pix: a diffusers "
            "InstructPix2Pix model; nothing is downloaded).",
        )(f)
        return click.option(
            "--source",
            default=default,
            show_default=default is not None,
            cls=NamesOption,
            names_kind="pair-sources",
            help=f"Pair source{shown}; each takes the options here that its factory has, "
            "and -S KEY=VALUE passes any other.",
        )(f)

    return decorate


def json_values(pairs: Sequence[str], hint: str) -> dict[str, Any]:
    """``KEY=VALUE`` texts as a dict, JSON values where they parse (numbers, true/false), else
    text (a key's ``-`` read as ``_``)."""
    import json

    out: dict[str, Any] = {}
    for key, value in key_values(pairs, hint).items():
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def source_task_options(
    source: str | None, model: Path | None, pairs: Sequence[str]
) -> dict[str, Any]:
    """The task options that ``--source``, ``--model`` and ``-S`` stand for (those given)."""
    out: dict[str, Any] = {}
    if source is not None:
        out["source"] = source
    if model is not None:
        existing_dir("--model", model, "a local model folder")
        out["model_dir"] = str(model)
    if pairs:
        out["source_options"] = json_values(pairs, "--source-option")
    return out


def parse_task_options(pairs: tuple[str, ...], photos: Path | None) -> dict[str, Any]:
    out: dict[str, Any] = key_values(pairs, "--task-option")
    if photos is not None:
        out["photos_dir"] = str(photos)
    return out


def common(f: Callable) -> Callable:
    """``--device`` and ``--overwrite``."""
    f = click.option(
        "--overwrite",
        is_flag=True,
        help=(
            "Write into an existing output folder (replaces "
            "only what this command wrote there before)."
        ),
    )(f)
    return click.option(
        "--device",
        default="auto",
        show_default=True,
        help="auto (CUDA when present, else CPU), cpu, cuda, cuda:N.",
    )(f)


def arch_options(f: Callable) -> Callable:
    f = click.option(
        "--arch-option",
        "-A",
        "arch_option",
        multiple=True,
        metavar="KEY=VALUE",
        help="Override an architecture setting, e.g. -A rank=8 or -A shared_a=true (repeatable).",
    )(f)
    f = click.option(
        "--architecture",
        "-a",
        default=None,
        cls=NamesOption,
        names_kind="architectures",
        help="Architecture (default: the task's).",
    )(f)
    return click.option(
        "--preset",
        "-p",
        default=None,
        help="Architecture preset (default: the task's; e.g. tiny, small).",
    )(f)


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


# -- names registered by plugins, listed when the help is shown ------------------------------------
def registered_names(ctx: click.Context | None, kind: str, extra: Sequence[str] = ()) -> list[str]:
    """``extra`` then the names registered under ``kind`` in the command line's registries (the
    installed plugins' when there is no command line)."""
    obj = ctx.find_root().obj if ctx is not None else None
    registries = obj.get("registries") if isinstance(obj, dict) else None
    if registries is None:
        from denoised_weights.core.plugins import default_registries

        registries = default_registries()
    return [*extra, *(n for n in registries[kind].list() if n not in extra)]


class NamesOption(click.Option):
    """An option whose help ends with the names registered under ``names_kind`` (after
    ``extra_names``), read from the registries when the help is shown, never written down."""

    def __init__(
        self, *args: Any, names_kind: str, extra_names: Sequence[str] = (), **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.names_kind, self.extra_names = names_kind, tuple(extra_names)

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        static = self.help
        names = ", ".join(registered_names(ctx, self.names_kind, self.extra_names))
        self.help = f"{static or ''} Available: {names}.".strip()
        try:
            return super().get_help_record(ctx)
        finally:
            self.help = static


class LazyChoice(click.Choice):
    """A :class:`click.Choice` whose choices are a ``"module:attr"`` reference, imported when
    first needed (a module that imports torch stays out of building the command line)."""

    def __init__(self, ref: str) -> None:
        self.ref = ref
        self.case_sensitive = True

    @property
    def choices(self) -> Sequence[str]:  # type: ignore[override]
        from denoised_weights.core.registry import resolve

        return tuple(resolve(self.ref))


# -- command-line options made from the option dataclasses -----------------------------------------
def cli_fields(
    cls: type, only: Collection[str] | None = None, exclude: Collection[str] = ()
) -> list[dataclasses.Field]:
    """The fields of ``cls`` that are command-line options (``field(..., cli=False)`` are not)."""
    return [
        f
        for f in dataclasses.fields(cls)
        if f.metadata.get("cli", True)
        and (only is None or f.name in only)
        and f.name not in exclude
    ]


def cli_flags(f: dataclasses.Field) -> tuple[str, ...]:
    return tuple(f.metadata.get("flags") or ("--" + f.name.replace("_", "-"),))


def cli_help(f: dataclasses.Field) -> str:
    """A field's help as the command line shows it: a sentence."""
    text = f.metadata["help"].strip()
    text = text[:1].upper() + text[1:]
    return text if text.endswith(".") else text + "."


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def cli_default(cls: type, f: dataclasses.Field) -> Any:
    """A field's default as its command-line option holds it."""
    from denoised_weights.core.config import base_type

    value, kind = _default(f), base_type(cls, f.name)
    if kind in (tuple, list):
        return ",".join(map(str, value)) if value else None
    if kind is dict:
        return ()
    return value


def _option(cls: type, f: dataclasses.Field) -> click.Option:
    from denoised_weights.core.config import base_type

    meta, kind, flags = f.metadata, base_type(cls, f.name), cli_flags(f)
    default = cli_default(cls, f)
    shown = default is not None and default is not False and default != ()
    attrs: dict[str, Any] = {"default": default, "help": cli_help(f), "show_default": shown}
    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
        del attrs["default"]  # a field without a default: a required option (no default given)
        attrs["required"] = True
    low, high = meta.get("low"), meta.get("high")
    if kind is bool:
        if default:
            flags = (f"{flags[0]}/--no-{flags[0][2:]}", *flags[1:])
        else:
            attrs.update(is_flag=True, show_default=False)
    elif kind is int:
        attrs["type"] = click.IntRange(low, high) if low is not None or high is not None else int
    elif kind is float:
        attrs["type"] = (
            FiniteFloat(
                -math.inf if low is None else low,
                math.inf if high is None else high,
                bool(meta.get("low_open")),
            )
            if low is not None or high is not None
            else float
        )
    elif kind is dict:
        attrs.update(multiple=True, metavar="KEY=VALUE")
    elif meta.get("path"):
        attrs["type"] = click.Path(file_okay=meta["path"] != "dir", path_type=Path)
    elif isinstance(meta.get("choices"), str):
        attrs["type"] = LazyChoice(meta["choices"])
    elif meta.get("choices"):
        attrs["type"] = click.Choice(list(meta["choices"]))
    option_class: type[click.Option] = click.Option
    if meta.get("names"):
        option_class = NamesOption
        attrs.update(names_kind=meta["names"], extra_names=meta.get("extra_names", ()))
    option = option_class([*flags, f.name], **attrs)
    option.dataclass_field = (cls, f.name)  # type: ignore[attr-defined] - checked by the tests
    return option


def dataclass_options(
    cls: type, *, only: Collection[str] | None = None, exclude: Collection[str] = ()
) -> Callable:
    """A decorator that adds one click option per field of the dataclass ``cls`` (all, or
    ``only`` those, less ``exclude``): the field's type, default, help, bounds and choices make
    the option (:func:`denoised_weights.core.config.field`), so they are written once; a field
    without a default is a required option. The command receives each under the field's name;
    :func:`options_from` reads them back."""
    fields = cli_fields(cls, only, exclude)

    def decorate(fn: Callable) -> Callable:
        if not hasattr(fn, "__click_params__"):
            fn.__click_params__ = []  # type: ignore[attr-defined]
        for f in reversed(fields):
            fn.__click_params__.append(_option(cls, f))  # type: ignore[attr-defined]
        return fn

    return decorate


def options_from(
    cls: type,
    params: dict[str, Any],
    *,
    only: Collection[str] | None = None,
    exclude: Collection[str] = (),
) -> dict[str, Any]:
    """Take the values of ``cls``'s options out of a command's ``params`` (removing them), as
    keyword arguments of ``cls`` and of the API call behind the command."""
    from denoised_weights.core.config import base_type

    out: dict[str, Any] = {}
    for f in cli_fields(cls, only, exclude):
        if f.name not in params:
            continue
        value, kind = params.pop(f.name), base_type(cls, f.name)
        if kind in (tuple, list):
            value = tuple(csv(value)) or None
        elif kind is dict:
            value = key_values(value, cli_flags(f)[0]) or _default(f)
        elif isinstance(value, Path) and kind is str:
            value = str(value)
        out[f.name] = value
    return out


def key_values(pairs: Sequence[str], hint: str) -> dict[str, str]:
    """``KEY=VALUE`` texts as a dict (a key's ``-`` read as ``_``)."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint=hint)
        out[key.strip().replace("-", "_")] = value
    return out

"""Config dataclasses with validation and JSON save/load (in the style of peft's configs)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Self

from denoised_weights.core.errors import DnwError


class JsonConfig:
    """Mixin for dataclasses: ``to_dict``/``from_dict``/``save``/``load`` with a type key."""

    #: stored as ``"type"`` in the JSON so a file says what it holds
    config_type: str = ""

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)  # type: ignore[call-overload]
        if self.config_type:
            data = {"type": self.config_type, **data}
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        data = dict(data)
        kind = data.pop("type", cls.config_type)
        if cls.config_type and kind != cls.config_type:
            raise DnwError(f"expected a {cls.config_type!r} config, got type {kind!r}")
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - names)
        if unknown:
            raise DnwError(
                f"unknown {cls.__name__} field(s) {', '.join(unknown)}; "
                f"known: {', '.join(sorted(names))}"
            )
        return cls(**data)

    def save(self, path: str | Path) -> Path:
        from denoised_weights.core.io import write_json

        return write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> Self:
        from denoised_weights.core.io import read_json

        return cls.from_dict(read_json(path))


def field(
    default: Any = dataclasses.MISSING,
    *,
    help: str,
    flags: Sequence[str] | None = None,
    choices: Sequence[str] | str | None = None,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    path: str | None = None,
    names: str | None = None,
    extra_names: Sequence[str] = (),
    cli: bool = True,
    **kwargs: Any,
) -> Any:
    """``dataclasses.field`` with a ``help`` text and what a command line needs in its metadata
    (``dnw`` builds its options from these: :func:`denoised_weights.cli.options.dataclass_options`).

    ``flags``: the option's spellings (default ``--field-name``); ``choices``: the allowed values
    (or a lazy ``"module:attr"`` reference to them); ``low``/``high``: bounds (inclusive; a
    float's ``low`` is excluded with ``low_open``, and floats must be finite); ``path``: ``"dir"``
    or ``"any"`` for a path; ``names``: a registry kind whose registered names the help lists at
    run time (after ``extra_names``); ``cli=False`` keeps the field off the command line.
    :func:`check_fields` enforces ``choices`` (when given as a sequence) and the bounds."""
    if default is not dataclasses.MISSING:
        kwargs["default"] = default
    meta: dict[str, Any] = {"help": help}
    for key, value in (
        ("flags", tuple(flags) if flags else None),
        ("choices", choices),
        ("low", low),
        ("high", high),
        ("path", path),
        ("names", names),
    ):
        if value is not None:
            meta[key] = value
    if low_open:
        meta["low_open"] = True
    if extra_names:
        meta["extra_names"] = tuple(extra_names)
    if not cli:
        meta["cli"] = False
    return dataclasses.field(metadata=meta, **kwargs)


def option_name(f: dataclasses.Field) -> str:
    """How messages name a field: its first command-line spelling."""
    flags = f.metadata.get("flags")
    return flags[0] if flags else "--" + f.name.replace("_", "-")


def describe_range(low: float | None, high: float | None, low_open: bool = False) -> str:
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{low:g}, {high:g}]"
    if low is not None:
        return f"{'above' if low_open else 'at least'} {low:g}"
    return f"at most {high:g}"


def base_type(cls: type, name: str) -> Any:
    """A field's type without ``None``: ``int`` for ``int | None``, the origin for generics
    (``tuple``, ``dict``), ``object`` for a union of several types."""
    import types
    import typing

    hint = typing.get_type_hints(cls)[name]
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        hint = rest[0] if len(rest) == 1 else object
    return typing.get_origin(hint) or hint


def check_fields(config: Any) -> None:
    """A one-line :class:`DnwError` unless every field of the dataclass ``config`` is within its
    declared bounds and choices (``None`` passes where it is the default)."""
    for f in dataclasses.fields(config):
        value, meta = getattr(config, f.name), f.metadata
        if value is None and f.default is None:
            continue
        choices = meta.get("choices")
        if isinstance(choices, (tuple, list)) and value not in choices:
            raise DnwError(f"unknown {option_name(f)} {value!r}: use one of {', '.join(choices)}")
        low, high = meta.get("low"), meta.get("high")
        if low is None and high is None:
            continue
        integer = base_type(type(config), f.name) is int
        open_low = bool(meta.get("low_open")) and not integer
        number = not isinstance(value, bool) and (
            isinstance(value, int) if integer else isinstance(value, (int, float))
        )
        inside = (
            number
            and math.isfinite(value)
            and (low is None or (value > low if open_low else value >= low))
            and (high is None or value <= high)
        )
        if not inside:
            kind = "an integer" if integer else "a finite number"
            raise DnwError(
                f"{option_name(f)} must be {kind} "
                f"{describe_range(low, high, open_low)}, got {value!r}"
            )

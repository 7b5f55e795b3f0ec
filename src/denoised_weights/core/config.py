"""Config dataclasses with validation and JSON save/load (in the style of peft's configs)."""

from __future__ import annotations

import dataclasses
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
                f"unknown {cls.__name__} field(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}"
            )
        return cls(**data)

    def save(self, path: str | Path) -> Path:
        from denoised_weights.core.io import write_json

        return write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> Self:
        from denoised_weights.core.io import read_json

        return cls.from_dict(read_json(path))


def field(default: Any = dataclasses.MISSING, *, help: str, **kwargs: Any) -> Any:
    """``dataclasses.field`` with a ``help`` text in its metadata."""
    if default is not dataclasses.MISSING:
        kwargs["default"] = default
    return dataclasses.field(metadata={"help": help}, **kwargs)

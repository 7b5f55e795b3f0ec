"""Open registries of named components, filled by plugins through the ``register_*`` hooks."""

from __future__ import annotations

import contextlib
import fnmatch
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from denoised_weights.core.errors import DnwError, DuplicateNameError, UnknownNameError


def resolve(target: Callable[..., Any] | str) -> Callable[..., Any]:
    """Import a lazy ``"package.module:attr"`` reference (or return a callable unchanged)."""
    if not isinstance(target, str):
        return target
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise DnwError(f"bad factory reference {target!r}: expected 'package.module:attr'")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


@dataclass
class Entry:
    """One registered component: its factory, named presets and the plugin that added it."""

    name: str
    factory: Callable[..., Any] | str
    presets: dict[str, dict[str, Any]] = field(default_factory=dict)
    plugin: str = ""

    def load(self) -> Callable[..., Any]:
        return resolve(self.factory)

    def options(self, preset: str | None = None, **overrides: Any) -> dict[str, Any]:
        """Factory keyword arguments: the preset's values, overridden by ``overrides``."""
        if preset is None:
            return dict(overrides)
        if preset not in self.presets:
            known = ", ".join(self.presets) or "none"
            raise UnknownNameError(f"{self.name!r} has no preset {preset!r} (presets: {known})")
        return {**self.presets[preset], **overrides}


class Registry:
    """Name → :class:`Entry` for one kind of component (architectures, blockers, ...)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    def add(
        self,
        name: str,
        factory: Callable[..., Any] | str,
        *,
        plugin: str = "",
        presets: dict[str, dict[str, Any]] | None = None,
    ) -> Entry:
        if not isinstance(name, str) or not name:
            raise DnwError(f"plugin {plugin!r} registered a {self.kind} entry without a name")
        if not (callable(factory) or isinstance(factory, str)):
            raise DnwError(
                f"plugin {plugin!r} registered {self.kind} {name!r} with a factory that is "
                "neither callable nor a 'module:attr' string"
            )
        for preset_name, preset in (presets or {}).items():
            if not isinstance(preset, dict):
                raise DnwError(
                    f"plugin {plugin!r}: preset {preset_name!r} of {self.kind} {name!r} "
                    "must be a dict of keyword arguments"
                )
        if name in self._entries:
            other = self._entries[name].plugin
            raise DuplicateNameError(
                f"{self.kind} {name!r} is registered by both plugin {other!r} and plugin "
                f"{plugin!r}: uninstall one or allow-list plugins with DNW_PLUGINS"
            )
        entry = Entry(name, factory, dict(presets or {}), plugin)
        self._entries[name] = entry
        return entry

    @property
    def singular(self) -> str:
        return self.kind[:-1] if self.kind.endswith("s") else self.kind

    def get(self, name: str) -> Entry:
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(sorted(self._entries)) or "none"
            raise UnknownNameError(
                f"unknown {self.singular} {name!r} (known: {known}; see 'dnw list {self.kind}')"
            ) from None

    def create(self, name: str, preset: str | None = None, **overrides: Any) -> Any:
        """Build ``name`` from its factory with the preset's arguments and ``overrides``."""
        entry = self.get(name)
        obj = entry.load()(**entry.options(preset, **overrides))
        if hasattr(obj, "__dict__") and not getattr(obj, "name", ""):
            with contextlib.suppress(AttributeError):
                obj.name = name
        return obj

    def list(self, pattern: str = "*") -> list[str]:
        return sorted(n for n in self._entries if fnmatch.fnmatch(n, pattern))

    def is_registered(self, name: str) -> bool:
        return name in self._entries

    def entries(self) -> list[Entry]:
        return [self._entries[n] for n in sorted(self._entries)]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.list()})"

"""Registered pair sources built by name from command-line style arguments: ``dnw pairs
--source NAME`` and the image-translation task's ``source`` option (``dnw base`` and ``dnw
collect --source NAME``) share this code. Import-light: the source is loaded when built."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from denoised_weights.core.errors import DnwError

#: factory arguments and the options that give them (``dnw pairs``; base and collect fill
#: concept, prompt, photos and size themselves)
SOURCE_ARGUMENTS = {
    "concept": "--concept",
    "prompt": "--prompt",
    "model_dir": "--model",
    "photos_dir": "--photos",
    "size": "--size",
    "device": "--device",
}
DEFAULT_SOURCE = "catalogue"


def _registries(registries: Any) -> Any:
    if registries is None:
        from denoised_weights.core.plugins import default_registries

        registries = default_registries()
    return registries


def source_arguments(
    name: str,
    given: Mapping[str, Any],
    extra: Mapping[str, Any],
    registries: Any = None,
    implicit: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The factory keyword arguments of the registered pair source ``name``: ``given`` (factory
    argument -> value; ``None`` = not given), ``extra`` (``-S KEY=VALUE``) and ``implicit``
    (passed only where the factory takes them). An option the factory does not take, or a
    required argument missing, is a one-line error."""
    entry = _registries(registries).pair_sources.get(name)  # unknown: lists the registered ones
    params = inspect.signature(entry.load()).parameters
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    accepted = {k for k, p in params.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    kwargs: dict[str, Any] = {
        k: v for k, v in (implicit or {}).items() if v is not None and k in accepted
    }
    for key, value in given.items():
        if value is None:
            continue
        if key in accepted or takes_any:
            kwargs[key] = value
        elif key != "size":  # every source is asked for the size it has; the rest must fit
            raise DnwError(
                f"--source {name} takes no {SOURCE_ARGUMENTS.get(key, key)}; leave it "
                f"out (it takes: {_describe(params)})"
            )
    for key, value in extra.items():
        if key not in accepted and not takes_any:
            raise DnwError(
                f"--source {name} has no option {key!r} (-S); it takes: {_describe(params)}"
            )
        kwargs[key] = value
    missing = [
        k
        for k, p in params.items()
        if p.default is p.empty
        and k not in kwargs
        and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    ]
    if missing:
        how = ", ".join(SOURCE_ARGUMENTS.get(k, f"-S {k}=VALUE") for k in missing)
        raise DnwError(f"--source {name} needs {how}")
    return kwargs


def make_pair_source(
    name: str,
    given: Mapping[str, Any],
    extra: Mapping[str, Any],
    registries: Any = None,
    implicit: Mapping[str, Any] | None = None,
) -> tuple[Any, dict[str, Any]]:
    """``(source, its factory arguments)``: the registered pair source ``name`` built from
    :func:`source_arguments`."""
    kwargs = source_arguments(name, given, extra, registries, implicit)
    return _registries(registries).pair_sources.create(name, **kwargs), kwargs


def _describe(params: Any) -> str:
    names = [
        SOURCE_ARGUMENTS.get(k, f"-S {k}=...")
        for k, p in params.items()
        if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    return ", ".join(names) or "nothing"

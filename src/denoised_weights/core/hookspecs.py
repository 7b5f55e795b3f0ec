"""Plugin hook specifications (pluggy project ``denoised_weights``).

Every ``register_*`` hook receives a ``register`` callback::

    register(name: str, factory: Callable | str, **presets: dict) -> None

``factory`` builds the component; it may be a lazy ``"package.module:attr"`` string so that
listing plugins imports nothing heavy. Each keyword is a named preset: a dict of keyword
arguments for the factory (``register("e2gan", "pkg.mod:E2GAN", tiny={...}, small={...})``).
Hooks evolve by adding arguments only, so an implementation may accept a subset.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    import click

PROJECT = "denoised_weights"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

Register = Callable[..., None]


@hookspec
def register_architectures(register: Register) -> None:
    """Register target architectures
    (:class:`~denoised_weights.core.interfaces.TargetArchitecture`)."""


@hookspec
def register_blockers(register: Register) -> None:
    """Register weight blockers (:class:`~denoised_weights.core.interfaces.WeightBlocker`)."""


@hookspec
def register_generators(register: Register) -> None:
    """Register weight generators / initialisers
    (:class:`~denoised_weights.core.interfaces.WeightGenerator`)."""


@hookspec
def register_text_encoders(register: Register) -> None:
    """Register text encoders (:class:`~denoised_weights.core.interfaces.TextEncoder`)."""


@hookspec
def register_example_encoders(register: Register) -> None:
    """Register example encoders (:class:`~denoised_weights.core.interfaces.ExampleEncoder`):
    trainable networks that read a concept's examples for an example-conditioned generator."""


@hookspec
def register_pair_sources(register: Register) -> None:
    """Register sources of paired training images
    (:class:`~denoised_weights.core.interfaces.PairSource`)."""


@hookspec
def register_metrics(register: Register) -> None:
    """Register image-quality metrics (:class:`~denoised_weights.core.interfaces.Metric`)."""


@hookspec
def register_tasks(register: Register) -> None:
    """Register tasks (:class:`~denoised_weights.core.interfaces.Task`): fields of application
    with their concepts, data and evaluation; every pipeline stage runs for any of them."""


@hookspec
def register_commands(cli: click.Group) -> None:
    """Add click commands or groups to the ``dnw`` command line."""


#: hook name -> registry kind, for the ``register_*`` hooks that fill a registry
REGISTRY_HOOKS: dict[str, str] = {
    "register_architectures": "architectures",
    "register_blockers": "blockers",
    "register_generators": "generators",
    "register_text_encoders": "text-encoders",
    "register_example_encoders": "example-encoders",
    "register_pair_sources": "pair-sources",
    "register_metrics": "metrics",
    "register_tasks": "tasks",
}

__all__ = ["PROJECT", "REGISTRY_HOOKS", "Register", "hookimpl", "hookspec"]

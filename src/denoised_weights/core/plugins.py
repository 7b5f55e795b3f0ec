"""The plugin manager factory and the registries it fills.

Environment variables:

``DNW_PLUGINS``
    Comma-separated allow-list of entry-point plugins to load. Unset: load all installed ones.
    Set but empty: load none (built-ins are always loaded).
``DNW_PLUGINS_STRICT``
    ``1``: a plugin that fails to load raises instead of being skipped with a warning.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import sys
from dataclasses import dataclass, field
from typing import Any

import pluggy

from denoised_weights.core import hookspecs
from denoised_weights.core.errors import DnwError
from denoised_weights.core.registry import Registry

#: built-in plugins, registered first and through the same hooks as third parties
BUILTIN_PLUGINS: tuple[str, ...] = (
    "denoised_weights.plugins.builtins",
    "denoised_weights.plugins.image_translation",
    "denoised_weights.plugins.digits",
)


@dataclass
class PluginFailure:
    name: str
    error: str


@dataclass
class PluginInfo:
    name: str
    version: str | None
    builtin: bool
    hooks: list[str] = field(default_factory=list)


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def _warn(message: str) -> None:
    print(f"dnw: warning: {message}", file=sys.stderr)


def get_plugin_manager(
    *,
    entry_points: bool = True,
    allow: list[str] | None = None,
    strict: bool | None = None,
    plugins: list[Any] | None = None,
) -> pluggy.PluginManager:
    """Build a fresh plugin manager: built-ins, then entry points one at a time, then ``plugins``.

    ``allow`` and ``strict`` default to the ``DNW_PLUGINS`` / ``DNW_PLUGINS_STRICT`` variables.
    Extra ``plugins`` (modules or objects with hook implementations) are registered last; tests
    use them to add components without installing anything.
    """
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    pm.dnw_failures = []  # type: ignore[attr-defined]
    pm.dnw_versions = {}  # type: ignore[attr-defined]
    version = _own_version()
    for module_name in BUILTIN_PLUGINS:
        module = importlib.import_module(module_name)
        short = module_name.rsplit(".", 1)[-1]
        pm.register(module, name=short)
        pm.dnw_versions[short] = (version, True)  # type: ignore[attr-defined]
    if entry_points:
        _load_entry_points(pm, allow=allow, strict=strict)
    for i, plugin in enumerate(plugins or []):
        name = getattr(plugin, "__name__", None) or f"{type(plugin).__name__}-{i}"
        pm.register(plugin, name=name)
        pm.dnw_versions[name] = (None, False)  # type: ignore[attr-defined]
    pm.check_pending()
    return pm


def _own_version() -> str:
    try:
        return importlib.metadata.version("denoised-weights")
    except importlib.metadata.PackageNotFoundError:  # running from a source tree
        return "0+unknown"


def _load_entry_points(
    pm: pluggy.PluginManager, *, allow: list[str] | None, strict: bool | None
) -> None:
    if allow is None and "DNW_PLUGINS" in os.environ:
        allow = [p.strip() for p in os.environ["DNW_PLUGINS"].split(",") if p.strip()]
    if strict is None:
        strict = _truthy(os.environ.get("DNW_PLUGINS_STRICT"))
    seen: set[str] = set()
    found = {ep.name for ep in importlib.metadata.entry_points(group=hookspecs.PROJECT)}
    for name in sorted(set(allow or []) - found):
        _warn(
            f"DNW_PLUGINS names {name!r}, which is not installed "
            f"(installed: {', '.join(sorted(found)) or 'none'}); it is ignored"
        )
    for ep in importlib.metadata.entry_points(group=hookspecs.PROJECT):
        if ep.name in seen or (allow is not None and ep.name not in allow):
            continue
        seen.add(ep.name)
        if pm.get_plugin(ep.name) is not None:
            _warn(f"plugin {ep.name!r} clashes with a built-in plugin name; skipped")
            continue
        try:
            module = ep.load()
            pm.register(module, name=ep.name)
        except Exception as exc:  # a broken plugin must not break the command line
            if strict:
                raise
            detail = str(exc).splitlines()[0] if str(exc) else ""
            message = f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
            pm.dnw_failures.append(PluginFailure(ep.name, message))  # type: ignore[attr-defined]
            _warn(
                f"plugin {ep.name!r} failed to load ({message}); skipped "
                "(set DNW_PLUGINS_STRICT=1 to see the traceback)"
            )
            continue
        dist = getattr(ep, "dist", None)
        pm.dnw_versions[ep.name] = (  # type: ignore[attr-defined]
            (dist.metadata["Name"] + " " + dist.version) if dist else None,
            False,
        )


def plugin_infos(pm: pluggy.PluginManager) -> list[PluginInfo]:
    """Every registered plugin: name, version, built-in or not, the hooks it implements."""
    versions: dict[str, tuple[str | None, bool]] = getattr(pm, "dnw_versions", {})
    infos = []
    for name, plugin in pm.list_name_plugin():
        if plugin is None:
            continue
        hooks = sorted(h.name for h in pm.get_hookcallers(plugin) or [])
        version, builtin = versions.get(name, (None, False))
        infos.append(PluginInfo(name=name, version=version, builtin=builtin, hooks=hooks))
    return infos


class Registries:
    """All component registries of one plugin manager, filled on first access per kind.

    Each hook implementation is called on its own with a ``register`` callback bound to its
    plugin's name, so every entry remembers which plugin added it.
    """

    def __init__(self, pm: pluggy.PluginManager) -> None:
        self.pm = pm
        self._registries: dict[str, Registry] = {}

    @property
    def kinds(self) -> list[str]:
        return list(hookspecs.REGISTRY_HOOKS.values())

    def __getitem__(self, kind: str) -> Registry:
        kind = kind.replace("_", "-")
        if kind not in self._registries:
            hook_name = next((h for h, k in hookspecs.REGISTRY_HOOKS.items() if k == kind), None)
            if hook_name is None:
                raise DnwError(f"unknown component kind {kind!r} (kinds: {', '.join(self.kinds)})")
            registry = Registry(kind)
            caller = getattr(self.pm.hook, hook_name)
            # get_hookimpls() is in registration order (pluggy *calls* them LIFO): built-ins first
            for impl in caller.get_hookimpls():
                plugin_name = impl.plugin_name

                def register(
                    name: str, factory: Any, _p: str = plugin_name, **presets: Any
                ) -> None:
                    registry.add(name, factory, plugin=_p, presets=presets)

                impl.function(**({"register": register} if "register" in impl.argnames else {}))
            self._registries[kind] = registry
        return self._registries[kind]

    architectures = property(lambda self: self["architectures"])
    blockers = property(lambda self: self["blockers"])
    generators = property(lambda self: self["generators"])
    text_encoders = property(lambda self: self["text-encoders"])
    example_encoders = property(lambda self: self["example-encoders"])
    pair_sources = property(lambda self: self["pair-sources"])
    metrics = property(lambda self: self["metrics"])
    tasks = property(lambda self: self["tasks"])


_default: Registries | None = None


def default_registries() -> Registries:
    """Registries of a plugin manager built on first use (not at import time)."""
    global _default
    if _default is None:
        _default = Registries(get_plugin_manager())
    return _default


def set_default_registries(registries: Registries | None) -> None:
    """Replace (or with ``None`` forget) the registries the programmatic API uses."""
    global _default
    _default = registries

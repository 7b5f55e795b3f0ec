"""Create, list and inspect registered components (architectures, blockers, tasks, ...).

Every function takes the ``registries`` to use; ``None`` means the default registries of the
installed plugins (built on first use)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from denoised_weights.core.errors import DnwError
from denoised_weights.core.fingerprint import fingerprint
from denoised_weights.core.plugins import Registries, default_registries

if TYPE_CHECKING:
    from torch import nn

    from denoised_weights.core.interfaces import TargetArchitecture, Task, WeightBlocker


def _regs(registries: Registries | None) -> Registries:
    return registries if registries is not None else default_registries()


def create_task(name: str, *, registries: Registries | None = None, **options: Any) -> Task:
    """Build a registered task (``options`` go to its factory, e.g. ``photos_dir``)."""
    try:
        task = _regs(registries).tasks.create(name, **options)
    except TypeError as exc:
        raise DnwError(f"task {name!r} rejected its options ({exc})") from None
    if not isinstance(getattr(task, "options", None), dict):  # how worker processes rebuild it
        task.options = dict(options)
    if getattr(task, "name", None) != name:  # the name it was created under rebuilds it
        task.name = name
    return task


def list_tasks(pattern: str = "*", *, registries: Registries | None = None) -> list[str]:
    return _regs(registries).tasks.list(pattern)


def create_architecture(
    name: str, preset: str | None = None, *, registries: Registries | None = None, **overrides: Any
) -> TargetArchitecture:
    """Build a registered architecture from a preset, overridden by keyword arguments."""
    try:
        return _regs(registries).architectures.create(name, preset, **overrides)
    except TypeError as exc:
        raise DnwError(f"architecture {name!r} rejected its options ({exc})") from None


def list_architectures(pattern: str = "*", *, registries: Registries | None = None) -> list[str]:
    return _regs(registries).architectures.list(pattern)


def is_architecture(name: str, *, registries: Registries | None = None) -> bool:
    return _regs(registries).architectures.is_registered(name)


def create_blocker(
    name: str = "layerwise",
    preset: str | None = None,
    *,
    registries: Registries | None = None,
    **overrides: Any,
) -> WeightBlocker:
    """Build a registered blocker (unbound: call :func:`bind_blocker` or ``bind``)."""
    entry = _regs(registries).blockers.get(name)
    if preset is not None and preset not in entry.presets:
        preset = None  # blockers need not mirror every architecture preset
    return _regs(registries).blockers.create(name, preset, **overrides)


def list_components(
    kind: str, pattern: str = "*", *, registries: Registries | None = None
) -> list[str]:
    return _regs(registries)[kind].list(pattern)


def build_lora_model(arch: TargetArchitecture, seed: int = 0) -> nn.Module:
    """The architecture's network with LoRA injected (only LoRA params trainable)."""
    from denoised_weights.core.lora import apply_lora

    return apply_lora(arch.build(seed), arch.lora_spec())


def bind_blocker(arch: TargetArchitecture, blocker: WeightBlocker) -> WeightBlocker:
    """Bind ``blocker`` to the layout of ``arch``'s LoRA state."""
    from denoised_weights.core.lora import lora_state

    return blocker.bind(lora_state(build_lora_model(arch)), arch.lora_spec())


def lora_fingerprint(arch: TargetArchitecture, blocker: WeightBlocker | None = None) -> str:
    """Hash of architecture + configuration + LoRA spec (+ block layout, given a blocker).

    Without a blocker it identifies what a LoRA state fits (adapters, datasets); with one it
    identifies a block layout too (generators).
    """
    payload = {"architecture": arch.name, "config": arch.config, "lora": arch.lora_spec().to_dict()}
    if blocker is not None:
        payload["layout"] = blocker.structure()
    return fingerprint(payload)


def architecture_info(
    name: str,
    preset: str | None = None,
    *,
    rank: int | None = None,
    block_size: int | None = None,
    blocker: str = "layerwise",
    registries: Registries | None = None,
) -> dict[str, Any]:
    """What ``dnw info`` prints: LoRA layers and shapes, parameter counts, blocks, fingerprint."""
    if rank is not None and rank < 1:
        raise DnwError(f"--rank must be a positive integer, got {rank}")
    if block_size is not None and block_size < 1:
        raise DnwError(f"--block-size must be a positive integer, got {block_size}")
    overrides = {"rank": rank} if rank is not None else {}
    arch = create_architecture(name, preset, registries=registries, **overrides)
    blocker_opts = {"block_size": block_size} if block_size is not None else {}
    blk = bind_blocker(arch, create_blocker(blocker, preset, registries=registries, **blocker_opts))
    from denoised_weights.core.lora import lora_state

    model = build_lora_model(arch)
    state = lora_state(model)
    spec = arch.lora_spec()
    layers = []
    modules = dict(model.named_modules())
    for group in blk.groups if hasattr(blk, "groups") else []:
        base = modules.get(group["name"])
        base_layer = getattr(base, "base_layer", base)
        layers.append(
            {
                "name": group["name"],
                "type": type(base_layer).__name__,
                "weight_shape": list(base_layer.weight.shape)
                if hasattr(base_layer, "weight")
                else None,
                "lora": {t["key"]: t["shape"] for t in group["tensors"]},
                "lora_params": group["numel"],
            }
        )
    base_params = sum(p.numel() for n, p in model.named_parameters() if not p.requires_grad)
    return {
        "architecture": name,
        "preset": preset,
        "config": arch.config,
        "rank": spec.rank,
        "block_size": blk.block_size,
        "generator_params": base_params,
        "auxiliary_params": {
            k: sum(p.numel() for p in m.parameters()) for k, m in arch.auxiliary_modules().items()
        },
        "lora_layers": len(layers),
        "lora_params": sum(v.numel() for v in state.values()),
        "n_blocks": blk.n_blocks,
        "padding": blk.n_blocks * blk.block_size - sum(v.numel() for v in state.values()),
        "fingerprint": lora_fingerprint(arch, blk),
        "layers": layers,
    }

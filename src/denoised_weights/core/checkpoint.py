"""Resumable training checkpoints: modules and optimisers in one safetensors file + JSON.

The JSON is written after the tensors and both carry the same token, so a run killed between
the two writes is detected and the pair ignored (the previous checkpoint is lost, never mixed).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from denoised_weights.core.io import load_tensors, read_json, save_tensors, write_json


def _flatten_optimizer(
    prefix: str, opt: torch.optim.Optimizer
) -> tuple[dict[str, torch.Tensor], Any]:
    sd = opt.state_dict()
    tensors = {}
    for idx, slots in sd["state"].items():
        for key, value in slots.items():
            t = value if torch.is_tensor(value) else torch.tensor(value)
            tensors[f"{prefix}.{idx}.{key}"] = t
    return tensors, sd["param_groups"]


def _restore_optimizer(prefix: str, opt: torch.optim.Optimizer, tensors: dict, groups: Any) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in tensors.items():
        if name.startswith(prefix + "."):
            idx, key = name[len(prefix) + 1 :].split(".", 1)
            state.setdefault(int(idx), {})[key] = value
    opt.load_state_dict({"state": state, "param_groups": groups})


def save_checkpoint(
    path: Path, parts: dict[str, nn.Module | torch.optim.Optimizer], meta: dict[str, Any]
) -> None:
    """Everything needed to resume, in one safetensors file + one JSON file (JSON written last)."""
    tensors: dict[str, torch.Tensor] = {}
    groups = {}
    for name, obj in parts.items():
        if isinstance(obj, torch.optim.Optimizer):
            flat, groups[name] = _flatten_optimizer(name, obj)
            tensors.update(flat)
        else:
            tensors.update({f"{name}.{k}": v for k, v in obj.state_dict().items()})
    tensors["rng"] = torch.get_rng_state()
    token = f"{meta['step']}-{time.time_ns()}"
    save_tensors(path / "checkpoint.safetensors", tensors, {"token": token})
    write_json(path / "checkpoint.json", {**meta, "param_groups": groups, "token": token})


def load_checkpoint(
    path: Path, parts: dict[str, nn.Module | torch.optim.Optimizer]
) -> dict[str, Any] | None:
    """Restore ``parts`` from a checkpoint; ``None`` when there is none (or it is incomplete)."""
    if not (path / "checkpoint.json").is_file() or not (path / "checkpoint.safetensors").is_file():
        return None
    meta = read_json(path / "checkpoint.json")
    tensors, tmeta = load_tensors(path / "checkpoint.safetensors")
    if tmeta.get("token") != meta.get("token"):
        return None  # killed between the two writes: the older JSON does not match; start over
    for name, obj in parts.items():
        if isinstance(obj, torch.optim.Optimizer):
            _restore_optimizer(name, obj, tensors, meta["param_groups"][name])
        else:
            own = {k[len(name) + 1 :]: v for k, v in tensors.items() if k.startswith(name + ".")}
            obj.load_state_dict(own)
    torch.set_rng_state(tensors["rng"])
    return meta

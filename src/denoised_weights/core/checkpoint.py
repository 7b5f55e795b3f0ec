"""Resumable training checkpoints: every part's ``state_dict()`` in one safetensors file + JSON.

A part is anything with ``state_dict()`` / ``load_state_dict()`` (a module, an optimiser, an
architecture's training state holding both). Nested state dicts are flattened: tensors go to
the safetensors file, the structure around them (numbers, strings, lists, dicts with int or str
keys) to the JSON. The JSON is written after the tensors and both carry the same token, so a
run killed between the two writes is detected and the pair ignored (the previous checkpoint is
lost, never mixed).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from denoised_weights.core.errors import DnwError
from denoised_weights.core.io import load_tensors, read_json, save_tensors, write_json


def flatten_state(obj: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """A JSON-able skeleton of ``obj`` whose tensors are moved into ``tensors`` by name."""
    if torch.is_tensor(obj):
        tensors[prefix] = obj.detach()
        return {"@t": prefix}
    if isinstance(obj, dict):
        return {
            "@d": [
                [[type(k).__name__, k], flatten_state(v, f"{prefix}.{k}", tensors)]
                for k, v in obj.items()
            ]
        }
    if isinstance(obj, list | tuple):
        items = [flatten_state(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]
        return {"@l" if isinstance(obj, list) else "@u": items}
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    raise DnwError(f"cannot checkpoint a {type(obj).__name__} at {prefix}")


def unflatten_state(skeleton: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(skeleton, dict):
        if "@t" in skeleton:
            return tensors[skeleton["@t"]]
        if "@d" in skeleton:
            out = {}
            for (kind, key), value in skeleton["@d"]:
                out[int(key) if kind == "int" else key] = unflatten_state(value, tensors)
            return out
        if "@l" in skeleton:
            return [unflatten_state(v, tensors) for v in skeleton["@l"]]
        if "@u" in skeleton:
            return tuple(unflatten_state(v, tensors) for v in skeleton["@u"])
    return skeleton


def _state_of(name: str, obj: Any) -> Any:
    if not hasattr(obj, "state_dict"):
        raise DnwError(
            f"the training state part {name!r} ({type(obj).__name__}) has no state_dict(): "
            "the architecture's init_training must return something that can be saved"
        )
    return obj.state_dict()


def save_checkpoint(path: Path, parts: dict[str, Any], meta: dict[str, Any]) -> None:
    """Everything needed to resume, in one safetensors file + one JSON file (JSON written last)."""
    tensors: dict[str, torch.Tensor] = {}
    skeletons = {
        name: flatten_state(_state_of(name, obj), name, tensors) for name, obj in parts.items()
    }
    tensors["rng"] = torch.get_rng_state()
    token = f"{meta['step']}-{time.time_ns()}"
    save_tensors(path / "checkpoint.safetensors", tensors, {"token": token})
    write_json(path / "checkpoint.json", {**meta, "parts": skeletons, "token": token})


def load_checkpoint(path: Path, parts: dict[str, Any]) -> dict[str, Any] | None:
    """Restore ``parts`` from a checkpoint; ``None`` when there is none (or it is incomplete)."""
    if not (path / "checkpoint.json").is_file() or not (path / "checkpoint.safetensors").is_file():
        return None
    meta = read_json(path / "checkpoint.json")
    tensors, tmeta = load_tensors(path / "checkpoint.safetensors")
    if tmeta.get("token") != meta.get("token") or "parts" not in meta:
        return None  # killed between the two writes (or an older format): start over
    if set(meta["parts"]) != set(parts):
        raise DnwError(f"{path}: the checkpoint holds other parts ({', '.join(meta['parts'])})")
    for name, obj in parts.items():
        try:
            obj.load_state_dict(unflatten_state(meta["parts"][name], tensors))
        except (RuntimeError, KeyError, ValueError) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise DnwError(
                f"{path}: the checkpoint does not fit this run ({reason}); "
                "move that folder away to start over"
            ) from None
    torch.set_rng_state(tensors["rng"])
    return meta

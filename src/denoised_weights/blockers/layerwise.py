"""The paper's layer-grouped blocker.

Each LoRA layer forms one group: its down part (``lora_A``), its up part (``lora_B``) and,
when the LoRA spec trains them, the parameters of the norm layer that follows it. Groups are
flattened in network order, normalised, concatenated, zero-padded and cut into N blocks of
``block_size`` values. Block n of every state always holds the same weights, so the block
index identifies them.

Normalisation divides each group (or each tensor, with ``stats="tensor"``) by a power of two
close to its standard deviation over the training states. Scaling by a power of two is exact
in floating point, so ``from_blocks(to_blocks(s))`` returns ``s`` bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from denoised_weights.core.errors import DnwError
from denoised_weights.core.interfaces import StateDict, WeightBlocker
from denoised_weights.core.lora import LoraSpec

STATS = ("group", "tensor", "none")


def layer_groups(keys: Sequence[str], spec: LoraSpec) -> list[tuple[str, list[str]]]:
    """``[(group name, [state keys])]`` in network order: one group per LoRA layer (without
    the down-projections when the spec shares them: they are the same in every state)."""
    remaining = list(keys)
    groups: list[tuple[str, list[str]]] = []
    norms_of: dict[str, list[str]] = {}
    for norm, layer in spec.norm_modules.items():
        if spec.train_norms:
            norms_of.setdefault(layer, []).append(norm)
    if spec.shared_a:  # fixed down-projections: the same in every state, nothing to generate
        remaining = [k for k in remaining if ".lora_A." not in k]
    for layer in spec.target_modules:
        members = [k for k in remaining if k.startswith(layer + ".lora_")]
        for norm in norms_of.get(layer, []):
            members += [k for k in remaining if k.startswith(norm + ".") and ".lora_" not in k]
        if members:
            groups.append((layer, members))
            taken = set(members)
            remaining = [k for k in remaining if k not in taken]
    # anything the spec does not name (another adapter type's tensors) gets a group per tensor
    groups += [(k, [k]) for k in remaining]
    return groups


class LayerwiseBlocker(WeightBlocker):
    """Layer-grouped, normalised, equal-size blocks (default 256 values per block)."""

    def __init__(self, block_size: int = 256, stats: str = "group") -> None:
        if not isinstance(block_size, int) or isinstance(block_size, bool) or block_size < 1:
            raise DnwError(f"block size must be a positive integer, got {block_size!r}")
        if stats not in STATS:
            raise DnwError(f"unknown normalisation {stats!r}; choose one of {', '.join(STATS)}")
        self.block_size = block_size
        self.stats = stats
        self._groups: list[dict[str, Any]] | None = None
        self._scales: dict[str, float] | None = None

    # -- layout -----------------------------------------------------------------------------
    def bind(self, template: StateDict, spec: LoraSpec) -> LayerwiseBlocker:
        offset = 0
        groups = []
        for name, keys in layer_groups(list(template), spec):
            tensors = [
                {
                    "key": k,
                    "shape": list(template[k].shape),
                    "dtype": str(template[k].dtype).removeprefix("torch."),
                }
                for k in keys
            ]
            numel = sum(math.prod(t["shape"]) for t in tensors)
            groups.append({"name": name, "tensors": tensors, "offset": offset, "numel": numel})
            offset += numel
        self._groups = groups
        self._scales = None
        return self

    @property
    def bound(self) -> bool:
        return self._groups is not None

    def _require_bound(self) -> list[dict[str, Any]]:
        if self._groups is None:
            raise DnwError("the blocker has no layout yet: bind it to a LoRA state first")
        return self._groups

    @property
    def total(self) -> int:
        groups = self._require_bound()
        return groups[-1]["offset"] + groups[-1]["numel"] if groups else 0

    @property
    def n_blocks(self) -> int:
        return max(1, -(-self.total // self.block_size))

    @property
    def groups(self) -> list[dict[str, Any]]:
        return [dict(g) for g in self._require_bound()]

    def structure(self) -> dict[str, Any]:
        """The layout without statistics: what the fingerprint covers."""
        return {
            "type": "layerwise",
            "block_size": self.block_size,
            "stats": self.stats,
            "groups": self._require_bound(),
            "total": self.total,
            "n_blocks": self.n_blocks,
        }

    def layout(self) -> dict[str, Any]:
        return {**self.structure(), "scales": self._scales}

    @classmethod
    def from_layout(cls, layout: dict[str, Any]) -> LayerwiseBlocker:
        if layout.get("type") != "layerwise":
            raise DnwError(f"not a layerwise blocker layout (type {layout.get('type')!r})")
        blocker = cls(int(layout["block_size"]), layout.get("stats", "group"))
        blocker._groups = [dict(g) for g in layout["groups"]]
        blocker._scales = dict(layout["scales"]) if layout.get("scales") else None
        if blocker.n_blocks != layout.get("n_blocks", blocker.n_blocks):
            raise DnwError("corrupt blocker layout: block count does not match its groups")
        return blocker

    # -- statistics -------------------------------------------------------------------------
    def _scale_keys(self, group: dict[str, Any]) -> list[str]:
        if self.stats == "tensor":
            return [t["key"] for t in group["tensors"]]
        return [group["name"]]

    def fit(self, states: Sequence[StateDict]) -> LayerwiseBlocker:
        groups = self._require_bound()
        if not states:
            raise DnwError("cannot fit blocker statistics on zero LoRA states")
        scales: dict[str, float] = {}
        for group in groups:
            keys = [t["key"] for t in group["tensors"]]
            parts = [keys] if self.stats != "tensor" else [[k] for k in keys]
            for scale_key, part in zip(self._scale_keys(group), parts, strict=True):
                values = torch.cat(
                    [s[k].detach().float().reshape(-1) for s in states for k in part]
                )
                std = values.double().std().item() if values.numel() > 1 else 0.0
                scales[scale_key] = (
                    2.0 ** round(math.log2(std)) if std > 0 and self.stats != "none" else 1.0
                )
        self._scales = scales
        return self

    def _scale(self, group: dict[str, Any], key: str) -> float:
        if self._scales is None:
            return 1.0
        return self._scales[key if self.stats == "tensor" else group["name"]]

    # -- blocks -----------------------------------------------------------------------------
    def to_blocks(self, state: StateDict) -> torch.Tensor:
        groups = self._require_bound()
        flat = torch.zeros(self.n_blocks * self.block_size, dtype=torch.float32)
        for group in groups:
            pos = group["offset"]
            for t in group["tensors"]:
                key = t["key"]
                if key not in state:
                    raise DnwError(f"LoRA state lacks {key!r}: it was made for another layout")
                value = state[key].detach().to("cpu", torch.float32).reshape(-1)
                if value.numel() != math.prod(t["shape"]):
                    raise DnwError(
                        f"LoRA tensor {key!r} has {value.numel()} "
                        f"values, layout expects {t['shape']}"
                    )
                flat[pos : pos + value.numel()] = value / self._scale(group, key)
                pos += value.numel()
        return flat.view(self.n_blocks, self.block_size)

    def from_blocks(self, blocks: torch.Tensor) -> StateDict:
        groups = self._require_bound()
        expected = (self.n_blocks, self.block_size)
        if tuple(blocks.shape) != expected:
            raise DnwError(f"expected blocks of shape {expected}, got {tuple(blocks.shape)}")
        flat = blocks.detach().to("cpu", torch.float32).reshape(-1)
        state: StateDict = {}
        for group in groups:
            pos = group["offset"]
            for t in group["tensors"]:
                n = math.prod(t["shape"])
                value = (flat[pos : pos + n] * self._scale(group, t["key"])).reshape(t["shape"])
                state[t["key"]] = value.to(getattr(torch, t.get("dtype", "float32"))).clone()
                pos += n
        return state

    def from_blocks_differentiable(self, blocks: torch.Tensor) -> StateDict:
        """The same layout as :meth:`from_blocks`, differentiable, on ``blocks``' device and in
        its dtype (float tensors only: integer buffers are not generated)."""
        groups = self._require_bound()
        flat = blocks.reshape(-1)
        state: StateDict = {}
        for group in groups:
            pos = group["offset"]
            for t in group["tensors"]:
                n = math.prod(t["shape"])
                if not t.get("dtype", "float32").startswith(("float", "bfloat")):
                    pos += n
                    continue
                state[t["key"]] = (flat[pos : pos + n] * self._scale(group, t["key"])).reshape(
                    t["shape"]
                )
                pos += n
        return state

    def block_index(self) -> list[dict[str, Any]]:
        """For each block: the groups (and value ranges) it covers — where a block's weights
        live."""
        index = []
        for n in range(self.n_blocks):
            start, stop = n * self.block_size, (n + 1) * self.block_size
            parts = [
                {
                    "group": g["name"],
                    "from": max(start, g["offset"]) - g["offset"],
                    "to": min(stop, g["offset"] + g["numel"]) - g["offset"],
                }
                for g in self._require_bound()
                if g["offset"] < stop and g["offset"] + g["numel"] > start
            ]
            index.append({"block": n, "parts": parts})
        return index

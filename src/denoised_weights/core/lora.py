"""LoRA parameterisation through peft's low-level API, and PEFT adapter directories on disk.

A LoRA *state* is a flat ``{key: tensor}`` dict with peft's key names without the adapter
name (``"down1.lora_A.weight"``, ``"down1.lora_B.weight"``, and for trained norm layers
``"norm1.weight"``), exactly what ``get_peft_model_state_dict`` returns for an injected model.
On disk an adapter is what ``PeftModel.save_pretrained`` writes (``adapter_model.safetensors``
with ``base_model.model.`` key prefixes + ``adapter_config.json``), so peft loads it directly.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from denoised_weights.core.config import JsonConfig, field
from denoised_weights.core.errors import DnwError, FingerprintMismatchError
from denoised_weights.core.io import atomic_dir, load_tensors, save_tensors

if TYPE_CHECKING:
    import torch
    from torch import nn

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
PEFT_PREFIX = "base_model.model."
ADAPTER_NAME = "default"


@dataclasses.dataclass
class LoraSpec(JsonConfig):
    """Which modules of a network get LoRA, with which rank, and how it is initialised."""

    config_type = "lora"

    target_modules: list[str] = field(
        help="exact module names that receive LoRA", default_factory=list
    )
    rank: int = field(4, help="LoRA rank r (down: c x r x kh x kw, up: r x f x 1 x 1)")
    alpha: float | None = field(None, help="LoRA alpha; None means alpha = rank (scale 1)")
    norm_modules: dict[str, str] = field(
        help="norm module name -> the LoRA layer whose weight group it joins", default_factory=dict
    )
    train_norms: bool = field(False, help="train the norm modules' parameters with the LoRA")
    init_seed: int = field(0, help="seed of the LoRA init; the same for every concept of a dataset")
    init_lora_weights: bool | str = field(
        True, help="peft's init: True (A random, B zero), 'gaussian', ..."
    )
    shared_a: bool = field(
        False,
        help="frozen, shared, orthogonal down-projections (the same for every concept, seeded by "
        "init_seed): only the up-projections train, so a LoRA is linear in what is generated",
    )

    def __post_init__(self) -> None:
        if not isinstance(self.rank, int) or self.rank < 1:
            raise DnwError(f"LoRA rank must be a positive integer, got {self.rank!r}")
        if self.alpha is not None and self.alpha <= 0:
            raise DnwError(f"LoRA alpha must be positive, got {self.alpha!r}")
        if not self.target_modules:
            raise DnwError("a LoRA spec needs at least one target module")
        self.target_modules = list(self.target_modules)
        missing = sorted(set(self.norm_modules.values()) - set(self.target_modules))
        if missing:
            raise DnwError(
                f"norm modules join LoRA layers that are not targets: {', '.join(missing)}"
            )

    def to_dict(self) -> dict[str, Any]:
        data = super().to_dict()
        if not self.shared_a:  # recorded only when on: older adapters and fingerprints stay valid
            data.pop("shared_a")
        return data

    @property
    def trained_norms(self) -> list[str]:
        return list(self.norm_modules) if self.train_norms else []

    def to_peft_config(self) -> Any:
        from peft import LoraConfig

        pattern = "^(" + "|".join(re.escape(m) for m in self.target_modules) + ")$"
        return LoraConfig(
            r=self.rank,
            lora_alpha=self.alpha if self.alpha is not None else self.rank,
            target_modules=pattern,
            modules_to_save=self.trained_norms or None,
            init_lora_weights=self.init_lora_weights,
            lora_dropout=0.0,
            bias="none",
        )


def apply_lora(model: nn.Module, spec: LoraSpec, *, fast: bool = True) -> nn.Module:
    """Inject LoRA into ``model`` in place; only LoRA (and trained norm) params stay trainable.

    The LoRA init draws from its own generator seeded with ``spec.init_seed``, so every
    adapter of a dataset starts from the same point whatever the global RNG state.
    ``fast`` (default) installs peft layers that run each adapted conv or linear layer as one
    kernel with ``W + s·B·A`` (:mod:`denoised_weights.core.fastlora`); False keeps peft's
    own forward. Both give the same parameters, state dicts and results.
    """
    import torch
    from peft import inject_adapter_in_model

    modules = dict(model.named_modules())
    absent = sorted(set(spec.target_modules) - set(modules)) + sorted(
        set(spec.trained_norms) - set(modules)
    )
    if absent:
        raise DnwError(f"LoRA spec names modules the network lacks: {', '.join(absent[:5])}")
    useful = max_useful_rank([modules[m] for m in spec.target_modules])
    if useful and spec.rank > useful:
        raise DnwError(
            f"LoRA rank {spec.rank} is larger than any of this network's layers can use "
            f"(at most {useful}); choose a rank from 1 to {useful}"
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.init_seed)
        config = spec.to_peft_config()
        if fast:
            from denoised_weights.core.fastlora import register_fast_layers

            register_fast_layers(config)
        model = inject_adapter_in_model(config, model, adapter_name=ADAPTER_NAME)
    for name, param in model.named_parameters():
        param.requires_grad_(_is_adapter_param(name) and not (spec.shared_a and ".lora_A." in name))
    if spec.shared_a:
        _share_down_projections(model, spec)
    return model


def conv_norm(conv: nn.Module, norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``norm(conv(x))``, as one convolution when ``conv`` is a LoRA layer on the engine's
    fast path (:mod:`denoised_weights.core.fastlora`) and ``norm`` a BatchNorm that training
    does not change (eval mode, running statistics, affine parameters frozen: a LoRA
    fine-tune's). The norm is then a per-channel affine map folded into the merged weight, so
    neither its forward nor its backward runs over the activations. Anything else computes
    ``norm(conv(x))`` as written. (Importing this does not import peft.)"""
    import torch
    from torch import nn

    fused = getattr(conv, "forward_affine", None)
    if (
        fused is not None
        and isinstance(norm, nn.modules.batchnorm._BatchNorm)
        and not norm.training
        and norm.running_var is not None
        and not (norm.affine and (norm.weight.requires_grad or norm.bias.requires_grad))
    ):
        scale = torch.rsqrt(norm.running_var + norm.eps)
        shift = -norm.running_mean * scale
        if norm.affine:
            scale, shift = scale * norm.weight, shift * norm.weight + norm.bias
        out = fused(x, scale, shift)
        if out is not None:
            return out
    return norm(conv(x))


def _share_down_projections(model: nn.Module, spec: LoraSpec) -> None:
    """Every lora_A becomes a fixed orthogonal projection seeded by the spec and the layer."""
    import hashlib

    import torch

    for name in spec.target_modules:
        weight = model.get_submodule(name).lora_A[ADAPTER_NAME].weight
        seed = spec.init_seed * 1_000_003 + int(hashlib.sha256(name.encode()).hexdigest()[:8], 16)
        flat = torch.empty(weight.shape[0], weight[0].numel())
        torch.nn.init.orthogonal_(flat, generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            weight.copy_(flat.reshape(weight.shape))


def max_useful_rank(layers: list[Any]) -> int:
    """The largest rank any of these layers can use: min(inputs x kernel, outputs) of the
    widest (0 when none has weights)."""
    best = 0
    for layer in layers:
        weight = getattr(layer, "weight", None)
        if weight is None or weight.dim() < 2:
            continue
        best = max(best, min(weight.shape[0], weight[0].numel()))
    return best


def _is_adapter_param(name: str) -> bool:
    return ".lora_" in name or ".modules_to_save." in name


def lora_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of the model's LoRA state (peft key names, no adapter name)."""
    from peft import get_peft_model_state_dict

    state = get_peft_model_state_dict(model, adapter_name=ADAPTER_NAME)
    return {k: v.detach().clone().contiguous() for k, v in state.items()}


def lora_parameter_names(model: nn.Module) -> dict[str, str]:
    """LoRA state key -> the name of the model's parameter that holds it (peft inserts the
    adapter name: ``"stem.conv.lora_A.weight"`` -> ``"stem.conv.lora_A.default.weight"``),
    for functional calls that put generated weights in place of the adapter's."""
    out = {}
    for name, _ in model.named_parameters():
        if ".lora_" in name:
            out[name.replace(f".{ADAPTER_NAME}.", ".", 1)] = name
        elif ".modules_to_save." in name:
            out[name.replace(f".modules_to_save.{ADAPTER_NAME}.", ".", 1)] = name
    return out


def functional_forward(
    arch: Any, model: nn.Module, params: dict[str, torch.Tensor], batch: Any
) -> torch.Tensor:
    """``arch.forward(model, batch)`` with ``params`` (parameter name -> tensor, e.g. generated
    LoRA weights that carry gradients) in place of the model's own, without copying it."""
    import torch
    from torch import nn

    class _Forward(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = model

        def forward(self, inputs: Any) -> torch.Tensor:
            return arch.forward(self.net, inputs)

    wrapped = {f"net.{k}": v for k, v in params.items()}
    return torch.func.functional_call(_Forward(), wrapped, (batch,), strict=False)


def load_lora_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy ``state`` into the model's LoRA; every key must match in name and shape."""
    current = lora_state(model)
    missing = sorted(set(current) - set(state))
    unexpected = sorted(set(state) - set(current))
    if missing or unexpected:
        raise DnwError(
            "LoRA state does not fit this network "
            f"(missing: {', '.join(missing[:3]) or 'none'}; "
            f"unexpected: {', '.join(unexpected[:3]) or 'none'})"
        )
    for key, value in state.items():
        if tuple(value.shape) != tuple(current[key].shape):
            raise DnwError(
                f"LoRA tensor {key} has shape {tuple(value.shape)}, "
                f"network expects {tuple(current[key].shape)}"
            )
    from peft import set_peft_model_state_dict

    set_peft_model_state_dict(model, state, adapter_name=ADAPTER_NAME)


def save_adapter(
    path: str | Path,
    state: dict[str, torch.Tensor],
    spec: LoraSpec,
    *,
    fingerprint: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Write a PEFT adapter directory atomically; ``fingerprint`` and ``metadata`` ride along."""
    from denoised_weights.core.dataset import sha256_file

    path = Path(path)
    meta = {"dnw_fingerprint": fingerprint} if fingerprint else {}
    with atomic_dir(path) as tmp:
        save_tensors(tmp / ADAPTER_WEIGHTS, {PEFT_PREFIX + k: v for k, v in state.items()}, meta)
        spec.to_peft_config().save_pretrained(str(tmp))
        extra = {
            "fingerprint": fingerprint,
            "lora_spec": spec.to_dict(),
            **(metadata or {}),
            "sha256": sha256_file(tmp / ADAPTER_WEIGHTS),
        }
        (tmp / "dnw_adapter.json").write_text(json.dumps(extra, indent=2, default=str) + "\n")
    return path


def load_adapter(
    path: str | Path, *, expected_fingerprint: str | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``(state, info)`` from a PEFT adapter directory written by :func:`save_adapter`.

    ``info`` holds the fingerprint and LoRA spec. A different ``expected_fingerprint`` is an
    error: the adapter was made for another architecture, preset, rank or layout.
    """
    path = Path(path)
    if not (path / ADAPTER_WEIGHTS).is_file():
        raise DnwError(f"{path}: not a PEFT adapter directory (no {ADAPTER_WEIGHTS})")
    from denoised_weights.core.dataset import sha256_file
    from denoised_weights.core.io import read_json_object

    tensors, meta = load_tensors(path / ADAPTER_WEIGHTS, finite=True)
    state = {k.removeprefix(PEFT_PREFIX): v for k, v in tensors.items()}
    info: dict[str, Any] = {}
    info_file = path / "dnw_adapter.json"
    if info_file.is_file():
        info = read_json_object(info_file, "adapter description")
        digest = info.get("sha256")
        if digest and sha256_file(path / ADAPTER_WEIGHTS) != digest:
            raise DnwError(
                f"{path / ADAPTER_WEIGHTS} does not match the checksum in dnw_adapter.json: "
                "the adapter is damaged or half-written; make it again"
            )
    found = meta.get("dnw_fingerprint") or info.get("fingerprint")
    if expected_fingerprint and found and found != expected_fingerprint:
        raise FingerprintMismatchError(
            f"{path}: adapter was made for fingerprint "
            f"{found}, this network is {expected_fingerprint} "
            "(another architecture, preset, rank or block layout); use an adapter made for it"
        )
    info["fingerprint"] = found
    return state, info


def lora_products(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per LoRA layer, the weight update ``B·A`` as a matrix ``[out, in·k·k]`` (scale left out).

    The product is what a LoRA does to its layer; unlike A and B alone it does not depend on
    the factorisation, so distances between LoRAs are measured on it.
    """
    out = {}
    for key in sorted(state):
        if ".lora_A." not in key:
            continue
        layer = key.split(".lora_A.", 1)[0]
        a = state[key]
        b = state[key.replace(".lora_A.", ".lora_B.")]
        r = a.shape[0]
        out[layer] = b.reshape(b.shape[0], r).double() @ a.reshape(r, -1).double()
    return out


def lora_distance(x: dict[str, torch.Tensor], y: dict[str, torch.Tensor]) -> float:
    """Frobenius distance between two LoRA states' updates ``B·A``, over all layers."""
    px, py = lora_products(x), lora_products(y)
    if px.keys() != py.keys():
        raise ValueError("the two LoRA states target different layers")
    return float(sum(((px[k] - py[k]) ** 2).sum() for k in px)) ** 0.5

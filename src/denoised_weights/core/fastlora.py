"""peft LoRA layers whose training step runs one convolution (or one matmul) per layer.

peft computes an adapted conv as three kernels: the base conv, a rank-r conv at full resolution
and a 1x1 conv. On CPUs rank-r convolutions run far below the machine's rate, so a LoRA step
cost more than a full step of the same network. These layers compute the same function with the
adapted weight ``W + s·B·A`` merged per call, so the step costs one convolution per layer plus a
small matmul, and autograd carries the gradient to A and B through the merge.

They subclass peft's own ``Conv2d`` / ``Linear`` LoRA layers and are installed through peft's
extension point for custom layers (``LoraConfig._register_custom_module``): parameter names,
``get_peft_model_state_dict``, adapters on disk, merging and unloading are peft's, unchanged.
Anything this fast path does not cover (several active adapters, dropout, DoRA and other
variants, grouped or dilated convs, merged or disabled adapters, mixed-batch inference) takes
peft's own forward.

Padding: peft builds the rank-r conv with zero padding whatever the base conv uses. Where the
base conv pads otherwise (E2GAN's 7x7 stem and head reflect), merging into one conv would change
what the network computes at the border (up to 6e-3 on E2GAN's outputs). There the layer runs
the base conv on its own padding plus ``s·B·A`` as one conv on zero padding: two convolutions
instead of peft's three, and peft's result to float rounding. (Measured alternatives: one conv
on the reflected input minus a correction on the border bands, and one conv over the reflected
and zero-padded inputs stacked along channels; neither was faster here.)
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from peft.tuners.lora import layer as peft_layer


def _single_plain_adapter(layer: Any, x: torch.Tensor, kwargs: dict[str, Any]) -> str | None:
    """The one active adapter when the fast path applies to this call, else None."""
    if layer.disable_adapters or layer.merged or kwargs:
        return None
    active = [a for a in layer.active_adapters if a in layer.lora_A]
    if len(active) != 1:
        return None
    name = active[0]
    if name in layer.lora_variant or not isinstance(layer.lora_dropout[name], torch.nn.Identity):
        return None
    if layer.lora_bias.get(name, False):
        return None
    if x.dtype != layer.lora_A[name].weight.dtype:
        return None
    return name


class MergedConv2d(peft_layer.Conv2d):
    """peft's Conv2d LoRA; each call runs one conv with ``W + s·B·A`` (same results)."""

    def _fast_ok(self) -> bool:
        base = self.get_base_layer()
        return (
            base.groups == 1
            and tuple(base.dilation) == (1, 1)
            and not isinstance(base.padding, str)
            and base.padding_mode in ("zeros", "reflect", "replicate", "circular")
        )

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        name = None if args else _single_plain_adapter(self, x, kwargs)
        if name is None or not self._fast_ok():
            return super().forward(x, *args, **kwargs)
        base = self.get_base_layer()
        a = self.lora_A[name].weight
        b = self.lora_B[name].weight
        delta = (b.flatten(1) @ a.flatten(1)).view_as(base.weight) * self.scaling[name]
        if base.padding_mode == "zeros":
            return F.conv2d(x, base.weight + delta, base.bias, base.stride, base.padding)
        # the base pads otherwise (reflect): the base conv on its own padding, the LoRA's
        # update as one conv on zero padding, as peft computes it
        return base(x) + F.conv2d(x, delta, None, base.stride, base.padding)


class MergedLinear(peft_layer.Linear):
    """peft's Linear LoRA; each call runs one matmul with ``W + s·B·A`` (same results)."""

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        name = None if args else _single_plain_adapter(self, x, kwargs)
        base = self.get_base_layer()
        if name is None or self.fan_in_fan_out:
            return super().forward(x, *args, **kwargs)
        a = self.lora_A[name].weight
        b = self.lora_B[name].weight
        return F.linear(x, base.weight + (b @ a) * self.scaling[name], base.bias)


def register_fast_layers(config: Any) -> Any:
    """Install the merged layers on a peft ``LoraConfig`` (returns it)."""
    config._register_custom_module({torch.nn.Conv2d: MergedConv2d, torch.nn.Linear: MergedLinear})
    return config

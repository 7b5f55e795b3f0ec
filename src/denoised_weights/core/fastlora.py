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

#: convs with fewer output channels than this run channels-last on the two-conv path: oneDNN's
#: blocked kernels are slow for a handful of output channels (an image head: 3)
NARROW = 8


def _plain_adapter(layer: Any, x: torch.Tensor, args: tuple, kwargs: dict[str, Any]) -> str | None:
    """The one active adapter when the fast path applies to this call, else None (cheap:
    it runs for every layer at every step)."""
    if args or kwargs or layer.merged_adapters or layer._disable_adapters:
        return None
    active = layer._active_adapter
    name = active if isinstance(active, str) else active[0] if len(active) == 1 else None
    if name is None or name not in layer._dnw_plain:
        return None
    return name if x.dtype == layer._dnw_base.weight.dtype else None


class _Merged:
    """What both merged layers share: the base layer and which adapters are plain LoRA,
    looked up once instead of at every call."""

    def update_layer(self, adapter_name: str, *args: Any, **kwargs: Any) -> None:
        super().update_layer(adapter_name, *args, **kwargs)  # type: ignore[misc]
        # a plain attribute, not a submodule: the base layer stays registered once, as peft's
        object.__setattr__(self, "_dnw_base", self.get_base_layer())  # type: ignore[attr-defined]
        self._dnw_plain = {
            name
            for name in self.lora_A  # type: ignore[attr-defined]
            if name not in self.lora_variant  # type: ignore[attr-defined]
            and isinstance(self.lora_dropout[name], torch.nn.Identity)  # type: ignore[attr-defined]
            and not self.lora_bias.get(name, False)  # type: ignore[attr-defined]
            and self._geometry_ok()
        }

    def _geometry_ok(self) -> bool:
        return True


class MergedConv2d(_Merged, peft_layer.Conv2d):
    """peft's Conv2d LoRA; each call runs one conv with ``W + s·B·A`` (same results)."""

    def _geometry_ok(self) -> bool:
        base = self.get_base_layer()
        return (
            base.groups == 1
            and tuple(base.dilation) == (1, 1)
            and not isinstance(base.padding, str)
            and base.padding_mode in ("zeros", "reflect", "replicate", "circular")
        )

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        name = _plain_adapter(self, x, args, kwargs)
        if name is None:
            return super().forward(x, *args, **kwargs)
        return self._merged(x, name)

    def forward_affine(
        self, x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor
    ) -> torch.Tensor | None:
        """``scale·forward(x) + shift`` per output channel as one convolution with the scale
        folded into the merged weight; None where the fast path does not apply to this call
        (see :func:`denoised_weights.core.lora.conv_norm`)."""
        name = _plain_adapter(self, x, (), {})
        return None if name is None else self._merged(x, name, (scale, shift))

    def _merged(
        self, x: torch.Tensor, name: str, affine: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> torch.Tensor:
        """The layer's output, or ``scale·output + shift`` per channel with ``affine``."""
        base = self._dnw_base
        a = self.lora_A[name].weight
        b = self.lora_B[name].weight
        s = self.scaling[name]
        scale, shift = affine if affine is not None else (None, None)
        bias = base.bias
        if affine is not None:
            bias = shift if bias is None else bias * scale + shift
        if base.padding_mode == "zeros":  # W + s·B·A in one op
            weight = torch.addmm(base.weight.flatten(1), b.flatten(1), a.flatten(1), alpha=s)
            if scale is not None:
                weight = weight * scale[:, None]
            return F.conv2d(x, weight.view_as(base.weight), bias, base.stride, base.padding)
        # the base pads otherwise (reflect): the base conv on its own padding, the LoRA's
        # update as one conv on zero padding, as peft computes it
        delta = torch.mm(b.flatten(1), a.flatten(1))
        if s != 1:
            delta = delta * s
        weight = base.weight
        if scale is not None:
            delta = delta * scale[:, None]
            weight = weight * scale[:, None, None, None]
        delta = delta.view_as(base.weight)
        narrow = base.out_channels < NARROW
        # an input already channels-last (a CPU training step's) keeps its format on the way out
        restore = narrow and x.is_contiguous()
        if narrow:  # measured: 1.7x faster channels-last for the 3-channel image head
            x = x.contiguous(memory_format=torch.channels_last)
            weight = weight.contiguous(memory_format=torch.channels_last)
            delta = delta.contiguous(memory_format=torch.channels_last)
        padded = F.pad(x, _pad_arg(base.padding), mode=base.padding_mode)
        out = F.conv2d(padded, weight, bias, base.stride)
        out = out + F.conv2d(x, delta, None, base.stride, base.padding)
        return out.contiguous() if restore else out


def _pad_arg(padding: tuple[int, int]) -> tuple[int, int, int, int]:
    return (padding[1], padding[1], padding[0], padding[0])


class MergedLinear(_Merged, peft_layer.Linear):
    """peft's Linear LoRA; each call runs one matmul with ``W + s·B·A`` (same results)."""

    def _geometry_ok(self) -> bool:
        return not self.fan_in_fan_out

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        name = _plain_adapter(self, x, args, kwargs)
        if name is None:
            return super().forward(x, *args, **kwargs)
        base = self._dnw_base
        a = self.lora_A[name].weight
        b = self.lora_B[name].weight
        return F.linear(x, torch.addmm(base.weight, b, a, alpha=self.scaling[name]), base.bias)


def register_fast_layers(config: Any) -> Any:
    """Install the merged layers on a peft ``LoraConfig`` (returns it)."""
    config._register_custom_module({torch.nn.Conv2d: MergedConv2d, torch.nn.Linear: MergedLinear})
    return config

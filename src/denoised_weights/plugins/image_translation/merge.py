"""peft's merge of a LoRA adapter into its base network, optionally faithful to the padding the
adapter was trained with (see :class:`ZeroPaddedDelta` and ``dnw export``'s notes)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from denoised_weights.core.errors import DnwError


class ZeroPaddedDelta(nn.Module):
    """A merged convolution whose LoRA part keeps the zero padding it was trained with.

    peft (0.21) builds a conv's LoRA branch without the base layer's ``padding_mode``, so an
    adapter of a reflect-padded conv learns a zero-padded update. ``base`` holds the base
    weight with its own padding, ``delta`` the merged update ``B·A`` (one full conv, no
    low-rank factors) with zero padding: the sum is the adapter exactly as trained."""

    def __init__(self, base: nn.Conv2d, delta: torch.Tensor) -> None:
        super().__init__()
        self.base = base
        self.delta = nn.Conv2d(
            base.in_channels,
            base.out_channels,
            base.kernel_size,
            base.stride,
            base.padding,
            base.dilation,
            base.groups,
            bias=False,
        )
        self.delta.weight = nn.Parameter(delta.detach().clone(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.delta(x)


def merged_network(
    model: nn.Module, adapter_dir: str | Path, *, faithful: bool = False
) -> nn.Module:
    """``model`` (a base network without LoRA) with the adapter folder merged into its weights
    by peft (``PeftModel.from_pretrained(...).merge_and_unload()``).

    With ``faithful``, convolutions whose padding is not zeros keep their base weight and get
    the merged update as a zero-padded :class:`ZeroPaddedDelta` (see there): the result equals
    the adapter as trained, borders included."""
    from peft import PeftModel
    from peft.tuners.tuners_utils import BaseTunerLayer

    peft_model = PeftModel.from_pretrained(model, str(adapter_dir))
    kept = {}
    for name, module in peft_model.base_model.model.named_modules():
        base = module.get_base_layer() if isinstance(module, BaseTunerLayer) else None
        if faithful and isinstance(base, nn.Conv2d) and base.padding_mode != "zeros":
            delta = module.get_delta_weight(module.active_adapters[0]).detach().clone()
            kept[name] = (base.weight.detach().clone(), delta)
    merged = peft_model.merge_and_unload()
    left = [n for n, m in merged.named_modules() if isinstance(m, BaseTunerLayer)]
    if left:
        raise DnwError(f"peft left LoRA layers unmerged ({', '.join(left[:3])})")
    for name, (weight, delta) in kept.items():
        conv = merged.get_submodule(name)
        with torch.no_grad():
            conv.weight.copy_(weight)  # the base weight again; the update goes beside it
        parent, _, child = name.rpartition(".")
        setattr(
            merged.get_submodule(parent) if parent else merged, child, ZeroPaddedDelta(conv, delta)
        )
    return merged.eval()

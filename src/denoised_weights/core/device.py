"""Where training runs: CUDA when present, else the CPU, or the device the user names."""

from __future__ import annotations

from typing import TYPE_CHECKING

from denoised_weights.core.errors import DnwError

if TYPE_CHECKING:
    import torch


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``None``/``"auto"``: CUDA when present, else the CPU; else the device named."""
    import torch

    if isinstance(device, torch.device):
        return device
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise DnwError(
            f"--device {device!r} is not a device name (auto, cpu, cuda, cuda:1, ...)"
        ) from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DnwError(f"--device {device}: this machine has no CUDA device; use --device cpu")
    return dev

"""The example encoder of image translation: what an edit does, read from (A, B) pairs.

Each pair is shrunk to 32x32 and seen as nine channels (A, B and B - A), so the network sees
the source, the result and the change. A small CNN, then per channel the mean and the spread
over the image (an edit is mostly global: tints, curves, blur) go through an MLP to one token
per pair, in the width of the generator's text tokens.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

SIZE = 32


class PairEncoder(nn.Module):
    """``forward({"A": [N,3,H,W], "B": [N,3,H,W]})`` -> ``[N, dim]``."""

    def __init__(self, dim: int = 384, width: int = 32) -> None:
        super().__init__()
        self.dim = dim
        self.features = nn.Sequential(
            nn.Conv2d(9, width, 3, padding=1),
            nn.SiLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1),
            nn.SiLU(),
            nn.Conv2d(2 * width, 2 * width, 3, stride=2, padding=1),
            nn.SiLU(),
        )
        stats = 2 * (2 * width + 9)  # mean and spread of the features and of the raw channels
        self.head = nn.Sequential(nn.Linear(stats, 4 * width), nn.SiLU(), nn.Linear(4 * width, dim))

    def forward(self, data: Mapping[str, torch.Tensor]) -> torch.Tensor:
        a, b = data["A"], data["B"]
        if a.shape[-1] != SIZE or a.shape[-2] != SIZE:
            a = F.interpolate(
                a, size=(SIZE, SIZE), mode="bilinear", antialias=True, align_corners=False
            )
            b = F.interpolate(
                b, size=(SIZE, SIZE), mode="bilinear", antialias=True, align_corners=False
            )
        x = torch.cat([a, b, b - a], dim=1) * 2 - 1
        h = self.features(x)
        parts = [h.mean((2, 3)), h.std((2, 3)), x.mean((2, 3)), x.std((2, 3))]
        return self.head(torch.cat(parts, dim=1))

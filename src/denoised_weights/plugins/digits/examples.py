"""The example encoder of digits: what a transformation does, read from labelled examples.

A transformed input alone is ambiguous (a rotated 6 or a 9?); with its label the encoder can
tell how the class's usual look was changed. A small CNN reads the image, the label enters as
an embedding, and an MLP maps both to one token per example in the width of the generator's
text tokens.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

CLASSES = 10


class LabelledEncoder(nn.Module):
    """``forward({"x": [N,1,16,16], "y": [N]})`` -> ``[N, dim]``."""

    def __init__(self, dim: int = 384, width: int = 32) -> None:
        super().__init__()
        self.dim = dim
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1),
            nn.SiLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1),
            nn.SiLU(),
            nn.Conv2d(2 * width, 2 * width, 3, stride=2, padding=1),
            nn.SiLU(),
            nn.AdaptiveAvgPool2d(2),
            nn.Flatten(),
        )
        self.label = nn.Embedding(CLASSES, 4 * width)
        self.head = nn.Sequential(
            nn.Linear(8 * width + 4 * width, 4 * width), nn.SiLU(), nn.Linear(4 * width, dim)
        )

    def forward(self, data: Mapping[str, torch.Tensor]) -> torch.Tensor:
        x = data["x"]
        if x.dim() == 3:
            x = x.unsqueeze(1)
        return self.head(torch.cat([self.features(x.float()), self.label(data["y"].long())], dim=1))

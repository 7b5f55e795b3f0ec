"""A PNG grid of digit inputs with their true label and each model's predicted label."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

CELL = 64
GOOD, BAD, TEXT = (40, 160, 60), (200, 40, 40), (30, 30, 30)


def preview_grid(
    x: torch.Tensor,
    y: torch.Tensor,
    outputs: Mapping[str, torch.Tensor],
    path: str | Path,
    title: str = "",
    columns: int = 12,
) -> Path:
    """One column per example (up to ``columns``): the input, ``true: y`` and per output
    ``label: prediction`` (green when right, red when wrong)."""
    from PIL import Image, ImageDraw

    n = min(columns, len(x))
    line = 12
    top = line + 4 if title else 0
    height = top + CELL + line * (1 + len(outputs)) + 4
    canvas = Image.new("RGB", (n * CELL, height), "white")
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((4, 2), title, fill=TEXT)
    predicted = {k: v[:n].argmax(1) if v.dim() == 2 else v[:n] for k, v in outputs.items()}
    for i in range(n):
        pixels = (x[i, 0].clamp(0, 1) * 255).round().to(torch.uint8).numpy()
        tile = Image.fromarray(pixels, "L").resize((CELL - 4, CELL - 4), Image.NEAREST)
        canvas.paste(tile.convert("RGB"), (i * CELL + 2, top + 2))
        yy = top + CELL
        draw.text((i * CELL + 2, yy), f"true: {int(y[i])}", fill=TEXT)
        for label, pred in predicted.items():
            yy += line
            right = int(pred[i]) == int(y[i])
            draw.text(
                (i * CELL + 2, yy), f"{label[:7]}: {int(pred[i])}", fill=GOOD if right else BAD
            )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path

"""Write a folder of 128x128 A/B pairs with Pillow alone (not the project's catalogue).

Used to check that `dnw finetune --pairs DIR` learns from pairs made by another tool:
A = random crops of scikit-image's bundled photos, B = Pillow's duotone (ImageOps.colorize on
the grey image) followed by a slight unsharp mask.

    python tools/make_foreign_pairs.py OUT [N]
"""

import random
import sys
from pathlib import Path

import numpy as np
import skimage.data
from PIL import Image, ImageFilter, ImageOps

PHOTOS = ["astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry"]


def main(out: str, n: int = 200) -> None:
    rng = random.Random(0)
    photos = [
        Image.fromarray(np.asarray(getattr(skimage.data, name)())).convert("RGB") for name in PHOTOS
    ]
    for sub in ("A", "B"):
        (Path(out) / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        photo = rng.choice(photos)
        side = rng.randint(160, min(photo.size))
        x, y = rng.randint(0, photo.width - side), rng.randint(0, photo.height - side)
        a = photo.crop((x, y, x + side, y + side)).resize((128, 128), Image.Resampling.LANCZOS)
        b = ImageOps.colorize(
            ImageOps.grayscale(a), black="#1d1a4a", mid="#b0506a", white="#f7e3a1"
        )
        b = b.filter(ImageFilter.UnsharpMask(radius=2, percent=80))
        a.save(Path(out) / "A" / f"p{i:04d}.png")
        b.save(Path(out) / "B" / f"p{i:04d}.png")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 200)

"""20 photos of mixed sizes (64x48 to 4000x3000), modes (RGB, L, RGBA, P) and formats (JPEG, PNG,
WebP, BMP, TIFF) made from the bundled photos, plus one corrupt JPEG: the folder the README's
`dnw translate` figures were measured on.

    python tools/make_test_photos.py runs/photos
"""

import sys
from pathlib import Path

from PIL import Image

from denoised_weights.plugins.image_translation.photos import bundled_photos

SIZES = [
    (97, 61),
    (640, 480),
    (1024, 683),
    (333, 500),
    (2048, 1536),
    (256, 256),
    (801, 599),
    (1500, 1000),
    (120, 900),
    (512, 384),
    (1280, 720),
    (300, 301),
    (4000, 3000),
    (64, 48),
    (777, 1111),
    (960, 640),
    (200, 150),
    (1600, 1200),
    (450, 450),
    (1023, 767),
]
MODES = ["RGB", "L", "RGBA", "RGB", "P", "RGB", "L", "RGB", "RGBA", "RGB"] * 2
FORMATS = ["jpg", "png", "png", "webp", "png", "bmp", "jpg", "tiff", "png", "jpg"] * 2


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    photos = bundled_photos()
    for i, ((w, h), mode, fmt) in enumerate(zip(SIZES, MODES, FORMATS, strict=True)):
        image = Image.open(photos[i % len(photos)].path).convert("RGB").resize((w, h))
        image = image.convert(mode)
        if fmt == "jpg" and mode not in ("RGB", "L"):
            fmt = "png"
        image.save(out / f"photo{i:02d}_{w}x{h}_{mode}.{fmt}")
    (out / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg" * 10)
    print(f"{len(SIZES)} photos and corrupt.jpg in {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))

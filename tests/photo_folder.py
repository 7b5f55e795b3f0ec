"""A folder of real photos in mixed sizes, modes and formats (+ a corrupt file), made from the
bundled photos: what ``dnw translate`` is tested and measured on.

    python tests/photo_folder.py OUT [N]      # N photos (default 20) and one corrupt.jpg
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

#: (width, height, mode, file suffix, EXIF orientation) of each variant, in turn
VARIANTS = [
    (640, 427, "RGB", ".jpg", None),
    (333, 517, "RGB", ".png", None),
    (1201, 799, "RGB", ".jpg", None),
    (97, 64, "RGB", ".png", None),
    (512, 512, "L", ".png", None),  # greyscale
    (301, 451, "RGBA", ".png", None),  # transparency
    (400, 250, "I;16", ".png", None),  # 16-bit greyscale
    (256, 383, "P", ".gif", None),  # palette
    (800, 600, "RGB", ".webp", None),
    (450, 300, "RGB", ".jpg", 6),  # stored sideways, EXIF says rotate
    (1600, 1067, "RGB", ".jpg", None),
    (123, 321, "RGB", ".bmp", None),
    (720, 480, "CMYK", ".jpg", None),
    (350, 350, "RGB", ".tiff", None),
    (2048, 1365, "RGB", ".jpg", None),  # 2.8 megapixels
    (211, 157, "LA", ".png", None),
    (999, 333, "RGB", ".png", None),  # a panorama
    (64, 64, "RGB", ".jpg", None),
    (480, 640, "RGB", ".jpg", None),
    (15, 17, "RGB", ".png", None),  # tiny
]


def _photo(index: int, width: int, height: int) -> Image.Image:
    from denoised_weights.plugins.image_translation.photos import bundled_photos

    photos = bundled_photos()
    arr = photos[index % len(photos)].load()
    img = Image.fromarray(arr)
    # crop to the aspect ratio, then resize
    w, h = img.size
    target = width / height
    if w / h > target:
        nw = round(h * target)
        img = img.crop(((w - nw) // 2, 0, (w - nw) // 2 + nw, h))
    else:
        nh = round(w / target)
        img = img.crop((0, (h - nh) // 2, w, (h - nh) // 2 + nh))
    return img.resize((width, height), Image.Resampling.LANCZOS)


def make_photo(
    path: Path, index: int, width: int, height: int, mode: str, orientation=None
) -> Path:
    """One variant: ``width`` x ``height`` as displayed (EXIF orientation applied)."""
    img = _photo(index, width, height)
    if orientation == 6:  # stored sideways: a viewer rotates it back by 270 degrees
        img = img.transpose(Image.Transpose.ROTATE_90)
    if mode == "I;16":
        grey = np.asarray(img.convert("L"), dtype=np.uint16) * 257
        img = Image.fromarray(grey)
    elif mode == "RGBA":
        img = img.convert("RGBA")
        alpha = np.full((img.size[1], img.size[0]), 255, np.uint8)
        alpha[:, : img.size[0] // 3] = 96
        img.putalpha(Image.fromarray(alpha))
    elif mode == "LA":
        img = img.convert("LA")
    elif mode == "P":
        img = img.convert("P", palette=Image.Palette.ADAPTIVE)
    elif mode != "RGB":
        img = img.convert(mode)
    kwargs = {}
    if orientation:
        exif = Image.Exif()
        exif[0x0112] = orientation
        kwargs["exif"] = exif
    img.save(path, **kwargs)
    return path


def make_folder(out: str | Path, n: int = 20, corrupt: bool = True) -> list[Path]:
    """``n`` photos (cycling through :data:`VARIANTS`) and ``corrupt.jpg`` in ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(n):
        w, h, mode, suffix, orientation = VARIANTS[i % len(VARIANTS)]
        path = out / f"photo_{i:02d}_{w}x{h}_{mode.replace(';', '')}{suffix}"
        files.append(make_photo(path, i, w, h, mode, orientation))
    if corrupt:
        good = (out / "corrupt.jpg").with_suffix(".tmp.jpg")
        _photo(0, 200, 200).save(good)
        data = good.read_bytes()
        good.unlink()
        (out / "corrupt.jpg").write_bytes(data[:300])  # a header and nothing else
        files.append(out / "corrupt.jpg")
    return files


if __name__ == "__main__":
    target = Path(sys.argv[1])
    made = make_folder(target, int(sys.argv[2]) if len(sys.argv) > 2 else 20)
    print(f"{len(made)} files in {target}")

"""Reading and writing the image files a user hands to ``dnw translate``.

Any file Pillow opens is read, whatever its mode: EXIF orientation is applied, greyscale and
palette images become RGB, 16-bit and 32-bit greyscale keep their precision (Pillow's own RGB
conversion would clip them at 255), and transparent images are composited onto white for the
network while their alpha channel is kept for the output. An unreadable file, or one larger
than Pillow's decompression-bomb limit, is an :class:`UnreadableImage` whose message names it.
Outputs are 8-bit RGB PNGs (RGBA when the input had transparency), written atomically.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from denoised_weights.core.errors import DnwError


class UnreadableImage(DnwError):
    """A file that is not an image Pillow can read (or is too large to read safely)."""


@dataclass
class LoadedImage:
    """An input image: ``rgb`` ``[3, H, W]`` float32 in [0, 1] (oriented upright), ``alpha``
    ``[H, W]`` in [0, 1] or None, and the file's original ``mode`` and ``format``."""

    rgb: torch.Tensor
    alpha: torch.Tensor | None
    mode: str
    format: str | None

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)`` as Pillow reports sizes."""
        return int(self.rgb.shape[2]), int(self.rgb.shape[1])


@cache
def readable_suffixes() -> frozenset[str]:
    """File name suffixes of the formats Pillow can open here (lower case, with the dot)."""
    Image.init()
    return frozenset(ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN)


def _grey_array(im: Image.Image) -> np.ndarray:
    """``[H, W]`` float32 in [0, 1] of a 16-bit, 32-bit integer or float greyscale image."""
    arr = np.asarray(im).astype(np.float32)
    if im.mode.startswith("I;16"):
        arr /= 65535.0
    elif im.mode == "I":  # 16-bit PNGs open as "I" on some Pillow versions; 32-bit TIFFs too
        top = float(arr.max()) if arr.size else 0.0
        arr /= 255.0 if top <= 255 else 65535.0 if top <= 65535 else max(top, 1.0)
    elif im.mode == "F" and arr.size and float(np.nanmax(arr)) > 1.0:
        arr /= 255.0
    return np.nan_to_num(arr, nan=0.0).clip(0.0, 1.0)


def to_loaded(im: Image.Image, *, fmt: str | None = None) -> LoadedImage:
    """A decoded Pillow image as a :class:`LoadedImage` (EXIF orientation applied)."""
    mode = im.mode
    im = ImageOps.exif_transpose(im) or im
    alpha = None
    if im.mode in ("I", "F") or im.mode.startswith("I;16"):
        grey = torch.from_numpy(_grey_array(im))
        rgb = grey.unsqueeze(0).repeat(3, 1, 1)
    else:
        has_alpha = im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
            im.mode == "P" and "transparency" in im.info
        )
        if has_alpha:
            rgba = np.asarray(im.convert("RGBA"), dtype=np.float32) / 255.0
            a = rgba[..., 3:]
            rgb_np = rgba[..., :3] * a + (1.0 - a)  # onto white, as the photo loader does
            if float(a.min()) < 1.0:  # keep an alpha channel only when something is see-through
                alpha = torch.from_numpy(np.ascontiguousarray(rgba[..., 3]))
        else:
            rgb_np = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
        rgb = torch.from_numpy(np.ascontiguousarray(rgb_np)).permute(2, 0, 1).contiguous()
    return LoadedImage(rgb=rgb, alpha=alpha, mode=mode, format=fmt)


def load_image(path: str | Path) -> LoadedImage:
    """Read one image file; :class:`UnreadableImage` (naming the file and why) when it cannot
    be read, including images over Pillow's decompression-bomb limit."""
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                im.load()
                return to_loaded(im, fmt=im.format)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise UnreadableImage(
            f"{path}: larger than Pillow's decompression-bomb limit of "
            f"{Image.MAX_IMAGE_PIXELS:,} pixels; downscale it first"
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        reason = (str(exc).splitlines() or [""])[0] or type(exc).__name__
        if isinstance(exc, UnidentifiedImageError):
            reason = "not an image format Pillow reads"
        raise UnreadableImage(f"{path}: cannot read it ({reason})") from None
    except MemoryError:
        raise UnreadableImage(f"{path}: too large to decode in this machine's memory") from None


def to_pil(rgb: torch.Tensor, alpha: torch.Tensor | None = None) -> Image.Image:
    """``[3, H, W]`` in [0, 1] (+ alpha ``[H, W]``) as an 8-bit RGB or RGBA Pillow image."""
    arr = (rgb.clamp(0, 1).permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8)
    if alpha is None:
        return Image.fromarray(arr, "RGB")
    a = (alpha.clamp(0, 1).numpy() * 255.0).round().astype(np.uint8)
    return Image.fromarray(np.dstack([arr, a]), "RGBA")


def save_png(path: Path, image: Image.Image) -> Path:
    """Write ``image`` as a PNG at ``path`` atomically (a temporary name, then a rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        image.save(tmp, format="PNG")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path

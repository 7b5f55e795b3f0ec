"""Reading a user's image files: any mode and format Pillow reads, EXIF orientation applied,
transparency composited onto white, huge files refused (or decoded small, for JPEG) instead
of exhausting memory. Every failure is a one-line :class:`DnwError` naming the file."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

from denoised_weights.core.errors import DnwError


def open_rgb(path: str | Path, *, max_side: int | None = None):
    """The image at ``path`` as an RGB ``PIL.Image`` (shrunk to ``max_side`` when given)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                if max_side and im.format == "JPEG":
                    im.draft("RGB", (max_side, max_side))  # decode a JPEG at a reduced scale
                im.load()
                im = ImageOps.exif_transpose(im)
                if im.mode in ("RGBA", "LA", "P", "PA"):  # composite transparency onto white
                    im = im.convert("RGBA")
                    im = Image.alpha_composite(Image.new("RGBA", im.size, (255,) * 4), im)
                elif im.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit greys: scale to 8 bits
                    im = im.point(lambda v: v / 257).convert("L")
                rgb = im.convert("RGB")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        numbers = [int(n) for n in re.findall(r"\d+", str(exc))]
        size = (
            f"{numbers[0] / 1e6:.0f} megapixels; the limit is {numbers[1] / 1e6:.0f}"
            if len(numbers) >= 2
            else "too many pixels"
        )
        raise DnwError(f"{path}: too large to decode safely ({size}); shrink it first") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DnwError(f"{path}: not a readable image ({reason}); fix or remove it") from None
    if max_side and max(rgb.size) > max_side:
        rgb.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return rgb

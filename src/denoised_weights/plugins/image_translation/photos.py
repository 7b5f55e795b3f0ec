"""Real photographs available offline, cut into random crops for image-translation GANs.

The bundled set comes from installed packages: scikit-image's colour photos of real scenes,
matplotlib's ``grace_hopper`` sample, scikit-learn's sample images when scikit-learn is
installed, and OpenCV's sample photos when Debian's ``opencv-doc`` is installed. A user's
folder of images can replace it.

Whole photos are split into ``train`` and ``eval`` by a hash of their group name (photos of
one scene, like a stereo pair, share a group), so eval crops never come from a photo that
training crops come from, and a photo's split does not depend on which other photos exist.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from denoised_weights.core.errors import DnwError

SPLITS = ("train", "eval")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
#: a group whose hash falls below this is an eval group
EVAL_FRACTION = 0.2
#: the split never has fewer eval groups than this (when there are more groups than this)
MIN_EVAL_GROUPS = 2
#: salt of the split hash; changing it changes which photos are eval photos
_SPLIT_SALT = "denoised-weights/photos/v1"
#: crops cover this range of the photo's shorter side (as a fraction of it)
CROP_SCALE = (0.3, 1.0)
MIN_PHOTO_SIDE = 16
#: larger photos are shrunk to this longer side when decoded (bounds the cache's memory)
MAX_SIDE = 2048

# scikit-image's colour photographs of real scenes (file, group); others are grey,
# synthetic, microscopy or astronomy images
_SKIMAGE_PHOTOS = (
    ("astronaut.png", "astronaut"),
    ("chelsea.png", "chelsea"),
    ("coffee.png", "coffee"),
    ("rocket.jpg", "rocket"),
    ("motorcycle_left.png", "motorcycle"),  # a stereo pair: one group
    ("motorcycle_right.png", "motorcycle"),
)
_SKLEARN_PHOTOS = ("china.jpg", "flower.jpg")
# colour photos among OpenCV's sample data, where Debian's opencv-doc puts them
_OPENCV_DIRS = (
    "/usr/share/doc/opencv-doc/examples/data",
    "/usr/share/opencv4/samples/data",
)
_OPENCV_PHOTOS = (
    "baboon.jpg",
    "fruits.jpg",
    "building.jpg",
    "butterfly.jpg",
    "home.jpg",
    "messi5.jpg",
    "orange.jpg",
    "apple.jpg",
    "aero1.jpg",
    "aero3.jpg",
    "graf1.png",
    "HappyFish.jpg",
)


@dataclass(frozen=True)
class Photo:
    """One photograph: a stable ``name``, the ``group`` that decides its split, its file."""

    name: str
    path: Path
    group: str

    def load(self) -> np.ndarray:
        """The photo as an ``[H, W, 3]`` RGB uint8 array."""
        return _levels(str(self.path), _mtime(self.path))[0].permute(1, 2, 0).numpy().copy()

    def tensor(self) -> torch.Tensor:
        """The photo as a ``[3, H, W]`` float32 tensor in [0, 1]."""
        return _levels(str(self.path), _mtime(self.path))[0].float().div_(255.0)


def _package_dir(module: str) -> Path | None:
    """The folder of an installed package, without importing it."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def bundled_photos() -> list[Photo]:
    """Photos shipped by installed packages, sorted by name."""
    photos: list[Photo] = []
    skimage = _package_dir("skimage")
    if skimage is not None:
        for file, group in _SKIMAGE_PHOTOS:
            path = skimage / "data" / file
            if path.is_file():
                photos.append(Photo(f"skimage/{Path(file).stem}", path, f"skimage/{group}"))
    try:
        from matplotlib import cbook

        path = Path(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
        if path.is_file():
            photos.append(Photo("matplotlib/grace_hopper", path, "matplotlib/grace_hopper"))
    except (ImportError, OSError, ValueError):
        pass
    sklearn = _package_dir("sklearn")
    if sklearn is not None:
        for file in _SKLEARN_PHOTOS:
            path = sklearn / "datasets" / "images" / file
            if path.is_file():
                name = f"sklearn/{Path(file).stem}"
                photos.append(Photo(name, path, name))
    for folder in _OPENCV_DIRS:
        for file in _OPENCV_PHOTOS:
            path = Path(folder) / file
            name = f"opencv/{Path(file).stem}"
            if path.is_file() and all(p.name != name for p in photos):
                photos.append(Photo(name, path, name))
    return sorted(photos, key=lambda p: p.name)


def _folder_photos(folder: Path) -> list[Photo]:
    """Every image under ``folder`` (recursively), each checked to be readable."""
    if not folder.is_dir():
        raise DnwError(f"photos folder {folder} does not exist or is not a folder")
    files = sorted(
        p
        for p in folder.rglob("*")
        if p.is_file()
        and p.suffix.lower() in IMAGE_SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )
    if not files:
        raise DnwError(
            f"photos folder {folder} has no images ({', '.join(IMAGE_SUFFIXES)}); add some"
        )
    photos = []
    for path in files:
        _check_header(path)
        name = path.relative_to(folder).as_posix()
        photos.append(Photo(name, path, name))
    return photos


def list_photos(photos_dir: str | Path | None = None) -> list[Photo]:
    """The bundled photos, or the images in ``photos_dir`` when given, sorted by name.

    Raises :class:`DnwError` for a missing or empty folder, or a file that is not an image.
    """
    if photos_dir is not None:
        return _folder_photos(Path(photos_dir).expanduser())
    photos = bundled_photos()
    if not photos:
        raise DnwError(
            "no bundled photos found (scikit-image and matplotlib provide them); "
            "install them or pass a photos folder"
        )
    return photos


def _group_hash(group: str) -> float:
    """A number in [0, 1) fixed by the group's name."""
    digest = hashlib.sha256(f"{_SPLIT_SALT}:{group}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def split_photos(photos: Sequence[Photo]) -> dict[str, list[Photo]]:
    """``{"train": [...], "eval": [...]}``: whole photos, each group on one side.

    A group is eval when its hash is below :data:`EVAL_FRACTION`; if that makes fewer than
    :data:`MIN_EVAL_GROUPS` eval groups, the lowest-hash groups are added (keeping at least
    one train group). One photo alone is train only.
    """
    groups = sorted({p.group for p in photos}, key=lambda g: (_group_hash(g), g))
    below = sum(_group_hash(g) < EVAL_FRACTION for g in groups)
    n_eval = max(below, min(MIN_EVAL_GROUPS, len(groups) - 1))
    eval_groups = set(groups[:n_eval])
    return {
        "train": [p for p in photos if p.group not in eval_groups],
        "eval": [p for p in photos if p.group in eval_groups],
    }


def photos_for_split(split: str = "train", photos_dir: str | Path | None = None) -> list[Photo]:
    """The photos of one split (``"train"`` or ``"eval"``)."""
    if split not in SPLITS:
        raise DnwError(f"unknown photo split {split!r}; use one of {', '.join(SPLITS)}")
    photos = split_photos(list_photos(photos_dir))[split]
    if not photos:
        where = f"folder {photos_dir}" if photos_dir is not None else "bundled set"
        raise DnwError(f"the {where} has no {split} photos; it needs at least 2 photos")
    return photos


def _mtime(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError as exc:
        raise DnwError(f"cannot read photo {path}: {exc.strerror or exc}") from None


def _check_header(path: Path) -> None:
    """Raise :class:`DnwError` unless ``path`` opens as an image (reads the header only)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            size = im.size
    except Image.DecompressionBombError:
        return  # decoded small when used (JPEG) or refused there with its own message
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise DnwError(f"cannot read photo {path}: not a valid image ({exc})") from None
    if min(size) < MIN_PHOTO_SIDE:
        raise DnwError(
            f"photo {path} is too small ({size[0]}x{size[1]}); need >= {MIN_PHOTO_SIDE} px"
        )


def _decode(path: str) -> torch.Tensor:
    """``[3, H, W]`` uint8 RGB tensor of an image file, shrunk to at most :data:`MAX_SIDE`."""
    from denoised_weights.plugins.image_translation.images import open_rgb

    try:
        array = np.array(open_rgb(path, max_side=MAX_SIDE), dtype=np.uint8)
    except DnwError as exc:
        raise DnwError(f"cannot read photo {exc}") from None
    if min(array.shape[:2]) < MIN_PHOTO_SIDE:
        h, w = array.shape[:2]
        raise DnwError(f"photo {path} is too small ({w}x{h}); need >= {MIN_PHOTO_SIDE} px")
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


@functools.lru_cache(maxsize=64)
def _levels(path: str, mtime_ns: int) -> tuple[torch.Tensor, ...]:
    """The decoded photo (uint8 ``[3, H, W]``), then antialiased halvings down to ~32 px.

    Cached, keyed by the file's modification time; the halvings make small crops cheap.
    """
    levels = [_decode(path)]
    while min(levels[-1].shape[-2:]) >= 64:
        x = levels[-1].unsqueeze(0).float()
        half = F.interpolate(x, scale_factor=0.5, mode="bilinear", antialias=True)[0]
        levels.append(half.round_().clamp_(0, 255).to(torch.uint8))
    return tuple(levels)


def sample_crops(
    n: int,
    size: int,
    *,
    split: str = "train",
    seed: int = 0,
    photos_dir: str | Path | None = None,
) -> torch.Tensor:
    """``[n, 3, size, size]`` float32 crops in [0, 1] from the photos of ``split``.

    Each crop picks a photo group uniformly (then a photo in it), a square whose side is a
    random fraction (:data:`CROP_SCALE`) of the photo's shorter side at a random place,
    resizes it to ``size`` (antialiased) and flips it horizontally with probability 1/2.
    The same arguments give the same tensor.
    """
    if n < 0 or size < 1:
        raise DnwError(f"need n >= 0 and size >= 1 for crops, got n={n}, size={size}")
    photos = photos_for_split(split, photos_dir)
    out = torch.empty(n, 3, size, size)
    if n == 0:
        return out
    groups: dict[str, list[Photo]] = {}
    for photo in photos:
        groups.setdefault(photo.group, []).append(photo)
    members = list(groups.values())
    g = torch.Generator().manual_seed(int(seed))
    u = torch.rand(n, 6, generator=g, dtype=torch.float64).tolist()
    lo, hi = CROP_SCALE
    for i in range(n):
        group = members[min(int(u[i][4] * len(members)), len(members) - 1)]
        photo = group[min(int(u[i][5] * len(group)), len(group) - 1)]
        levels = _levels(str(photo.path), _mtime(photo.path))
        h, w = levels[0].shape[-2:]
        side = max(1, round((lo + (hi - lo) * u[i][0]) * min(h, w)))
        top = int(u[i][1] * (h - side + 1))
        left = int(u[i][2] * (w - side + 1))
        # the smallest pyramid level where the crop is still at least `size` pixels wide
        level = 0
        while level + 1 < len(levels) and side / 2 ** (level + 1) >= size:
            level += 1
        img = levels[level]
        f = img.shape[-1] / w  # exact scale of this level
        t, l_ = round(top * f), round(left * f)
        s = max(1, min(round(side * f), img.shape[-2] - t, img.shape[-1] - l_))
        crop = img[:, t : t + s, l_ : l_ + s].unsqueeze(0).float().div_(255.0)
        if s != size:
            crop = F.interpolate(
                crop, size=(size, size), mode="bilinear", antialias=True, align_corners=False
            )
        crop = crop[0]
        if u[i][3] < 0.5:
            crop = crop.flip(-1)
        out[i] = crop
    return out.clamp_(0.0, 1.0)

"""Pair sources: procedural catalogue edits of real photos, and folders of existing pairs.

Folders follow the pix2pix conventions users already have: ``A/`` and ``B/`` subfolders with
the same file names, or a flat folder of side-by-side ``AB`` images (A left, B right).
Any size or mode is accepted and resized to the architecture's square size.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from denoised_weights.core.errors import DnwError
from denoised_weights.core.interfaces import PairSource
from denoised_weights.core.io import atomic_dir

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
#: pairs are resized to the network's size: larger files are shrunk while decoding
MAX_SIDE = 2048
SPLITS = ("train", "eval")


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise DnwError(f"unknown split {split!r}: use one of {', '.join(SPLITS)}")
    return split


class CataloguePairs(PairSource):
    """A concept's edit (a catalogue concept, or any id or prompt :func:`.parsing.resolve`
    reads, such as a sampled one) applied to random crops of real photos.

    ``split="eval"`` crops come from photos never used for ``train`` crops.
    """

    def __init__(self, concept: str, size: int = 64, photos_dir: str | Path | None = None) -> None:
        from denoised_weights.plugins.image_translation.parsing import resolve

        self.concept = resolve(concept)
        self.size = size
        self.photos_dir = photos_dir

    @property
    def prompts(self) -> tuple[str, ...]:
        return self.concept.prompts

    def pairs(
        self, n: int, *, split: str = "train", seed: int = 0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        from denoised_weights.plugins.image_translation.concepts import apply_concept
        from denoised_weights.plugins.image_translation.photos import sample_crops

        a = sample_crops(
            n, self.size, split=_check_split(split), seed=seed, photos_dir=self.photos_dir
        )
        return a, apply_concept(self.concept, a).clamp(0, 1)


def _load_rgb(path: Path) -> Image.Image:
    from denoised_weights.plugins.image_translation.images import open_rgb

    return open_rgb(path, max_side=MAX_SIDE)


def _to_tensor(img: Image.Image, size: int) -> torch.Tensor:
    img = img.resize((size, size), Image.Resampling.BICUBIC)
    return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1).float() / 255.0


def _images(folder: Path) -> list[Path]:
    files = sorted(
        p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )
    seen: dict[str, Path] = {}
    for p in files:
        if p.stem in seen:
            raise DnwError(
                f"{seen[p.stem]} and {p.name} are two files "
                "for one pair (same name); keep one of them"
            )
        seen[p.stem] = p
    return files


def folder_pair_paths(root: str | Path) -> list[tuple[Path, Path | None]]:
    """``[(A path, B path)]`` for the A/B convention, or ``[(AB path, None)]`` for side-by-side."""
    root = Path(root)
    if not root.exists():
        raise DnwError(f"{root}: no such folder")
    if not root.is_dir():
        raise DnwError(
            f"{root}: not a folder (expected A/ and B/ subfolders or side-by-side AB images)"
        )
    a_dir, b_dir = root / "A", root / "B"
    if a_dir.is_dir() or b_dir.is_dir():
        if not (a_dir.is_dir() and b_dir.is_dir()):
            missing = b_dir if a_dir.is_dir() else a_dir
            raise DnwError(f"{missing}: missing; an A/B pairs folder needs both A/ and B/")
        a_files = {p.stem: p for p in _images(a_dir)}
        b_files = {p.stem: p for p in _images(b_dir)}
        for stem in sorted(a_files.keys() - b_files.keys()):
            raise DnwError(f"{a_files[stem]} has no partner in {b_dir} (same file name expected)")
        for stem in sorted(b_files.keys() - a_files.keys()):
            raise DnwError(f"{b_files[stem]} has no partner in {a_dir} (same file name expected)")
        pairs = [(a_files[s], b_files[s]) for s in sorted(a_files)]
    else:
        pairs = [(p, None) for p in _images(root)]
    if not pairs:
        raise DnwError(
            f"{root}: no images found (expected A/ and B/ "
            "with matching names, or side-by-side AB images)"
        )
    return pairs


def load_folder_pairs(root: str | Path, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every pair of a folder as ``(A, B)`` tensors in [0, 1], resized to ``size``."""
    a_list, b_list = [], []
    for a_path, b_path in folder_pair_paths(root):
        if b_path is None:
            ab = _load_rgb(a_path)
            w, h = ab.size
            if w < 2 or w < h:
                raise DnwError(
                    f"{a_path}: a side-by-side AB image must be wider than tall (A left, B right)"
                )
            a_img, b_img = ab.crop((0, 0, w // 2, h)), ab.crop((w // 2, 0, 2 * (w // 2), h))
        else:
            a_img, b_img = _load_rgb(a_path), _load_rgb(b_path)
        a_list.append(_to_tensor(a_img, size))
        b_list.append(_to_tensor(b_img, size))
    return torch.stack(a_list), torch.stack(b_list)


class FolderPairs(PairSource):
    """Pairs from a folder; ``split`` selects a fixed 90/10 train/eval division of the files."""

    def __init__(self, path: str | Path, size: int = 64, eval_fraction: float = 0.1) -> None:
        self.path = Path(path)
        self.size = size
        self.eval_fraction = eval_fraction
        self._cache: tuple[torch.Tensor, torch.Tensor] | None = None

    def all_pairs(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._cache is None:
            self._cache = load_folder_pairs(self.path, self.size)
        return self._cache

    def split_indices(self, total: int) -> dict[str, list[int]]:
        """A fixed division: every ``round(1/eval_fraction)``-th pair is held out for eval."""
        if total < 2:
            return {"train": list(range(total)), "eval": list(range(total))}
        stride = max(2, round(1 / self.eval_fraction)) if self.eval_fraction > 0 else total + 1
        eval_idx = [i for i in range(total) if i % stride == stride - 1] or [total - 1]
        train_idx = [i for i in range(total) if i not in set(eval_idx)]
        return {"train": train_idx, "eval": eval_idx}

    def pairs(
        self, n: int | None = None, *, split: str = "train", seed: int = 0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        a, b = self.all_pairs()
        idx = self.split_indices(len(a))[_check_split(split)]
        if n is not None and n < len(idx):
            g = torch.Generator().manual_seed(seed)
            idx = [idx[i] for i in torch.randperm(len(idx), generator=g)[:n].tolist()]
        return a[idx], b[idx]


def write_pairs(
    out: str | Path, a: torch.Tensor, b: torch.Tensor, info: dict | None = None
) -> Path:
    """Write ``A/NNNN.png`` and ``B/NNNN.png`` (+ ``pairs.json``) atomically."""
    out = Path(out)
    with atomic_dir(out) as tmp:
        (tmp / "A").mkdir()
        (tmp / "B").mkdir()
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            for folder, img in (("A", x), ("B", y)):
                arr = (img.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
                Image.fromarray(arr).save(tmp / folder / f"{i:05d}.png")
        (tmp / "pairs.json").write_text(
            json.dumps({"count": len(a), **(info or {})}, indent=2) + "\n"
        )
    return out


def save_grid(path: str | Path, rows: list[torch.Tensor], pad: int = 2) -> Path:
    """Save images as a grid PNG: one row per tensor ``[n, 3, H, W]``
    (e.g. source/target/output)."""
    n = min(len(r) for r in rows)
    _, _, h, w = rows[0].shape
    canvas = torch.ones(3, len(rows) * (h + pad) + pad, n * (w + pad) + pad)
    for r, imgs in enumerate(rows):
        for c in range(n):
            y, x = pad + r * (h + pad), pad + c * (w + pad)
            canvas[:, y : y + h, x : x + w] = imgs[c].clamp(0, 1)
    arr = (canvas.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def save_labelled_grid(path: Path, rows: list[tuple[str, torch.Tensor]], title: str = "") -> Path:
    """One labelled strip per row of images ``[n, 3, H, W]`` (input, target, each output)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(rows), 1, figsize=(8, 1.1 * len(rows)), squeeze=False)
    for ax, (label, imgs) in zip(axes[:, 0], rows, strict=True):
        strip = torch.cat(list(imgs.clamp(0, 1)), dim=2).permute(1, 2, 0).numpy()
        ax.imshow(strip)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    if title:
        fig.suptitle(title[:80], fontsize=9)
    fig.tight_layout()
    fig.subplots_adjust(left=0.16)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path

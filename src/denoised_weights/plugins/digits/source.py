"""The source images: scikit-learn's 1797 bundled 8x8 handwritten digits, at 16x16.

A fixed fifth of them (chosen by a SHA-256 of the index) is kept for evaluation; training
examples never use those.
"""

from __future__ import annotations

import hashlib
from functools import cache

import torch
import torch.nn.functional as F

from denoised_weights.core.errors import DnwError

IMAGE_SIZE = 16
EVAL_FRACTION = 0.2
DATA_SPLITS = ("train", "eval")


@cache
def _digits() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.as_tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    x = F.interpolate(x, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False)
    return x.clamp(0.0, 1.0).contiguous(), torch.as_tensor(bunch.target, dtype=torch.int64)


def digits() -> tuple[torch.Tensor, torch.Tensor]:
    """``(images [1797, 1, 16, 16] float32 in [0, 1], labels [1797] int64)``."""
    x, y = _digits()
    return x.clone(), y.clone()


def _is_eval(index: int) -> bool:
    digest = hashlib.sha256(f"digits-eval|{index}".encode()).hexdigest()
    return int(digest[:8], 16) < EVAL_FRACTION * 2**32


@cache
def _indices(split: str) -> torch.Tensor:
    n = len(_digits()[1])
    return torch.tensor([i for i in range(n) if _is_eval(i) == (split == "eval")])


def split_indices(split: str) -> torch.Tensor:
    """The source images of ``"train"`` or ``"eval"`` data (disjoint, fixed)."""
    if split not in DATA_SPLITS:
        raise DnwError(f"unknown data split {split!r}; use one of {', '.join(DATA_SPLITS)}")
    return _indices(split).clone()


def sample_sources(
    split: str, n: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(images, labels, source indices)`` of ``n`` examples of one split, fixed by ``seed``.

    Examples are drawn without repetition until the split's images run out; the first ``k``
    of ``n`` do not depend on ``n``.
    """
    if not isinstance(n, int) or n < 1:
        raise DnwError(f"the number of examples must be a positive integer, got {n!r}")
    pool = split_indices(split)
    digest = hashlib.sha256(f"digits-sources|{split}|{seed}".encode()).hexdigest()
    g = torch.Generator().manual_seed(int(digest[:15], 16))
    rounds = -(-n // len(pool))
    order = torch.cat([pool[torch.randperm(len(pool), generator=g)] for _ in range(rounds)])[:n]
    x, y = _digits()
    return x[order], y[order], order

"""Offline photos: the bundled set, the train/eval split, crops and user folders."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from denoised_weights.core.errors import DnwError
from denoised_weights.plugins.image_translation import photos as P


def _write_photos(folder, n: int, size=(80, 60)) -> None:
    rng = np.random.default_rng(0)
    for i in range(n):
        array = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(array).save(folder / f"img{i}.{'png' if i % 2 else 'jpg'}")


def test_bundled_set_and_split_are_disjoint() -> None:
    photos = P.list_photos()
    names = [p.name for p in photos]
    assert len(names) >= 5 and len(set(names)) == len(names)
    assert "skimage/astronaut" in names and "matplotlib/grace_hopper" in names
    split = P.split_photos(photos)
    train = {p.name for p in split["train"]}
    evals = {p.name for p in split["eval"]}
    assert not train & evals and train | evals == set(names)
    assert len(evals) >= 2 and len(evals) >= 0.2 * len(names)
    # groups never straddle the split (the stereo pair stays together)
    assert not {p.group for p in split["train"]} & {p.group for p in split["eval"]}
    # a photo's split does not depend on the others present
    assert (
        P.split_photos([p for p in photos if p.name != "skimage/coffee"])["eval"] == split["eval"]
    )


def test_photo_loads_rgb_uint8() -> None:
    photo = P.list_photos()[0]
    array = photo.load()
    assert array.dtype == np.uint8 and array.ndim == 3 and array.shape[2] == 3
    tensor = photo.tensor()
    assert tensor.dtype == torch.float32 and tensor.shape == (3, *array.shape[:2])
    assert torch.allclose(tensor, torch.from_numpy(array).permute(2, 0, 1).float() / 255)


def test_crops_shape_range_and_determinism() -> None:
    a = P.sample_crops(12, 32, seed=3)
    assert a.shape == (12, 3, 32, 32) and a.dtype == torch.float32
    assert a.min() >= 0 and a.max() <= 1 and a.std() > 0.05
    assert torch.equal(a, P.sample_crops(12, 32, seed=3))
    assert not torch.equal(a, P.sample_crops(12, 32, seed=4))
    e = P.sample_crops(4, 32, split="eval", seed=3)
    assert e.shape == (4, 3, 32, 32) and not torch.equal(e, a[:4])
    assert P.sample_crops(0, 16).shape == (0, 3, 16, 16)
    with pytest.raises(DnwError, match="split"):
        P.sample_crops(1, 16, split="test")


def test_user_folder(tmp_path) -> None:
    _write_photos(tmp_path, 6)
    (tmp_path / "notes.txt").write_text("not an image, ignored")
    photos = P.list_photos(tmp_path)
    assert [p.name for p in photos] == [f"img{i}.{'png' if i % 2 else 'jpg'}" for i in range(6)]
    split = P.split_photos(photos)
    assert split["train"] and len(split["eval"]) >= 2
    crops = P.sample_crops(5, 24, split="eval", seed=1, photos_dir=tmp_path)
    assert crops.shape == (5, 3, 24, 24)
    assert torch.equal(crops, P.sample_crops(5, 24, split="eval", seed=1, photos_dir=str(tmp_path)))


def test_folder_errors(tmp_path) -> None:
    with pytest.raises(DnwError, match="does not exist"):
        P.list_photos(tmp_path / "missing")
    with pytest.raises(DnwError, match="no images"):
        P.list_photos(tmp_path)
    _write_photos(tmp_path, 1)
    with pytest.raises(DnwError, match="no eval photos"):
        P.sample_crops(1, 16, split="eval", photos_dir=tmp_path)
    (tmp_path / "broken.png").write_bytes(b"not a png at all")
    with pytest.raises(DnwError, match=r"broken\.png") as info:
        P.list_photos(tmp_path)
    assert "\n" not in str(info.value)

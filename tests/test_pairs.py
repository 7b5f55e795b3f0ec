"""Pair sources and the pix2pix folder conventions, with the errors a user can cause."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import denoised_weights as dnw
from denoised_weights.cli import create_cli
from denoised_weights.core.plugins import get_plugin_manager
from denoised_weights.plugins.image_translation.pairs import (
    CataloguePairs,
    FolderPairs,
    write_pairs,
)


def save(path, w, h, mode="RGB", value=100):
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.full((h, w, 3), value, np.uint8)
    Image.fromarray(arr).convert(mode).save(path)


def ab_folder(root, n=4, size=(128, 128), mode="RGB"):
    for i in range(n):
        save(root / "A" / f"img{i}.png", *size, mode=mode, value=20 * i)
        save(root / "B" / f"img{i}.png", *size, mode=mode, value=255 - 20 * i)
    return root


def run(*args):
    return CliRunner().invoke(create_cli(get_plugin_manager()), [str(a) for a in args])


def test_catalogue_pairs_apply_the_edit_and_split_photos():
    src = CataloguePairs("sepia-0.8", size=32)
    a, b = src.pairs(4, seed=1)
    assert a.shape == b.shape == (4, 3, 32, 32) and b.min() >= 0 and b.max() <= 1
    assert not torch.equal(a, b)
    a2, _ = src.pairs(4, seed=1)
    assert torch.equal(a, a2)
    ea, _ = src.pairs(4, split="eval", seed=1)
    assert not torch.equal(ea, a)
    with pytest.raises(dnw.DnwError, match="unknown split"):
        src.pairs(2, split="test")


def test_ab_folder_any_size_and_mode(tmp_path):
    ab_folder(tmp_path / "p", n=10, size=(128, 96), mode="L")
    src = FolderPairs(tmp_path / "p", size=64)
    a, _ = src.all_pairs()
    assert a.shape == (10, 3, 64, 64) and abs(a[1].mean().item() - 20 / 255) < 0.01
    tr, ev = src.pairs(split="train"), src.pairs(split="eval")
    assert len(tr[0]) == 9 and len(ev[0]) == 1  # a fixed 10% held out


def test_side_by_side_folder(tmp_path):
    img = np.zeros((32, 64, 3), np.uint8)
    img[:, 32:] = 255
    (tmp_path / "ab").mkdir()
    Image.fromarray(img).save(tmp_path / "ab" / "x.jpg")
    a, b = FolderPairs(tmp_path / "ab", size=16).all_pairs()
    assert a.max() < 0.05 and b.min() > 0.95


def test_write_pairs_round_trip(tmp_path):
    a, b = torch.rand(3, 3, 16, 16), torch.rand(3, 3, 16, 16)
    write_pairs(tmp_path / "w", a, b, {"concept": "c"})
    ra, rb = FolderPairs(tmp_path / "w", size=16).all_pairs()
    assert torch.allclose(ra, a, atol=1 / 255) and torch.allclose(rb, b, atol=1 / 255)
    assert json.loads((tmp_path / "w" / "pairs.json").read_text())["count"] == 3


def _broken(tmp_path, kind):
    if kind == "empty":
        (tmp_path / "empty_dir").mkdir()
        return tmp_path / "empty_dir", "no images found"
    if kind == "missing":
        return tmp_path / "missing", "no such folder"
    root = ab_folder(tmp_path / kind, n=2)
    if kind == "orphan":
        (root / "B" / "img1.png").unlink()
        return root, "img1.png has no partner"
    if kind == "truncated":
        data = (root / "A" / "img0.png").read_bytes()
        (root / "A" / "img0.png").write_bytes(data[: len(data) // 2])
        return root, "img0.png: not a readable image"
    if kind == "text":
        (root / "A" / "img0.png").write_text("hello, I am not a picture")
        (root / "B" / "img0.png").write_text("me neither")
        return root, "img0.png: not a readable image"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["orphan", "truncated", "text", "empty", "missing"])
def test_broken_pairs_folder_is_a_one_line_error(tmp_path, kind):
    root, message = _broken(tmp_path, kind)
    result = run(
        "finetune",
        "--pairs",
        root,
        "--prompt",
        "x",
        "--init",
        "scratch",
        "--preset",
        "tiny",
        "--max-steps",
        "1",
        "--out",
        tmp_path / "out",
    )
    assert result.exit_code == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "Traceback" not in result.output


def test_pairs_command_writes_ab(tmp_path):
    result = run(
        "pairs", "--concept", "sepia-0.8", "--out", tmp_path / "p", "-n", "3", "--size", "16"
    )
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "p" / "A").iterdir())) == 3
    assert (
        run("pairs", "--concept", "no such concept at all", "--out", tmp_path / "q").exit_code == 1
    )


class FlipPairs:
    """A third party's pair source: photo-like noise and its mirror image."""

    def __init__(self, size: int = 64, axis: int = 3) -> None:
        self.size, self.axis = size, axis

    def pairs(self, n, *, split="train", seed=0):
        a = torch.rand(n, 3, self.size, self.size, generator=torch.Generator().manual_seed(seed))
        return a, a.flip(self.axis)


class FlipPlugin:
    @dnw.hookimpl
    def register_pair_sources(self, register):
        register("flip", FlipPairs)


def test_pairs_sources_are_chosen_by_name_from_the_registry(tmp_path):
    cli = create_cli(get_plugin_manager(plugins=[FlipPlugin()]))

    def run_with(*args):
        return CliRunner().invoke(cli, [str(a) for a in args])

    help_text = " ".join(run_with("pairs", "--help").output.split())
    assert "Available: catalogue, flip, folder, instruct-pix2pix" in help_text
    unknown = run_with("pairs", "--source", "nope", "--out", tmp_path / "x")
    assert unknown.exit_code == 1 and not (tmp_path / "x").exists()
    assert unknown.stderr.strip() == (
        "Error: unknown pair-source 'nope' (known: catalogue, flip, folder, instruct-pix2pix; "
        "see 'dnw list pair-sources')"
    )
    made = run_with(
        "pairs",
        "--source",
        "flip",
        "-S",
        "axis=2",
        "-n",
        "2",
        "--size",
        "8",
        "--out",
        tmp_path / "f",
    )
    assert made.exit_code == 0, made.output
    a, b = FolderPairs(tmp_path / "f", size=8).all_pairs()
    assert torch.allclose(b, a.flip(2), atol=1 / 255)
    info = json.loads((tmp_path / "f" / "pairs.json").read_text())
    assert info["source"] == "flip" and info["options"] == {"size": 8, "axis": 2}
    for args, message in [
        (["--source", "flip", "--prompt", "x"], "--source flip takes no --prompt"),
        (["--source", "flip", "-S", "angle=3"], "--source flip has no option 'angle'"),
        (["--source", "catalogue"], "--source catalogue needs --concept"),
        (["--source", "folder"], "--source folder needs -S path=VALUE"),
    ]:
        bad = run_with("pairs", *args, "--out", tmp_path / "bad")
        lines = bad.stderr.strip().splitlines()
        assert bad.exit_code == 1 and len(lines) == 1 and message in lines[0], bad.output
        assert not (tmp_path / "bad").exists()

"""dnw translate: any size, mode and format in, the same size out; unreadable files named and
skipped; outputs never overwrite inputs; the tiled path agrees with the whole image."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from denoised_weights.cli import create_cli
from denoised_weights.core.plugins import get_plugin_manager
from denoised_weights.plugins.image_translation.imagefiles import load_image
from denoised_weights.plugins.image_translation.translate import (
    TranslateOptions,
    Translator,
    load_translator,
    pad_to_multiple,
    translate,
)
from photo_folder import make_photo


@pytest.fixture(autouse=True)
def _no_debug(monkeypatch):
    """A --debug run elsewhere in the session sets DNW_DEBUG in this process; without it the
    command line's error boundary gives its one-line errors, which these tests check."""
    monkeypatch.delenv("DNW_DEBUG", raising=False)


@pytest.fixture
def run():
    def _run(*args):
        return CliRunner().invoke(create_cli(get_plugin_manager()), [str(a) for a in args])

    return _run


def _odd_folder(folder):
    """Odd sizes, greyscale, RGBA, 16-bit PNG, EXIF-rotated JPEG, a palette GIF and a corrupt
    file."""
    folder.mkdir()
    specs = [
        ("odd.png", 37, 23, "RGB", None),
        ("grey.png", 50, 41, "L", None),
        ("alpha.png", 45, 30, "RGBA", None),
        ("deep.png", 33, 47, "I;16", None),
        ("turned.jpg", 60, 40, "RGB", 6),
        ("palette.gif", 29, 31, "P", None),
        ("tiny.png", 3, 2, "RGB", None),
    ]
    for i, (name, w, h, mode, orientation) in enumerate(specs):
        make_photo(folder / name, i, w, h, mode, orientation)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (folder / "notes.txt").write_text("not an image: ignored")
    return {name: (w, h) for name, w, h, _, _ in specs}


def test_translate_odd_files(tmp_path, tiny_base, tiny_adapter, run):
    sizes = _odd_folder(tmp_path / "in")
    result = run(
        "translate",
        tmp_path / "in",
        "--base",
        tiny_base,
        "--adapter",
        tiny_adapter,
        "--out",
        tmp_path / "out",
    )
    assert result.exit_code == 1, result.output  # one file skipped
    assert "broken.jpg" in result.stderr and "Traceback" not in result.output
    assert "translated 7 of 8 images" in result.output and "skipped 1" in result.output
    for name, (w, h) in sizes.items():
        out = Image.open(tmp_path / "out" / (name.rsplit(".", 1)[0] + ".png"))
        assert out.size == (w, h), name  # EXIF-rotated too: the size as displayed
        assert out.mode == ("RGBA" if name == "alpha.png" else "RGB")
    alpha_in = np.asarray(Image.open(tmp_path / "in" / "alpha.png"))[..., 3]
    alpha_out = np.asarray(Image.open(tmp_path / "out" / "alpha.png"))[..., 3]
    assert (alpha_in == alpha_out).all()
    report = json.loads((tmp_path / "out" / "translate.json").read_text())
    assert report["translated"] == 7 and report["skipped"][0]["input"].endswith("broken.jpg")
    # a rerun resumes: nothing to do, the same summary
    again = run(
        "translate",
        tmp_path / "in",
        "--base",
        tiny_base,
        "--adapter",
        tiny_adapter,
        "--out",
        tmp_path / "out",
    )
    assert again.exit_code == 1 and "translated 7 of 8" in again.output


def test_16_bit_keeps_its_precision(tmp_path):
    grey = (np.arange(40 * 30, dtype=np.uint16).reshape(30, 40) * 50).astype(np.uint16)
    Image.fromarray(grey).save(tmp_path / "deep.png")
    loaded = load_image(tmp_path / "deep.png")
    assert loaded.size == (40, 30) and loaded.rgb.shape == (3, 30, 40)
    assert torch.allclose(
        loaded.rgb[0], torch.from_numpy(grey.astype(np.float32) / 65535), atol=1e-6
    )
    assert len(torch.unique(loaded.rgb)) > 256  # more levels than 8 bits hold


def test_python_call_matches_the_task_predict(tmp_path, tiny_base, tiny_adapter):
    """One Python call; at a multiple of 4 and native resolution it is the task's own predict."""
    img = make_photo(tmp_path / "p.png", 0, 32, 32, "RGB")
    summary = translate(
        [img],
        tmp_path / "out",
        base=tiny_base,
        adapter=tiny_adapter,
        options=TranslateOptions(resolution="native"),
        progress=False,
    )
    assert summary["translated"] == 1 and not summary["skipped"]
    tr = load_translator(tiny_base, tiny_adapter)
    x = load_image(img).rgb
    expected = tr.task.predict(tr.arch, tr.model, {"A": x[None]})[0]
    got = torch.from_numpy(np.asarray(Image.open(tmp_path / "out" / "p.png"), np.float32) / 255)
    assert (got.permute(2, 0, 1) - expected).abs().max() <= 1 / 255 + 1e-6


def test_tiles_blend_to_the_whole_image(tiny_base, tiny_adapter):
    """Tiled output is close to the whole-image output (the attention sees less, no seams)."""
    tr = load_translator(tiny_base, tiny_adapter, options=TranslateOptions(resolution="native"))
    x = torch.rand(3, 90, 130, generator=torch.Generator().manual_seed(1))
    whole, how = tr.run(x)
    assert how == "whole" and whole.shape == x.shape
    tiled_tr = Translator(
        tr.task,
        tr.arch,
        tr.model,
        TranslateOptions(resolution="native", tile=48, overlap=16, max_full_pixels=0),
    )
    tiled, how = tiled_tr.run(x)
    assert how.startswith("tiled") and tiled.shape == x.shape
    assert (tiled - whole).abs().mean() < 0.05


def test_model_scale_keeps_the_size(tiny_base, tiny_adapter):
    tr = load_translator(tiny_base, tiny_adapter, options=TranslateOptions(resolution=32))
    x = torch.rand(3, 75, 121)
    out, how = tr.translate_tensor(x)
    assert out.shape == x.shape and "at 52x32" in how
    assert out.min() >= 0 and out.max() <= 1


def test_pad_to_multiple():
    for h, w in [(1, 1), (2, 3), (5, 7), (8, 8), (33, 47)]:
        y = pad_to_multiple(torch.rand(1, 3, h, w))
        assert y.shape[-2] % 4 == 0 and y.shape[-1] % 4 == 0 and y.shape[-2] - h < 4


@pytest.mark.parametrize("where", ["same", "inside", "parent"])
def test_never_writes_over_inputs(tmp_path, tiny_base, tiny_adapter, run, where):
    folder = tmp_path / "photos"
    folder.mkdir()
    make_photo(folder / "a.png", 0, 20, 20, "RGB")
    out = {"same": folder, "inside": folder / "out", "parent": tmp_path}[where]
    result = run("translate", folder, "--base", tiny_base, "--adapter", tiny_adapter, "--out", out)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert (
        "outputs never overwrite inputs" in result.output
        or "inside the input folder" in result.output
    )
    assert sorted(p.name for p in folder.iterdir()) == ["a.png"]


def test_bad_arguments_are_one_line(tmp_path, tiny_base, tiny_adapter, run):
    img = make_photo(tmp_path / "a.png", 0, 20, 20, "RGB")
    cases = [
        (
            ["translate", img, "--base", tiny_base, "--out", tmp_path / "o1"],
            "exactly one of --adapter",
        ),
        (
            [
                "translate",
                img,
                "--base",
                tiny_base,
                "--adapter",
                tmp_path / "none",
                "--out",
                tmp_path / "o2",
            ],
            "no such folder",
        ),
        (
            [
                "translate",
                tmp_path / "missing.png",
                "--base",
                tiny_base,
                "--adapter",
                tiny_adapter,
                "--out",
                tmp_path / "o3",
            ],
            "nothing to translate",
        ),
        (
            [
                "translate",
                img,
                "--base",
                tiny_base,
                "--adapter",
                tiny_adapter,
                "--resolution",
                "big",
                "--out",
                tmp_path / "o4",
            ],
            "--resolution must be",
        ),
    ]
    for args, message in cases:
        result = run(*args)
        assert result.exit_code == 1, result.output
        assert message in result.output and result.output.count("\n") == 1, result.output


def test_decompression_bomb_is_a_named_skip(tmp_path, tiny_base, tiny_adapter, run, monkeypatch):
    make_photo(tmp_path / "big.png", 0, 64, 64, "RGB")
    make_photo(tmp_path / "small.png", 1, 8, 8, "RGB")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 64 x 64 is now "huge"
    result = run(
        "translate",
        tmp_path / "big.png",
        tmp_path / "small.png",
        "--base",
        tiny_base,
        "--adapter",
        tiny_adapter,
        "--out",
        tmp_path / "out",
    )
    assert result.exit_code == 1 and "big.png" in result.stderr
    assert "decompression-bomb" in result.stderr and "Traceback" not in result.output
    assert (tmp_path / "out" / "small.png").is_file()


def test_prompt_generates_the_adapter(tmp_path, tiny_base, tiny_generator, run):
    img = make_photo(tmp_path / "a.jpg", 0, 30, 22, "RGB")
    result = run(
        "translate",
        img,
        "--base",
        tiny_base,
        "--prompt",
        "sepia",
        "--generator",
        tiny_generator,
        "--out",
        tmp_path / "out",
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "adapter" / "adapter_model.safetensors").is_file()
    assert Image.open(tmp_path / "out" / "a.png").size == (30, 22)

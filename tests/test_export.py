"""dnw export: the LoRA merged by peft, ONNX checked against PyTorch with onnxruntime, or the
merged network as safetensors."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from denoised_weights.cli import create_cli
from denoised_weights.core.plugins import get_plugin_manager

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")


@pytest.fixture(autouse=True)
def _no_debug(monkeypatch):
    """A --debug run elsewhere in the session sets DNW_DEBUG in this process; without it the
    command line's error boundary gives its one-line errors, which these tests check."""
    monkeypatch.delenv("DNW_DEBUG", raising=False)


def _run(*args):
    return CliRunner().invoke(create_cli(get_plugin_manager()), [str(a) for a in args])


def test_merges(tiny_base, tiny_adapter):
    """peft's merge differs from the adapter as trained (its LoRA branch of a reflect-padded conv
    pads with zeros; a merged weight pads by reflection); the faithful merge does not."""
    from denoised_weights.plugins.image_translation.translate import load_translator

    trained = load_translator(tiny_base, tiny_adapter)
    x = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    a = trained.task.predict(trained.arch, trained.model, {"A": x})
    for merge, close in (("peft", False), ("faithful", True)):
        merged = load_translator(tiny_base, tiny_adapter, merge=merge)
        assert not any(".lora_" in n for n, _ in merged.model.named_parameters())
        b = merged.task.predict(merged.arch, merged.model, {"A": x})
        assert ((a - b).abs().max() < 1e-5) == close, merge


def test_onnx_export_parity(tmp_path, tiny_base, tiny_adapter):
    out = tmp_path / "exports" / "translator.onnx"
    result = _run(
        "export",
        "--base",
        tiny_base,
        "--adapter",
        tiny_adapter,
        "--out",
        out,
        "--exporter",
        "torchscript",
        "--check-images",
        "16",
        "--check-size",
        "64",
        "--json",
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["max_abs_diff"] <= 1e-4 and report["check_images"] == 16
    assert report["dynamic"] == ["batch", "height", "width"]
    assert report["bytes"] == out.stat().st_size > 0
    assert report["onnxruntime_ms_per_image"] > 0 and report["latency_image"] == "64x64"
    assert report["merge"] == "faithful" and report["max_abs_diff_vs_adapter"] <= 1e-4
    assert report["peft_merge_max_abs_diff"] > 1e-4
    assert json.loads((tmp_path / "exports" / "translator.onnx.json").read_text())["file"] == str(
        out
    )
    # any size and batch through onnxruntime, same as PyTorch's merged network
    import onnxruntime as ort

    from denoised_weights.plugins.image_translation.export import DeviceTranslator
    from denoised_weights.plugins.image_translation.translate import load_translator

    merged = load_translator(tiny_base, tiny_adapter, merge="faithful")
    module = DeviceTranslator(merged.arch, merged.model).eval()
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = torch.rand(2, 3, 37, 51)
    y = session.run(None, {"image": x.numpy()})[0]
    with torch.no_grad():
        assert y.shape == (2, 3, 37, 51) and abs(y - module(x).numpy()).max() < 1e-4


def test_safetensors_export(tmp_path, tiny_base, tiny_adapter):
    out = tmp_path / "merged.safetensors"
    result = _run(
        "export", "--base", tiny_base, "--adapter", tiny_adapter, "--out", out, "--check-size", "64"
    )
    assert result.exit_code == 0, result.output
    assert "reloaded: max abs diff 0.0e+00" in result.output
    from denoised_weights.core.io import load_tensors

    weights, meta = load_tensors(out)
    assert meta["architecture"] == "e2gan" and json.loads(meta["config"])["image_size"] == 32
    assert not any("lora" in k for k in weights)


def test_export_refuses_what_it_cannot_do(tmp_path, tiny_base, tiny_adapter):
    bad = _run(
        "export",
        "--base",
        tiny_base,
        "--adapter",
        tiny_adapter,
        "--out",
        tmp_path / "x.onnx",
        "--format",
        "safetensors",
    )
    assert bad.exit_code == 1 and "make them agree" in bad.output
    (tmp_path / "dir.onnx").mkdir()
    folder = _run(
        "export", "--base", tiny_base, "--adapter", tiny_adapter, "--out", tmp_path / "dir.onnx"
    )
    assert folder.exit_code == 1 and "is a folder, not a file" in folder.output


def _lines(result):
    return [line for line in result.output.splitlines() if line.strip()]


def test_a_file_out_claims_only_that_file(tmp_path, tiny_base, tiny_adapter):
    """--out FILE claims the file (and its report and run record beside it), never its folder:
    the folder's other entries, another command's run.json among them, are left alone."""
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "mine.txt").write_text("keep me")
    (runs / "run.json").write_text('{"dnw": {"command": "generate"}}')
    out = runs / "m.safetensors"
    args = ["export", "--base", tiny_base, "--adapter", tiny_adapter, "--check-size", "64"]
    first = _run(*args, "--out", out)
    assert first.exit_code == 0, first.output
    assert (runs / "mine.txt").read_text() == "keep me"
    assert (runs / "run.json").read_text() == '{"dnw": {"command": "generate"}}'
    record = json.loads((runs / "m.safetensors.run.json").read_text())
    assert record["dnw"]["command"] == "export" and record["dnw"]["file"] == "m.safetensors"
    assert sorted(p.name for p in runs.iterdir()) == [
        "m.safetensors",
        "m.safetensors.json",
        "m.safetensors.run.json",
        "mine.txt",
        "run.json",
    ]
    # the same export again reuses its own file; other settings or a foreign file are refused
    assert _run(*args, "--out", out).exit_code == 0
    before = out.read_bytes()
    other = _run(*args, "--check-images", "4", "--out", out)
    assert other.exit_code == 1 and len(_lines(other)) == 1
    assert (
        "other settings (check_images: 16 -> 4)" in other.output and "--overwrite" in other.output
    )
    assert out.read_bytes() == before
    foreign = runs / "foreign.safetensors"
    foreign.write_bytes(b"not mine")
    refused = _run(*args, "--out", foreign)
    assert refused.exit_code == 1 and len(_lines(refused)) == 1
    assert _lines(refused)[0] == (
        f"Error: --out {foreign} already exists; choose a new --out "
        "(or add --overwrite to replace that file)"
    )
    assert foreign.read_bytes() == b"not mine" and "Traceback" not in refused.output
    assert not (runs / "foreign.safetensors.run.json").exists()
    # --overwrite replaces the named file, and only it
    replaced = _run(*args, "--out", foreign, "--overwrite")
    assert replaced.exit_code == 0, replaced.output
    assert foreign.read_bytes() != b"not mine" and out.read_bytes() == before
    assert (runs / "mine.txt").read_text() == "keep me"


def test_two_exports_in_one_folder_after_generate(tmp_path, tiny_base, tiny_adapter):
    """The README's flow: `dnw generate --out runs/sepia`, then `dnw export --out runs/sepia.onnx`
    and `--out runs/sepia.safetensors` beside it (once refused: 'runs already holds 1 entry')."""
    import shutil

    runs = tmp_path / "runs"
    shutil.copytree(tiny_adapter, runs / "sepia")
    for name in ("sepia.onnx", "sepia.safetensors"):
        result = _run(
            "export",
            "--base",
            tiny_base,
            "--adapter",
            runs / "sepia",
            "--out",
            runs / name,
            "--exporter",
            "torchscript",
            "--check-images",
            "2",
            "--check-size",
            "32",
        )
        assert result.exit_code == 0, result.output
    assert {p.name for p in runs.iterdir()} == {
        "sepia",
        "sepia.onnx",
        "sepia.onnx.json",
        "sepia.onnx.run.json",
        "sepia.safetensors",
        "sepia.safetensors.json",
        "sepia.safetensors.run.json",
    }


def test_a_folder_out_is_still_claimed_whole(tmp_path, tiny_base, tiny_adapter):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "mine.txt").write_text("keep me")
    busy = _run(
        "export", "--base", tiny_base, "--adapter", tiny_adapter, "--out", tmp_path / "busy"
    )
    assert busy.exit_code == 1 and "already holds" in busy.output
    assert [p.name for p in (tmp_path / "busy").iterdir()] == ["mine.txt"]


def test_onnx_export_dynamo(tmp_path, tiny_base, tiny_adapter):
    """torch.export-based exporter (the default): dynamic batch, height and width."""
    out = tmp_path / "m.onnx"
    result = _run(
        "export",
        "--base",
        tiny_base,
        "--adapter",
        tiny_adapter,
        "--out",
        out,
        "--check-size",
        "64",
        "--json",
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["exporter"] == "dynamo" and report["dynamic"] == ["batch", "height", "width"]
    assert not out.with_name(out.name + ".data").exists()  # one self-contained file
    assert report["max_abs_diff"] <= 1e-4 and "dynamic_failed" not in report

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
    result = _run("export", "--base", tiny_base, "--adapter", tiny_adapter, "--out", out,
                  "--exporter", "torchscript", "--check-images", "16", "--check-size", "64",
                  "--json")  # fmt: skip
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
    result = _run("export", "--base", tiny_base, "--adapter", tiny_adapter, "--out", out,
                  "--check-size", "64")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "reloaded: max abs diff 0.0e+00" in result.output
    from denoised_weights.core.io import load_tensors

    weights, meta = load_tensors(out)
    assert meta["architecture"] == "e2gan" and json.loads(meta["config"])["image_size"] == 32
    assert not any("lora" in k for k in weights)


def test_export_refuses_what_it_cannot_do(tmp_path, tiny_base, tiny_adapter):
    bad = _run("export", "--base", tiny_base, "--adapter", tiny_adapter, "--out",
               tmp_path / "x.onnx", "--format", "safetensors")  # fmt: skip
    assert bad.exit_code == 1 and "make them agree" in bad.output
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "mine.txt").write_text("keep me")
    busy = _run("export", "--base", tiny_base, "--adapter", tiny_adapter, "--out",
                tmp_path / "busy" / "m.safetensors")  # fmt: skip
    assert busy.exit_code == 1 and "already holds" in busy.output
    assert (tmp_path / "busy" / "mine.txt").read_text() == "keep me"


def test_onnx_export_dynamo(tmp_path, tiny_base, tiny_adapter):
    """torch.export-based exporter (the default): dynamic batch, height and width."""
    out = tmp_path / "m.onnx"
    result = _run("export", "--base", tiny_base, "--adapter", tiny_adapter, "--out", out,
                  "--check-size", "64", "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["exporter"] == "dynamo" and report["dynamic"] == ["batch", "height", "width"]
    assert not out.with_name(out.name + ".data").exists()  # one self-contained file
    assert report["max_abs_diff"] <= 1e-4 and "dynamic_failed" not in report

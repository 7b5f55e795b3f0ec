"""The pretrained pack: building one, its limits, and what works out of the box with it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import denoised_weights.pretrained as pretrained
from denoised_weights.cli import create_cli
from denoised_weights.core.plugins import get_plugin_manager

DNW = str(Path(sys.executable).parent / "dnw")


def run(*args):
    return CliRunner().invoke(create_cli(get_plugin_manager()), [str(a) for a in args])


def test_pack_has_provenance_and_drives_generate(
    tmp_path, tiny_base, tiny_generator, tiny_dataset, monkeypatch
):
    result = run(
        "pack",
        "--base",
        tiny_base,
        "--generator",
        tiny_generator,
        "--data",
        tiny_dataset,
        "--out",
        tmp_path / "pack",
    )
    assert result.exit_code == 0, result.output
    prov = json.loads((tmp_path / "pack" / "provenance.json").read_text())
    assert prov["preset"] == "tiny" and prov["generator"]["text_encoder"] == "hash"
    assert prov["base"]["seed"] == 0 and prov["generator"]["seed"] == 0
    assert prov["dataset"]["concepts"] == 4 and 0 < prov["size_bytes"] < pretrained.MAX_PACK_BYTES
    assert not (tmp_path / "pack" / "generator" / "checkpoint").exists()
    # with a pack installed, dnw generate needs no --generator
    monkeypatch.setattr(pretrained, "SHIPPED", tmp_path / "pack")
    assert (
        json.loads((tmp_path / "pack" / "provenance.json").read_text())["task"]
        == "image-translation"
    )
    result = run("generate", "--prompt", "warm sepia", "--out", tmp_path / "adapter", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["fingerprint"] == prov["lora_fingerprint"]


def test_without_a_pack_generate_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setattr(pretrained, "SHIPPED", tmp_path / "none")
    result = run("generate", "--prompt", "sepia", "--out", tmp_path / "a")
    assert result.exit_code == 1 and "no pretrained pack" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_pack_refuses_oversize_and_mismatched_parts(
    tmp_path, tiny_base, tiny_generator, monkeypatch
):
    monkeypatch.setattr(pretrained, "MAX_PACK_BYTES", 1000)
    result = run(
        "pack", "--base", tiny_base, "--generator", tiny_generator, "--out", tmp_path / "p"
    )
    assert result.exit_code == 1 and "over the" in result.stderr and not (tmp_path / "p").exists()
    result = run("pack", "--base", tmp_path, "--generator", tiny_generator, "--out", tmp_path / "p")
    assert result.exit_code == 1 and "not a finished base" in result.stderr


def test_the_shipped_pack_is_small_and_documented():
    pack = pretrained.shipped_pack()
    if pack is None:
        pytest.skip("this installation ships no pack")
    prov = json.loads((pack / "provenance.json").read_text())
    assert prov["preset"] == "small" and prov["commit"]
    assert (
        sum(p.stat().st_size for p in pack.rglob("*") if p.is_file()) <= pretrained.MAX_PACK_BYTES
    )


@pytest.mark.slow
def test_demo_starts_from_the_shipped_pack(tmp_path):
    if pretrained.shipped_pack() is None:
        pytest.skip("this installation ships no pack")
    proc = subprocess.run(
        [DNW, "demo", "--workdir", str(tmp_path), "--max-steps", "10"],
        capture_output=True,
        text=True,
        env={**os.environ, "DNW_PLUGINS": ""},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "pretrained pack" in proc.stdout and "| generated |" in proc.stdout
    res = json.loads((tmp_path / "results.json").read_text())
    assert {r["init"] for r in res["rows"]} == {"scratch", "standard", "generated"}
    assert not (tmp_path / "base").exists()  # nothing was trained besides the runs

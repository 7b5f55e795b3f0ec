"""Base pretraining and fine-tuning end to end on the tiny preset, including resume."""

import json

import pytest
from click.testing import CliRunner

import denoised_weights as dnw
from denoised_weights.cli import create_cli
from denoised_weights.core.plugins import get_plugin_manager
from denoised_weights.plugins.image_translation.pairs import CataloguePairs
from denoised_weights.plugins.image_translation.training import finetune, load_base

CURVE_KEYS = {"step", "train_seconds", "l1", "psnr", "ssim", "lpips", "fid"}


@pytest.fixture
def base_dir(tiny_base):
    return tiny_base


def run(*args):
    return CliRunner().invoke(create_cli(get_plugin_manager()), [str(a) for a in args])


def test_base_outputs_and_wrong_preset(base_dir):
    names = {p.name for p in base_dir.iterdir()}
    assert {
        "generator.safetensors",
        "discriminator.safetensors",
        "base.json",
        "curve.json",
        "run.json",
    } <= names
    assert "checkpoint" not in names
    with pytest.raises(dnw.DnwError, match="pass the matching --preset"):
        load_base(base_dir, dnw.create_architecture("e2gan", "small"))


@pytest.mark.parametrize("init", ["scratch", "standard"])
def test_finetune_cli_end_to_end(tmp_path, base_dir, init):
    src = CataloguePairs("sepia-0.8", size=32)
    from denoised_weights.plugins.image_translation.pairs import write_pairs

    write_pairs(tmp_path / "pairs", *src.pairs(12))
    write_pairs(tmp_path / "eval", *src.pairs(4, split="eval"))
    result = run("finetune", "--pairs", tmp_path / "pairs", "--eval-pairs", tmp_path / "eval", "--prompt", "sepia",
                 "--init", init, "--base", base_dir, "--preset", "tiny", "--max-steps", "4", "--eval-every", "2",
                 "--batch-size", "2", "--out", tmp_path / "out")  # fmt: skip
    assert result.exit_code == 0, result.output
    curve = json.loads((tmp_path / "out" / "curve.json").read_text())
    assert set(curve) == {"init", "prompt", "init_seconds", "points"} and curve["init"] == init
    assert [p["step"] for p in curve["points"]] == [0, 2, 4]
    assert all(set(p) == CURVE_KEYS for p in curve["points"])
    assert curve["points"][0]["train_seconds"] == 0 < curve["points"][-1]["train_seconds"]
    assert (tmp_path / "out" / "grid.png").is_file() and (tmp_path / "out" / "run.json").is_file()
    product = "generator.safetensors" if init == "scratch" else "adapter/adapter_model.safetensors"
    assert (tmp_path / "out" / product).is_file()


def test_standard_needs_a_base(tmp_path):
    src = CataloguePairs("sepia-0.8", size=32)
    arch = dnw.create_architecture("e2gan", "tiny")
    with pytest.raises(dnw.DnwError, match="needs --base"):
        finetune(
            arch,
            tmp_path,
            train_pairs=src.pairs(4),
            eval_pairs=src.pairs(2),
            prompt="p",
            max_steps=1,
        )


def test_resume_gives_the_same_curve(tmp_path, base_dir, monkeypatch):
    """A run interrupted mid-way resumes from its checkpoint and ends where an unbroken run ends."""
    from denoised_weights.plugins.image_translation import training

    arch = dnw.create_architecture("e2gan", "tiny")
    src = CataloguePairs("invert-1", size=32)
    data = {"train_pairs": src.pairs(8), "eval_pairs": src.pairs(4, split="eval")}
    opts = {
        "prompt": "p",
        "init": "scratch",
        "max_steps": 6,
        "eval_every": 2,
        "batch_size": 2,
        "metrics": ["l1"],
    }
    whole = finetune(arch, tmp_path / "whole", **data, **opts)

    real_step = arch.training_step
    calls = {"n": 0}

    def dying_step(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real_step(*args, **kwargs)

    monkeypatch.setattr(arch, "training_step", dying_step)
    with pytest.raises(KeyboardInterrupt):
        finetune(arch, tmp_path / "cut", **data, **opts)
    assert (tmp_path / "cut" / "checkpoint").is_dir()
    monkeypatch.setattr(arch, "training_step", real_step)
    resumed = finetune(arch, tmp_path / "cut", **data, **opts)
    assert [p["step"] for p in resumed["points"]] == [0, 2, 4, 6]
    for a, b in zip(whole["points"], resumed["points"], strict=True):
        assert a["l1"] == pytest.approx(b["l1"], abs=1e-5)
    _ = training


def test_steps_to_reach_first_touch_and_sustained():
    from denoised_weights.plugins.image_translation.training import dense_schedule, steps_to_reach

    pts = [
        {"step": s, "l1": v} for s, v in [(0, 0.5), (10, 0.1), (20, 0.3), (30, 0.101), (40, 0.099)]
    ]
    assert steps_to_reach(pts, 0.1)["step"] == 10
    assert steps_to_reach(pts, 0.1, sustained=0.02)["step"] == 40
    assert steps_to_reach(pts, 0.05) is None
    schedule = dense_schedule(600, 50)
    assert schedule[:4] == [5, 10, 15, 20] and schedule[-1] == 600 and 550 in schedule

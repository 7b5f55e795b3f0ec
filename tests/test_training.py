"""Base pretraining and fine-tuning end to end on the tiny preset, including resume."""

import json

import pytest
from click.testing import CliRunner

import denoised_weights as dnw
from denoised_weights.cli import create_cli
from denoised_weights.core.plugins import get_plugin_manager
from denoised_weights.pipeline.base import load_base
from denoised_weights.pipeline.finetune import FinetuneOptions, finetune
from denoised_weights.pipeline.loop import dense_schedule, steps_to_reach
from denoised_weights.plugins.image_translation.pairs import CataloguePairs, write_pairs

CURVE_KEYS = {"step", "train_seconds", "l1", "psnr", "ssim", "lpips", "fid"}


def run(*args):
    return CliRunner().invoke(create_cli(get_plugin_manager()), [str(a) for a in args])


def test_base_outputs_and_wrong_preset(tiny_base):
    names = {p.name for p in tiny_base.iterdir()}
    assert {
        "model.safetensors",
        "training.safetensors",
        "base.json",
        "curve.json",
        "run.json",
    } <= names
    assert "checkpoint" not in names
    info = json.loads((tiny_base / "base.json").read_text())
    assert info["task"] == "image-translation" and set(info["sha256"]) == {
        "model.safetensors",
        "training.safetensors",
    }
    with pytest.raises(dnw.DnwError, match="pass the matching --preset"):
        load_base(tiny_base, dnw.create_architecture("e2gan", "small"))


@pytest.mark.parametrize("init", ["scratch", "standard"])
def test_finetune_cli_end_to_end(tmp_path, tiny_base, init):
    src = CataloguePairs("sepia-0.8", size=32)
    write_pairs(tmp_path / "pairs", *src.pairs(12))
    write_pairs(tmp_path / "eval", *src.pairs(4, split="eval"))
    result = run(
        "finetune",
        "--pairs",
        tmp_path / "pairs",
        "--eval-pairs",
        tmp_path / "eval",
        "--prompt",
        "sepia",
        "--init",
        init,
        "--base",
        tiny_base,
        "--preset",
        "tiny",
        "--max-steps",
        "4",
        "--eval-every",
        "2",
        "--batch-size",
        "2",
        "--out",
        tmp_path / "out",
    )
    assert result.exit_code == 0, result.output
    curve = json.loads((tmp_path / "out" / "curve.json").read_text())
    assert set(curve) == {
        "init",
        "prompt",
        "metric",
        "higher_is_better",
        "init_steps",
        "init_seconds",
        "eval_seconds",
        "evaluations",
        "seconds_per_evaluation",
        "points",
    }
    assert curve["evaluations"] == 3 and curve["eval_seconds"] > 0
    assert curve["init_steps"] == 0
    assert curve["init"] == init and curve["metric"] == "l1" and curve["higher_is_better"] is False
    assert [p["step"] for p in curve["points"]] == [0, 2, 4]
    assert all(set(p) == CURVE_KEYS for p in curve["points"])
    assert curve["points"][0]["train_seconds"] == 0 < curve["points"][-1]["train_seconds"]
    assert (tmp_path / "out" / "grid.png").is_file() and (tmp_path / "out" / "run.json").is_file()
    product = "model.safetensors" if init == "scratch" else "adapter/adapter_model.safetensors"
    assert (tmp_path / "out" / product).is_file()


def test_finetune_a_task_concept_through_the_api(tmp_path, tiny_base):
    curve = dnw.finetune(
        tmp_path / "ft",
        concept="gamma-2.2",
        init="standard",
        base=tiny_base,
        preset="tiny",
        max_steps=2,
        eval_every=1,
        metrics=["l1"],
        n_train=8,
        n_eval=4,
    )
    assert curve["prompt"] == "strongly darkened midtones at gamma 2.2"  # its first prompt
    assert [p["step"] for p in curve["points"]] == [0, 1, 2]


def test_standard_needs_a_base(tmp_path):
    task, arch = dnw.create_task("image-translation"), dnw.create_architecture("e2gan", "tiny")
    data = task.make_data(task.get_concept("sepia-0.8"), arch=arch, split="train", n=4, seed=0)
    with pytest.raises(dnw.DnwError, match="needs --base"):
        finetune(
            task,
            arch,
            tmp_path,
            train=data,
            eval=data,
            prompt="p",
            options=FinetuneOptions(max_steps=1),
        )


def test_resume_gives_the_same_curve(tmp_path, monkeypatch):
    """A run interrupted mid-way resumes from its checkpoint and ends where an unbroken run ends."""
    task, arch = dnw.create_task("image-translation"), dnw.create_architecture("e2gan", "tiny")
    concept = task.get_concept("invert-1")
    data = {
        "train": task.make_data(concept, arch=arch, split="train", n=8, seed=0),
        "eval": task.make_data(concept, arch=arch, split="eval", n=4, seed=0),
    }
    opts = FinetuneOptions(max_steps=6, eval_every=2, batch_size=2, metrics=("l1",))
    whole = finetune(
        task, arch, tmp_path / "whole", prompt="p", init="scratch", options=opts, **data
    )

    real_step = arch.training_phases
    calls = {"n": 0}

    def dying_step(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real_step(*args, **kwargs)

    monkeypatch.setattr(arch, "training_phases", dying_step)
    with pytest.raises(KeyboardInterrupt):
        finetune(task, arch, tmp_path / "cut", prompt="p", init="scratch", options=opts, **data)
    assert (tmp_path / "cut" / "checkpoint").is_dir()
    monkeypatch.setattr(arch, "training_phases", real_step)
    resumed = finetune(
        task, arch, tmp_path / "cut", prompt="p", init="scratch", options=opts, **data
    )
    assert [p["step"] for p in resumed["points"]] == [0, 2, 4, 6]
    for a, b in zip(whole["points"], resumed["points"], strict=True):
        assert a["l1"] == pytest.approx(b["l1"], abs=1e-5)


def test_steps_to_reach_first_touch_sustained_and_direction():
    pts = [
        {"step": s, "l1": v} for s, v in [(0, 0.5), (10, 0.1), (20, 0.3), (30, 0.101), (40, 0.099)]
    ]
    assert steps_to_reach(pts, 0.1)["step"] == 10
    assert steps_to_reach(pts, 0.1, sustained=0.02)["step"] == 40
    assert steps_to_reach(pts, 0.05) is None
    acc = [{"step": s, "acc": v} for s, v in [(0, 0.1), (10, 0.9), (20, 0.7), (30, 0.95)]]
    assert steps_to_reach(acc, 0.9, "acc", higher_is_better=True)["step"] == 10
    assert steps_to_reach(acc, 0.93, "acc", higher_is_better=True)["step"] == 30
    assert steps_to_reach(acc, 0.9, "acc", sustained=0.05, higher_is_better=True)["step"] == 30
    assert steps_to_reach(acc, 0.9, "acc", sustained=0.3, higher_is_better=True)["step"] == 10
    schedule = dense_schedule(600, 50)
    assert schedule[:4] == [5, 10, 15, 20] and schedule[-1] == 600 and 550 in schedule

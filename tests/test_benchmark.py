"""``dnw benchmark``: the summary arithmetic, the outputs, and the smoke preset end to end."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import denoised_weights as dnw
from denoised_weights.cli import create_cli
from denoised_weights.core.plugins import get_plugin_manager
from denoised_weights.pipeline.benchmark import BenchmarkSpec, run_benchmark, summarise

TASK = dnw.create_task("image-translation")

HELD_OUT = "gamma-2.2"


def run(*args):
    return CliRunner().invoke(create_cli(get_plugin_manager()), [str(a) for a in args])


def comparison(concept, seed, hits):
    """A compare_inits result: ``hits[init] = (step, seconds, step0, final)``."""
    target = hits["scratch"][3]
    return {
        "concept": concept,
        "seed": seed,
        "target": target,
        "inits": {
            init: {
                "step0": s0,
                "final": fin,
                "steps_to_target": step,
                "seconds_to_target": sec,
                "init_seconds": 0.5 if init == "generated" else 0.0,
            }
            for init, (step, sec, s0, fin) in hits.items()
        },
    }


def test_summary_speedups_medians_and_costs():
    comps = [
        comparison(
            "a",
            0,
            {
                "scratch": (400, 100.0, 0.3, 0.05),
                "standard": (100, 30.0, 0.2, 0.045),
                "generated": (0, 0.5, 0.04, 0.04),
            },
        ),
        comparison(
            "a",
            1,
            {
                "scratch": (400, 100.0, 0.3, 0.05),
                "standard": (100, 30.0, 0.2, 0.045),
                "generated": (20, 5.5, 0.06, 0.04),
            },
        ),
        comparison(
            "b",
            0,
            {
                "scratch": (200, 50.0, 0.3, 0.06),
                "standard": (None, None, 0.2, 0.07),
                "generated": (50, 12.5, 0.1, 0.055),
            },
        ),
    ]
    timings = {"collection_seconds": 1000.0, "fit_seconds": 200.0, "base_seconds": 50.0}
    res = summarise(comps, ["scratch", "standard", "generated"], timings, None, None)
    gen, std = res["inits"]["generated"], res["inits"]["standard"]
    # concept a: step-0 hit on one seed makes its step speed-up infinite; seconds stay finite
    assert math.isinf(gen["concepts"]["a"]["speedup_vs_scratch_steps"])
    assert gen["concepts"]["a"]["speedup_vs_scratch_seconds"] == pytest.approx(
        math.sqrt(200 * 100 / 5.5)
    )
    assert gen["concepts"]["b"]["speedup_vs_scratch_steps"] == pytest.approx(4.0)
    assert gen["concepts"]["b"]["speedup_vs_standard_steps"] is None  # standard never got there
    assert std["reached_fraction"] == pytest.approx(0.5)
    assert res["inits"]["scratch"]["speedup_vs_scratch_steps"]["median"] == pytest.approx(1.0)
    assert gen["final_no_worse_than_scratch"] == 2
    costs = res["summary"]["costs"]
    # saved vs scratch: a (100 - 3) and b (50 - 12.5) -> median 67.25 s; 1200 s overhead
    assert costs["saved_seconds_per_concept_vs_scratch"] == pytest.approx((97.0 + 37.5) / 2)
    assert costs["break_even_concepts_vs_scratch"] == math.ceil(1200 / ((97.0 + 37.5) / 2))


def test_benchmark_on_prebuilt_inputs(tmp_path, tiny_base, tiny_dataset, tiny_generator):
    spec = BenchmarkSpec(
        preset="smoke",
        out=tmp_path / "bench",
        base=tiny_base,
        data=tiny_dataset,
        generator=tiny_generator,
        concepts=[HELD_OUT],
        max_steps=4,
    )
    res = run_benchmark(TASK, spec, echo=lambda _: None)
    out = tmp_path / "bench"
    saved = json.loads((out / "results.json").read_text())
    assert saved["summary"]["concepts"] == 1 and set(saved["inits"]) == {
        "scratch",
        "standard",
        "generated",
        "mean",
        "nearest",
        "noisy-nearest",
        "fine",
    }
    assert res["inits"]["scratch"]["speedup_vs_scratch_steps"]["median"] == pytest.approx(1.0)
    rows = {r["init"]: r for r in saved["rows"]}
    assert rows["generated"]["init_seconds"] > 0 and rows["scratch"]["init_seconds"] == 0
    audit = saved["memorization"][0]
    assert audit["concept"] == HELD_OUT and audit["generated_to_own"] > 0
    assert audit["closest_training_concept"] in {e["concept"] for e in _entries(tiny_dataset)}
    assert "## Cost accounting" in (out / "report.md").read_text()
    assert (out / "plots" / f"curve_{HELD_OUT}.png").is_file() and (
        out / "plots" / "speedups.png"
    ).is_file()
    assert (out / "grids" / f"{HELD_OUT}_step0.png").is_file()
    assert json.loads((out / "run.json").read_text())["seed"] == 0
    # everything is reused: a second run trains nothing and gives the same results
    again = run_benchmark(TASK, spec, echo=lambda _: None)
    assert again["rows"] == res["rows"]


def test_benchmark_workers_give_the_same_rows_as_one_process(
    tmp_path, tiny_base, tiny_dataset, tiny_generator, monkeypatch
):
    from denoised_weights.plugins.image_translation.e2gan import E2GAN

    common = dict(
        preset="smoke",
        base=tiny_base,
        data=tiny_dataset,
        generator=tiny_generator,
        concepts=[HELD_OUT, "blur-1.25"],
        inits=("scratch", "standard", "generated"),
        max_steps=4,
    )
    one = run_benchmark(TASK, BenchmarkSpec(out=tmp_path / "one", **common), echo=lambda _: None)

    def no_training_here(*_a, **_k):
        raise AssertionError("the parent trained: the workers left a job undone")

    # spawned workers import their own modules: only this (parent) process refuses to train
    monkeypatch.setattr(E2GAN, "training_phases", no_training_here)
    two = run_benchmark(
        TASK, BenchmarkSpec(out=tmp_path / "two", workers=2, **common), echo=lambda _: None
    )
    assert len(two["rows"]) == 2 * 3
    strip = ("seconds", "init_seconds", "speedup")

    def comparable(rows):
        return [{k: v for k, v in r.items() if not any(x in k for x in strip)} for r in rows]

    for a, b in zip(comparable(two["rows"]), comparable(one["rows"]), strict=True):
        assert a.keys() == b.keys()
        for key in a:  # float sums may differ in the last digits with the thread count
            if isinstance(a[key], float):
                assert a[key] == pytest.approx(b[key], rel=1e-4)
            else:
                assert a[key] == b[key]


def _entries(path):
    from denoised_weights.core.dataset import WeightDataset

    return WeightDataset(path).entries


def test_benchmark_refuses_training_concepts_and_unknown_inits(tmp_path):
    result = run("benchmark", "--preset", "smoke", "--out", tmp_path, "--concepts", "gamma-0.4")
    assert result.exit_code == 1 and "is a training concept" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    result = run(
        "benchmark", "--preset", "smoke", "--out", tmp_path, "--inits", "standard,generated"
    )
    assert result.exit_code == 1 and "must include scratch" in result.stderr


@pytest.mark.slow
def test_smoke_preset_end_to_end(tmp_path):
    """The whole pipeline from nothing: base, dataset, generator, every init on 2 concepts."""
    dnw = str(Path(sys.executable).parent / "dnw")
    proc = subprocess.run(
        [dnw, "benchmark", "--preset", "smoke", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "DNW_PLUGINS": ""},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["summary"]["concepts"] == 2 and len(res["rows"]) == 2 * 7
    for row in res["rows"]:
        assert 0 < row["final"] < 1 and 0 < row["step0"] < 1
    scratch = [r for r in res["rows"] if r["init"] == "scratch"]
    assert all(r["steps_to_target"] is not None for r in scratch)  # scratch reaches its own final
    assert res["timings"]["fit_seconds"] > 0 and res["timings"]["collection_seconds"] > 0
    assert len(list((tmp_path / "plots").glob("*.png"))) == 3
    assert "| generated |" in (tmp_path / "report.md").read_text()


def test_step0_only_tabulates_every_init_without_training(
    tmp_path, tiny_base, tiny_dataset, tiny_generator
):
    result = run(
        "benchmark",
        "--preset",
        "smoke",
        "--out",
        tmp_path,
        "--base",
        tiny_base,
        "--data",
        tiny_dataset,
        "--generator",
        tiny_generator,
        "--concepts",
        f"{HELD_OUT},blur-1.25",
        "--step0-only",
    )
    assert result.exit_code == 0, result.output
    assert "| generated |" in result.output and "/ 2 |" in result.output
    step0 = json.loads((tmp_path / "step0.json").read_text())
    assert [r["concept"] for r in step0["rows"]] == [HELD_OUT, "blur-1.25"]
    assert set(step0["rows"][0]["inits"]) == {
        "standard",
        "generated",
        "mean",
        "nearest",
        "noisy-nearest",
        "fine",
    }
    assert not (tmp_path / "runs").exists()  # nothing was fine-tuned
    # step 0 of one more generator alone (a scaling curve): no scratch needed
    result = run(
        "benchmark",
        "--preset",
        "smoke",
        "--out",
        tmp_path / "alone",
        "--base",
        tiny_base,
        "--generator",
        tiny_generator,
        "--concepts",
        HELD_OUT,
        "--step0-only",
        "--inits",
        "generated",
    )
    assert result.exit_code == 0, result.output
    alone = json.loads((tmp_path / "alone" / "step0.json").read_text())
    assert alone["rows"][0]["inits"]["generated"] == step0["rows"][0]["inits"]["generated"]

"""A third-party plugin (tests/plugins/dnw_points: a new task and a new architecture, neither a
GAN nor a classifier), installed by pip through the entry-point group, runs the pipeline
through the command line."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

DNW = str(Path(sys.executable).parent / "dnw")
SOURCE = Path(__file__).parent / "plugins" / "dnw_points"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("points")
    shutil.copytree(SOURCE, root / "src")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(root / "site"),
            str(root / "src"),
        ],
        check=True,
        capture_output=True,
    )
    return root


def dnw(site, *args):
    path = os.pathsep.join(filter(None, [str(site / "site"), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}  # + the suite's hash encoder
    env.pop("DNW_PLUGINS", None)
    return subprocess.run([DNW, *map(str, args)], capture_output=True, text=True, env=env, cwd=site)


def test_the_plugin_is_discovered(site):
    out = dnw(site, "plugins", "--json")
    assert out.returncode == 0, out.stderr
    row = next(r for r in json.loads(out.stdout) if r["name"] == "points")
    assert row["version"] == "dnw-points 0.1.0"
    assert row["registered"] == {
        "tasks": ["points"],
        "architectures": ["point-mlp"],
        "metrics": ["mse"],
    }
    concepts = json.loads(dnw(site, "list", "concepts", "--task", "points", "--json").stdout)
    assert {c["split"] for c in concepts} == {"train", "held-out"}


@pytest.mark.slow
def test_collect_fit_generate_finetune_through_the_cli(site):
    steps = [
        ("base", "--task", "points", "--out", "base", "--steps", "30"),
        (
            "collect",
            "--task",
            "points",
            "--base",
            "base",
            "--out",
            "data",
            "--checkpoints",
            "2",
            "--max-steps",
            "20",
            "--eval-every",
            "10",
            "--interval",
            "5",
        ),
        (
            "fit",
            "--data",
            "data",
            "--out",
            "gen",
            "--text-encoder",
            "hash",
            "--max-steps",
            "20",
            "--val-every",
            "10",
            "--batch-size",
            "32",
            "--prediction",
            "sample",
        ),
        (
            "generate",
            "--generator",
            "gen",
            "--prompt",
            "rotate the plane by 45 degrees",
            "--out",
            "adapter",
            "--json",
            "--no-warmup",
        ),
        (
            "finetune",
            "--task",
            "points",
            "--concept",
            "rotate-45",
            "--init",
            "generated",
            "--base",
            "base",
            "--generator",
            "gen",
            "--max-steps",
            "20",
            "--eval-every",
            "10",
            "--out",
            "ft",
        ),
    ]
    for args in steps:
        out = dnw(site, *args)
        assert out.returncode == 0, (args[0], out.stderr[-1500:])
    assert json.loads(dnw(site, "dataset", "info", "data", "--json").stdout)["concepts"] == 10
    curve = json.loads((site / "ft" / "curve.json").read_text())
    assert curve["metric"] == "mse" and curve["init"] == "generated"
    assert curve["points"][-1]["mse"] < curve["points"][0]["mse"]
    assert (site / "ft" / "adapter" / "adapter_model.safetensors").is_file()

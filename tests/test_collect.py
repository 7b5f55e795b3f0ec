"""Weight-dataset collection: crash safety (kill -9), resume, shards, workers and torchrun."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import denoised_weights as dnw
from denoised_weights.core.dataset import WeightDataset
from denoised_weights.pipeline.collect import CollectOptions, collect

TASK = dnw.create_task("image-translation")


def training_concepts(n=None, max_parts=None):
    return [c.id for c in TASK.select_concepts("train", n=n, max_parts=max_parts)]


DNW = str(Path(sys.executable).parent / "dnw")
OPTS = ["--checkpoints", "2", "--max-steps", "12", "--eval-every", "4", "--interval", "4"]


#: every run of a comparison uses the same thread count: float sums depend on it
ENV = {**os.environ, "DNW_PLUGINS": "", "OMP_NUM_THREADS": "1"}


def cli(*args, **kw):
    return subprocess.run([DNW, *map(str, args)], capture_output=True, text=True, env=ENV, **kw)


def entries(path):
    ds = WeightDataset(path)
    return {(e["concept"], e["checkpoint"], e["step"]) for e in ds.entries}, dict(
        ((e["concept"], e["checkpoint"]), s) for e, s in ds.iter_states()
    )


def test_collect_api_dataset_and_card(tmp_path, tiny_base):
    arch = dnw.create_architecture("e2gan", "tiny")
    opts = CollectOptions(
        checkpoints=2, max_steps=8, eval_every=4, interval=4, n_train=16, n_eval=8
    )
    ds = collect(
        TASK,
        arch,
        tiny_base,
        tmp_path / "ds",
        concept_ids=training_concepts(2),
        opts=opts,
        preset="tiny",
    )
    info = ds.info()
    assert info["concepts"] == 2 and info["entries"] == 4 and info["checkpoints_per_concept"] == 2
    assert info["fingerprint"] == dnw.lora_fingerprint(arch)
    e = ds.entries[0]
    assert len(e["prompts"]) >= 3 and {
        "checkpoint",
        "step",
        "eval",
        "seed",
        "fingerprint",
        "converged_step",
    } <= set(e)
    assert ds.verify() == []
    assert "Weight dataset" in (tmp_path / "ds" / "README.md").read_text()
    states = ds.load_concept(ds.concepts[0])
    assert len(states) == 2 and not torch.equal(*(s["stem.conv.lora_B.weight"] for s in states))
    # another preset into the same folder is refused
    with pytest.raises(dnw.DnwError):
        collect(TASK, dnw.create_architecture("e2gan", "tiny", rank=3), tiny_base, tmp_path / "ds",
                concept_ids=[], opts=opts)  # fmt: skip


def test_concept_selection_by_number_of_edits():
    from denoised_weights.plugins.image_translation.concepts import concepts

    train = concepts("train")
    singles = training_concepts(None, 1)
    assert singles == [c.id for c in train if len(c.steps) == 1]
    assert all("+" not in cid for cid in singles)
    up_to_pairs = training_concepts(None, 2)
    assert set(singles) < set(up_to_pairs) < {c.id for c in train}
    assert max(cid.count("+") for cid in up_to_pairs) == 1
    spread = training_concepts(10, 1)
    assert len(spread) == 10 and set(spread) <= set(singles)


def test_collect_rejects_a_bad_selection(tmp_path, tiny_base):
    r = cli("collect", "--base", tiny_base, "--out", tmp_path / "ds", "--preset", "tiny", "--max-primitives", "4")  # fmt: skip
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "--max-parts" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "ds").exists()


def test_verify_catches_a_corrupt_shard(tmp_path, tiny_base):
    arch = dnw.create_architecture("e2gan", "tiny")
    opts = CollectOptions(checkpoints=1, max_steps=4, eval_every=4, interval=4, n_train=8, n_eval=4)
    collect(TASK, arch, tiny_base, tmp_path / "ds", concept_ids=training_concepts(1), opts=opts)
    shard = next((tmp_path / "ds" / "shards").iterdir())
    shard.write_bytes(shard.read_bytes()[:-10])
    result = cli("dataset", "verify", tmp_path / "ds")
    assert result.returncode == 1 and "does not match its checksum" in result.stdout
    assert result.stderr.strip().splitlines() == [
        f"Error: {tmp_path / 'ds'}: 1 problem(s) found; rerun 'dnw collect' on it to collect those concepts again"
    ]


@pytest.mark.slow
def test_kill_nine_twice_then_resume_matches_an_unbroken_run(tmp_path, tiny_base):
    args = ["collect", "--base", tiny_base, "--preset", "tiny", "--concepts", "6", *OPTS]
    out = tmp_path / "killed"
    for kill in (
        1,
        2,
    ):  # each kill lands at a different moment: after 1 and after 3 finished concepts
        proc = subprocess.Popen([DNW, *map(str, args), "--out", out], env=ENV,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        deadline = time.time() + 240
        want = 1 if kill == 1 else 3
        while time.time() < deadline and proc.poll() is None:
            done = (
                len(list((out / "manifest").glob("*.json"))) if (out / "manifest").is_dir() else 0
            )
            if done >= want:
                time.sleep(0.7 * kill)  # land inside the next concept's training
                break
            time.sleep(0.1)
        assert proc.poll() is None, "the run finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    result = cli(*args, "--out", out)
    assert result.returncode == 0, result.stderr
    assert cli("dataset", "verify", out).returncode == 0
    info = json.loads(cli("dataset", "info", out, "--json").stdout)
    assert info["concepts"] == 6 and info["entries"] == 12
    assert not (out / ".work").exists() or not any((out / ".work").iterdir())

    clean = cli(*args, "--out", tmp_path / "clean")
    assert clean.returncode == 0, clean.stderr
    killed_set, killed_states = entries(out)
    clean_set, clean_states = entries(tmp_path / "clean")
    assert killed_set == clean_set
    for key, state in clean_states.items():
        for name, value in state.items():
            assert torch.allclose(killed_states[key][name], value, atol=1e-6), (key, name)


@pytest.mark.slow
def test_shards_workers_and_torchrun_make_the_same_entries(tmp_path, tiny_base):
    base_args = ["collect", "--base", tiny_base, "--preset", "tiny", "--concepts", "4", *OPTS]
    assert cli(*base_args, "--out", tmp_path / "one").returncode == 0
    for i in range(2):
        assert cli(*base_args, "--shard", f"{i}/2", "--out", tmp_path / "sharded").returncode == 0
    assert cli(*base_args, "--workers", "2", "--out", tmp_path / "workers").returncode == 0
    torchrun = Path(sys.executable).parent / "torchrun"
    run = subprocess.run([str(torchrun), "--nproc-per-node", "2", DNW, *map(str, base_args), "--out", tmp_path / "ddp"],
                         capture_output=True, text=True, env=ENV)  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    reference, ref_states = entries(tmp_path / "one")
    for other in ("sharded", "workers", "ddp"):
        got, states = entries(tmp_path / other)
        assert got == reference, other
        for key in ref_states:
            for name in ref_states[key]:
                assert torch.allclose(states[key][name], ref_states[key][name], atol=1e-5), (
                    other,
                    key,
                    name,
                )
    assert WeightDataset(tmp_path / "ddp").verify() == []


@pytest.mark.slow
def test_workers_die_with_a_killed_parent(tmp_path, tiny_base):
    """kill -9 of `dnw collect --workers 2` must not leave workers writing to the dataset."""
    args = [
        "collect",
        "--base",
        tiny_base,
        "--preset",
        "tiny",
        "--concepts",
        "8",
        *OPTS,
        "--workers",
        "2",
    ]
    proc = subprocess.Popen([DNW, *map(str, args), "--out", tmp_path / "ds"], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.time() + 120
    while time.time() < deadline and not (tmp_path / "ds" / ".work").is_dir():
        time.sleep(0.1)
    time.sleep(1.0)

    def workers():
        out = subprocess.run(
            ["pgrep", "-f", "multiprocessing.spawn"], capture_output=True, text=True
        ).stdout
        return {int(pid) for pid in out.split()}

    children = {p for p in workers() if Path(f"/proc/{p}/stat").is_file() and
                int(Path(f"/proc/{p}/stat").read_text().split()[3]) == proc.pid}  # fmt: skip
    assert children, "no worker processes were started"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 10
    while time.time() < deadline and children & workers():
        time.sleep(0.2)
    assert not children & workers(), "workers outlived their killed parent"

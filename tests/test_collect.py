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
        collect(
            TASK,
            dnw.create_architecture("e2gan", "tiny", rank=3),
            tiny_base,
            tmp_path / "ds",
            concept_ids=[],
            opts=opts,
        )


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
    r = cli(
        "collect",
        "--base",
        tiny_base,
        "--out",
        tmp_path / "ds",
        "--preset",
        "tiny",
        "--max-primitives",
        "4",
    )
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
        f"Error: {tmp_path / 'ds'}: 1 problem(s) found; rerun "
        "'dnw collect' on it to collect those concepts again"
    ]


def finished(out):
    """Concepts the dataset already holds (their manifest is written last)."""
    manifest = out / "manifest"
    return {p.stem for p in manifest.glob("*.json")} if manifest.is_dir() else set()


def mid_training(out, done):
    """A concept that is not finished and has checkpointed past its first step: a kill now lands
    inside its training, with progress to resume from."""
    work = out / ".work"
    for checkpoint in sorted(work.glob("*/checkpoint.json")) if work.is_dir() else []:
        if checkpoint.parent.name in done:
            continue
        try:
            step = json.loads(checkpoint.read_text())["step"]
        except (OSError, ValueError, KeyError):  # being replaced right now: look again
            continue
        if step > 0:
            return checkpoint.parent.name
    return None


def wait_for(condition, proc, what):
    """Poll ``condition()`` until it holds; fail if ``proc`` ends first. No clock: the run
    always ends, so the wait does too, however loaded the machine."""
    while not (found := condition()):
        assert proc.poll() is None, f"the run ended before {what}"
        time.sleep(0.05)
    return found


@pytest.mark.slow
def test_kill_nine_twice_then_resume_matches_an_unbroken_run(tmp_path, tiny_base):
    args = ["collect", "--base", tiny_base, "--preset", "tiny", "--concepts", "6", *OPTS]
    out = tmp_path / "killed"
    for want in (1, 3):  # each kill lands at another moment: inside the 2nd, then the 4th concept
        proc = subprocess.Popen(
            [DNW, *map(str, args), "--out", out],
            env=ENV,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(
            lambda w=want: len(done := finished(out)) >= w and mid_training(out, done),
            proc,
            f"a checkpoint inside concept {want + 1}",
        )
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert len(finished(out)) < 6, "the run finished before it was killed"
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
    run = subprocess.run(
        [
            str(torchrun),
            "--nproc-per-node",
            "2",
            DNW,
            *map(str, base_args),
            "--out",
            tmp_path / "ddp",
        ],
        capture_output=True,
        text=True,
        env=ENV,
    )
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


def test_concepts_another_command_holds_are_counted_over_every_worker(tmp_path, tiny_base):
    """Concepts locked by another live command are left to it, and the message counts them
    in the workers' shares too, not only in the share the command collects itself."""
    from denoised_weights.core.dataset import safe_name

    args = ["collect", "--base", tiny_base, "--preset", "tiny", *OPTS, "--out", tmp_path / "ds"]
    assert cli(*args, "--concepts", "2").returncode == 0
    held = sorted(set(training_concepts(4)) - set(training_concepts(2)))
    for cid in held:  # this test's process holds them: alive, on this machine
        work = tmp_path / "ds" / ".work" / safe_name(cid)
        work.mkdir(parents=True)
        (work / "lock").write_text(json.dumps({"host": os.uname().nodename, "pid": os.getpid()}))
    run = cli(*args, "--concepts", "4", "--workers", "2")
    assert run.returncode == 0, run.stderr
    assert "2 concept(s) were being collected by another process" in run.stdout + run.stderr
    assert sorted(WeightDataset(tmp_path / "ds").concepts) == sorted(training_concepts(2))


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
    proc = subprocess.Popen(
        [DNW, *map(str, args), "--out", tmp_path / "ds"],
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    # both workers have taken a concept each (a lock file per concept in progress)
    wait_for(
        lambda: len(list((tmp_path / "ds" / ".work").glob("*/lock"))) >= 2,
        proc,
        "two concepts in progress",
    )
    # the command collects one share itself; the other worker is its child process
    children = workers_of(proc.pid)
    assert len(children) == 1, f"expected 1 worker process, found {children}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 60
    while (alive := {w for w in children if w.alive()}) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive, "workers outlived their killed parent"


class Process:
    """A process known by its pid and start time (a reused pid is another process)."""

    def __init__(self, pid: int) -> None:
        self.pid, self.started = pid, self._start_time(pid)

    @staticmethod
    def _start_time(pid):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return None
        fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)": state is field 3
        return None if fields[0] == "Z" else fields[19]  # field 22: start time

    def alive(self) -> bool:
        return self.started is not None and self._start_time(self.pid) == self.started

    def __repr__(self) -> str:
        return f"Process({self.pid})"


def parent_of(pid):
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])  # after "pid (comm)": state, ppid


def workers_of(pid):
    """The worker processes of ``pid``: its children (by their parent pid) that multiprocessing's
    spawn started, not any other process on the machine."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or parent_of(entry.name) != pid:
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if b"multiprocessing.spawn" in cmdline:
            found.add(Process(int(entry.name)))
    return found


class _CountingTask:
    """A task registered only in a caller's plugin manager (not installed): image translation
    that counts the data it makes."""

    made = 0

    def __new__(cls, **options):
        from denoised_weights.plugins.image_translation.task import ImageTranslationTask

        class Counting(ImageTranslationTask):
            def make_data(self, *args, **kwargs):
                _CountingTask.made += 1
                return super().make_data(*args, **kwargs)

        return Counting(**options)


class _CallerPlugin:
    __name__ = "caller_plugin"

    @dnw.hookimpl
    def register_tasks(self, register):
        register("counting", _CountingTask)


def test_a_collection_uses_the_callers_plugin_manager(tmp_path, tiny_base):
    from denoised_weights.core.plugins import Registries, get_plugin_manager

    registries = Registries(get_plugin_manager(plugins=[_CallerPlugin()]))
    ids = training_concepts(1)
    _CountingTask.made = 0
    data = dnw.collect(
        tiny_base,
        tmp_path / "ds",
        task="counting",
        preset="tiny",
        concepts=ids,
        checkpoints=1,
        max_steps=2,
        eval_every=2,
        interval=1,
        registries=registries,
    )
    assert data.concepts == ids and data.config["task"] == "counting"
    assert _CountingTask.made == 2  # train and eval data of the one concept, by the caller's task
    # two concepts for two workers: one would be collected here, the other in a process that
    # cannot reach the caller's plugin manager
    with pytest.raises(dnw.DnwError, match="worker processes cannot reach"):
        dnw.collect(
            tiny_base,
            tmp_path / "ds2",
            task="counting",
            preset="tiny",
            concepts=training_concepts(2),
            checkpoints=1,
            max_steps=2,
            eval_every=2,
            interval=1,
            workers=2,
            registries=registries,
        )
    assert not (tmp_path / "ds2").exists() or not any((tmp_path / "ds2" / "shards").glob("*"))

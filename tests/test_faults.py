"""The fault suite: bad inputs, damaged files, operating-system errors and extreme numbers.

Every case runs one ``dnw`` command and must end with a non-zero exit, exactly one line on
stderr that starts with ``Error:`` and says what to do, no traceback, and every file that
existed before the command byte for byte unchanged (the whole workspace is hashed before and
after). The cases reproduce what a demanding user tried on an earlier version (issue 13).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from denoised_weights.cli import create_cli
from denoised_weights.core.plugins import get_plugin_manager

DNW = str(Path(sys.executable).parent / "dnw")
PACKAGE = Path(__file__).resolve().parents[1] / "src" / "denoised_weights"


@dataclass
class WS:
    """A workspace with private copies of a tiny base, dataset, generator and pairs."""

    root: Path

    def __getattr__(self, name: str) -> Path:
        return self.root / name


@pytest.fixture(scope="module")
def seed_ws(tmp_path_factory, tiny_base, tiny_dataset, tiny_generator):
    from denoised_weights.plugins.image_translation.pairs import CataloguePairs, write_pairs

    root = tmp_path_factory.mktemp("faults-seed")
    shutil.copytree(tiny_base, root / "base")
    shutil.copytree(tiny_dataset, root / "data")
    shutil.copytree(tiny_generator, root / "gen")
    a, b = CataloguePairs("gamma-2.2", size=32).pairs(12)
    write_pairs(root / "pairs", a, b)
    a, b = CataloguePairs("sepia-0.6", size=32).pairs(12)
    write_pairs(root / "pairs2", a, b)
    (root / "mine").mkdir()
    (root / "mine" / "notes.txt").write_text("my own notes\n")
    (root / "afile").write_text("a plain file\n")
    return root


@pytest.fixture
def ws(seed_ws, tmp_path):
    shutil.copytree(seed_ws, tmp_path / "ws")
    return WS(tmp_path / "ws")


def tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def run(ws: WS, args: list, env: dict | None = None):
    old = os.getcwd()
    os.chdir(ws.root)
    try:
        return CliRunner().invoke(create_cli(get_plugin_manager()), [str(a) for a in args], env=env)
    finally:
        os.chdir(old)


# -- damaging files ---------------------------------------------------------------------------
def overwrite_values(path: Path, byte: int = 0xFF) -> None:
    """Keep the safetensors header, overwrite every value (0xFF bytes are NaNs)."""
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    path.write_bytes(raw[: 8 + n] + bytes([byte]) * (len(raw) - 8 - n))


def edit_json(path: Path, change: Callable[[dict], object]) -> None:
    """Change a JSON object in place (``change`` mutates it; its return value is ignored)."""
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def drop_checksums(ws: WS) -> None:
    edit_json(ws.base / "base.json", lambda d: d.pop("sha256"))


def drop_tensor(path: Path, key_part: str) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(path))
    save_file({k: v for k, v in tensors.items() if key_part not in k}, str(path))


def first(folder: Path, pattern: str) -> Path:
    return sorted(folder.glob(pattern))[0]


def huge_png(path: Path, side: int = 20000) -> None:
    """A valid greyscale PNG of side x side pixels, streamed (a few hundred KB on disk)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    comp = zlib.compressobj(9)
    row = b"\x00" + b"\x80" * side
    body = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
        + chunk(b"IDAT", body)
        + chunk(b"IEND", b"")
    )


# -- the cases ---------------------------------------------------------------------------------
FT = ["finetune", "--preset", "tiny", "--max-steps", "2", "--eval-every", "1", "--metrics", "l1"]
GEN = ["generate", "--generator", "gen", "--no-warmup", "--prompt", "sepia"]
FIT = ["fit", "--data", "data", "--text-encoder", "hash", "--max-steps", "2", "--batch-size", "8"]


def finished_finetune(ws: WS, *extra: str) -> None:
    result = run(
        ws,
        [
            *FT,
            "--pairs",
            "pairs",
            "--prompt",
            "x",
            "--init",
            "standard",
            "--base",
            "base",
            "--out",
            "ft",
            *extra,
        ],
    )
    assert result.exit_code == 0, result.output


def killed_finetune(ws: WS) -> None:
    """A fine-tune that stopped with a checkpoint and no curve (as after kill -9)."""
    finished_finetune(ws)
    ckpt = ws.ft / "checkpoint"
    ckpt.mkdir()
    (ckpt / "checkpoint.json").write_text("{}")
    (ws.ft / "curve.json").unlink()


@dataclass
class Case:
    id: str
    args: list
    message: str
    setup: Callable[[WS], object] | None = None
    exit: int | None = None  # None: any non-zero


CASES = [
    # 1. existing folders are never deleted, and nothing is written inside the package
    Case("generate-into-a-base", [*GEN, "--out", "base"], "already holds the output of 'dnw base'"),
    Case("generate-into-its-own-generator", [*GEN, "--out", "gen"], "already holds"),
    Case("generate-into-user-files", [*GEN, "--out", "mine"], "already holds 1 entry (notes.txt)"),
    Case(
        "pairs-into-user-files",
        ["pairs", "--concept", "gamma-2.2", "--out", "mine", "-n", "2", "--size", "16"],
        "already holds",
    ),
    Case(
        "pack-into-user-files",
        ["pack", "--base", "base", "--generator", "gen", "--out", "mine"],
        "already holds",
    ),
    Case(
        "pack-into-the-package",
        ["pack", "--base", "base", "--generator", "gen", "--out", PACKAGE / "pretrained" / "small"],
        "inside the installed denoised-weights package",
    ),
    Case(
        "pack-needs-an-out",
        ["pack", "--base", "base", "--generator", "gen"],
        "Missing option '--out'",
        exit=2,
    ),
    Case(
        "finetune-into-a-base",
        [
            *FT,
            "--pairs",
            "pairs",
            "--prompt",
            "x",
            "--init",
            "standard",
            "--base",
            "base",
            "--out",
            "base",
        ],
        "already holds",
    ),
    Case("fit-into-a-base", [*FIT, "--out", "base"], "already holds"),
    Case(
        "base-into-a-dataset",
        ["base", "--preset", "tiny", "--steps", "1", "--out", "data"],
        "already holds",
    ),
    Case(
        "collect-into-a-generator",
        ["collect", "--base", "base", "--preset", "tiny", "--concepts", "1", "--out", "gen"],
        "already holds",
    ),
    Case("generate-under-a-regular-file", [*GEN, "--out", "afile/adapter"], "is a file"),
    Case("generate-onto-a-regular-file", [*GEN, "--out", "afile"], "is a file"),
    # 3. finished and killed runs are reused only with the same settings
    Case(
        "finetune-rerun-other-init",
        [*FT, "--pairs", "pairs", "--prompt", "x", "--init", "scratch", "--out", "ft"],
        "other settings (init",
        finished_finetune,
    ),
    Case(
        "finetune-rerun-other-prompt",
        [
            *FT,
            "--pairs",
            "pairs",
            "--prompt",
            "y",
            "--init",
            "standard",
            "--base",
            "base",
            "--out",
            "ft",
        ],
        "other settings (prompt",
        finished_finetune,
    ),
    Case(
        "finetune-rerun-other-pairs",
        [
            *FT,
            "--pairs",
            "pairs2",
            "--prompt",
            "x",
            "--init",
            "standard",
            "--base",
            "base",
            "--out",
            "ft",
        ],
        "train_data",
        finished_finetune,
    ),
    Case(
        "finetune-resume-other-lr",
        [
            *FT,
            "--pairs",
            "pairs",
            "--prompt",
            "x",
            "--init",
            "standard",
            "--base",
            "base",
            "--out",
            "ft",
            "--lr",
            "0.05",
        ],
        "other settings (lr",
        killed_finetune,
    ),
    Case(
        "base-rerun-other-preset",
        ["base", "--preset", "small", "--steps", "1", "--out", "base"],
        "other settings (config",
    ),
    # 4. damaged inputs are refused before anything is used
    Case(
        "base-values-overwritten",
        [
            *FT,
            "--pairs",
            "pairs",
            "--prompt",
            "x",
            "--init",
            "standard",
            "--base",
            "base",
            "--out",
            "o",
        ],
        "does not match the checksum",
        lambda ws: overwrite_values(ws.base / "model.safetensors"),
    ),
    Case(
        "base-nan-without-checksums",
        [
            *FT,
            "--pairs",
            "pairs",
            "--prompt",
            "x",
            "--init",
            "standard",
            "--base",
            "base",
            "--out",
            "o",
        ],
        "NaN or infinite",
        lambda ws: (overwrite_values(ws.base / "model.safetensors"), drop_checksums(ws)),
    ),
    Case(
        "base-missing-a-key",
        [
            *FT,
            "--pairs",
            "pairs",
            "--prompt",
            "x",
            "--init",
            "standard",
            "--base",
            "base",
            "--out",
            "o",
        ],
        "does not fit e2gan (missing",
        lambda ws: (
            drop_tensor(ws.base / "model.safetensors", "stem.conv.weight"),
            drop_checksums(ws),
        ),
    ),
    Case(
        "base-truncated",
        [
            *FT,
            "--pairs",
            "pairs",
            "--prompt",
            "x",
            "--init",
            "standard",
            "--base",
            "base",
            "--out",
            "o",
        ],
        "not a readable safetensors file",
        lambda ws: (ws.base.joinpath("model.safetensors").write_bytes(b"\x10"), drop_checksums(ws)),
    ),
    Case(
        "base-json-not-json",
        [
            *FT,
            "--pairs",
            "pairs",
            "--prompt",
            "x",
            "--init",
            "standard",
            "--base",
            "base",
            "--out",
            "o",
        ],
        "not valid JSON",
        lambda ws: ws.base.joinpath("base.json").write_text("{nope"),
    ),
    Case(
        "base-json-a-list",
        [
            *FT,
            "--pairs",
            "pairs",
            "--prompt",
            "x",
            "--init",
            "standard",
            "--base",
            "base",
            "--out",
            "o",
        ],
        "not a valid base model description",
        lambda ws: ws.base.joinpath("base.json").write_text("[1, 2]"),
    ),
    Case(
        "lr-inf",
        [
            *FT,
            "--pairs",
            "pairs",
            "--prompt",
            "x",
            "--init",
            "standard",
            "--base",
            "base",
            "--out",
            "o",
            "--lr",
            "inf",
        ],
        "not a finite number",
        exit=2,
    ),
    Case(
        "lr-nan",
        [
            *FT,
            "--pairs",
            "pairs",
            "--prompt",
            "x",
            "--init",
            "standard",
            "--base",
            "base",
            "--out",
            "o",
            "--lr",
            "nan",
        ],
        "not a finite number",
        exit=2,
    ),
    Case(
        "fit-on-a-damaged-shard",
        [*FIT, "--out", "g2"],
        "does not match its checksum",
        lambda ws: overwrite_values(first(ws.data / "shards", "*.safetensors"), 0x3F),
    ),
    Case(
        "fit-on-a-missing-shard",
        [*FIT, "--out", "g2"],
        "is missing",
        lambda ws: first(ws.data / "shards", "*.safetensors").unlink(),
    ),
    # 6. damaged metadata
    Case(
        "manifest-without-sha256",
        ["dataset", "info", "data"],
        "missing sha256",
        lambda ws: edit_json(first(ws.data / "manifest", "*.json"), lambda d: d.pop("sha256")),
    ),
    Case(
        "manifest-without-entries",
        [*FIT, "--out", "g2"],
        "missing entries",
        lambda ws: edit_json(first(ws.data / "manifest", "*.json"), lambda d: d.pop("entries")),
    ),
    Case(
        "dataset-json-not-json",
        [*FIT, "--out", "g2"],
        "not valid JSON",
        lambda ws: ws.data.joinpath("dataset.json").write_text(""),
    ),
    Case(
        "generator-json-missing-key",
        [*GEN, "--out", "a"],
        "missing prediction_type",
        lambda ws: edit_json(ws.gen / "generator.json", lambda d: d.pop("prediction_type")),
    ),
    Case(
        "generator-json-bad-prediction",
        [*GEN, "--out", "a"],
        "unknown prediction_type 'bogus'",
        lambda ws: edit_json(
            ws.gen / "generator.json", lambda d: d.update(prediction_type="bogus")
        ),
    ),
    Case(
        "generator-json-bad-timestep",
        [*GEN, "--out", "a"],
        "generator.json: default_timestep 5000",
        lambda ws: edit_json(ws.gen / "generator.json", lambda d: d.update(default_timestep=5000)),
    ),
    Case(
        "generator-weights-not-safetensors",
        [*GEN, "--out", "a"],
        "only safetensors weights are loaded",
        lambda ws: ws.gen.joinpath("model", "diffusion_pytorch_model.safetensors").rename(
            ws.gen / "model" / "diffusion_pytorch_model.bin"
        ),
    ),
    Case(
        "generator-mean-blocks-damaged",
        [*GEN, "--out", "a"],
        "does not fit the blocker layout",
        lambda ws: drop_tensor(ws.gen / "mean_blocks.safetensors", "mean"),
    ),
    Case(
        "generator-blocker-without-block-size",
        [*GEN, "--out", "a"],
        "missing block_size",
        lambda ws: edit_json(ws.gen / "blocker.json", lambda d: d.pop("block_size")),
    ),
    Case(
        "generator-folder-empty",
        ["generate", "--generator", "mine", "--prompt", "x", "--out", "a"],
        "not a generator folder",
    ),
    # 7. extreme numbers
    Case(
        "huge-image-in-pairs",
        [*FT, "--pairs", "big", "--prompt", "x", "--init", "scratch", "--out", "o"],
        "too large to decode safely",
        lambda ws: (
            huge_png(ws.big / "A" / "0.png"),
            shutil.copy(ws.big / "A" / "0.png", ws.big / "B.png"),
            (ws.big / "B").mkdir(),
            shutil.move(ws.big / "B.png", ws.big / "B" / "0.png"),
        ),
    ),
    Case("seed-beyond-64-bits", [*GEN, "--out", "a", "--seed", str(2**70)], "--seed", exit=2),
    Case(
        "rank-too-large",
        ["info", "e2gan", "--preset", "tiny", "--rank", "100000000"],
        "larger than any of this network's layers can use",
    ),
    Case(
        "block-size-one",
        [*FIT, "--out", "g2", "--block-size", "1"],
        "--block-size must be a multiple of 32",
    ),
    Case(
        "block-size-huge",
        [*FIT, "--out", "g2", "--block-size", "1000000000"],
        "larger than the whole adapter",
    ),
    Case("generate-5000-steps", [*GEN, "--out", "a", "--steps", "5000"], "--steps", exit=2),
    Case(
        "fit-batch-size-huge",
        [*FIT, "--out", "g2", "--batch-size", "1000000000"],
        "--batch-size",
        exit=2,
    ),
    Case(
        "pairs-count-huge",
        ["pairs", "--concept", "gamma-2.2", "--out", "p", "-n", "1000000000"],
        "-n",
        exit=2,
    ),
    # 8. smaller ones
    Case("empty-prompt", [*GEN[:-1], "", "--out", "a"], "the prompt is empty"),
    Case(
        "whitespace-prompt",
        [*FT, "--pairs", "pairs", "--prompt", "   ", "--init", "scratch", "--out", "o"],
        "the prompt is empty",
    ),
    Case("unknown-task", ["base", "--task", "nope", "--out", "o"], "unknown task 'nope'"),
    Case(
        "unknown-init",
        [
            *FT,
            "--pairs",
            "pairs",
            "--prompt",
            "x",
            "--init",
            "bogus",
            "--base",
            "base",
            "--out",
            "o",
        ],
        "unknown generator 'bogus'",
    ),
    Case(
        "unknown-benchmark-preset",
        ["benchmark", "--task", "digits", "--preset", "huge", "--out", "o"],
        "has no benchmark preset 'huge'",
    ),
    Case(
        "training-concept-in-benchmark",
        ["benchmark", "--preset", "smoke", "--out", "o", "--concepts", "gamma-0.4"],
        "is a training concept",
    ),
    Case(
        "cuda-on-a-cpu-machine",
        [
            *FT,
            "--pairs",
            "pairs",
            "--prompt",
            "x",
            "--init",
            "scratch",
            "--out",
            "o",
            "--device",
            "cuda",
        ],
        "no CUDA device",
    ),
    Case("bad-task-option", ["base", "-T", "photos_dir", "--out", "o"], "is not KEY=VALUE", exit=2),
    Case(
        "pairs-folder-missing",
        [*FT, "--pairs", "nowhere", "--prompt", "x", "--init", "scratch", "--out", "o"],
        "is no such folder",
    ),
    Case(
        "pairs-folder-without-b",
        [*FT, "--pairs", "half", "--prompt", "x", "--init", "scratch", "--out", "o"],
        "needs both A/ and B/",
        lambda ws: shutil.copytree(ws.pairs / "A", ws.half / "A"),
    ),
    Case(
        "pairs-folder-two-files-one-pair",
        [*FT, "--pairs", "pairs", "--prompt", "x", "--init", "scratch", "--out", "o"],
        "two files for one pair",
        lambda ws: shutil.copy(
            first(ws.pairs / "A", "*.png"),
            ws.pairs / "A" / (first(ws.pairs / "A", "*.png").stem + ".jpg"),
        ),
    ),
    Case("dataset-info-of-a-base", ["dataset", "info", "base"], "not a weight dataset"),
    Case(
        "verify-damaged-dataset",
        ["dataset", "verify", "data"],
        "1 problem(s) found",
        lambda ws: overwrite_values(first(ws.data / "shards", "*.safetensors"), 0x3F),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_fault(ws, case):
    if case.setup is not None:
        case.setup(ws)
    before = tree(ws.root)
    package_before = tree(PACKAGE / "pretrained")
    result = run(ws, case.args)
    assert_clean_failure(result.exit_code, result.stderr, case)
    after = tree(ws.root)
    changed = sorted(k for k in before if after.get(k) != before[k])
    assert not changed, f"files changed or lost: {changed[:5]}"
    assert tree(PACKAGE / "pretrained") == package_before


def assert_clean_failure(code: int, stderr: str, case: Case) -> None:
    lines = [
        line for line in stderr.splitlines() if line.strip() and not line.startswith("dnw: warning")
    ]
    assert code != 0, f"exit 0; stderr: {stderr[-500:]}"
    if case.exit is not None:
        assert code == case.exit, stderr
    assert "Traceback" not in stderr
    assert len(lines) == 1 and lines[0].startswith("Error: "), stderr[-800:]
    assert case.message in lines[0], lines[0]


# -- operating-system errors (simulated: these tests run as any user, root included) -----------
@pytest.mark.parametrize(
    "code, message",
    [
        (errno.ENOSPC, "the disk is full"),
        (errno.EROFS, "read-only"),
        (errno.EACCES, "permission denied"),
    ],
)
def test_os_errors_are_one_line(ws, monkeypatch, code, message):
    import safetensors.torch

    def refuse(*_a, **_k):
        raise OSError(code, os.strerror(code), "somewhere")

    monkeypatch.setattr(safetensors.torch, "save_file", refuse)
    before = tree(ws.root)
    result = run(ws, [*GEN, "--out", "a"])
    assert_clean_failure(result.exit_code, result.stderr, Case("os", [], message))
    assert all(tree(ws.root).get(k) == v for k, v in before.items())


def test_an_unexpected_error_is_one_line_and_debug_shows_the_traceback(ws, monkeypatch):
    import denoised_weights.pipeline.generate as generate

    def boom(*_a, **_k):
        raise ZeroDivisionError("boom")

    monkeypatch.setattr(generate, "prompt_usage", boom)
    result = run(ws, [*GEN, "--out", "a"])
    assert result.exit_code == 3 and "internal error (ZeroDivisionError: boom)" in result.stderr
    assert "--debug" in result.stderr and "Traceback" not in result.stderr
    result = run(ws, ["--debug", *GEN, "--out", "b"])
    assert isinstance(result.exception, ZeroDivisionError)


def test_an_unknown_plugin_in_the_allow_list_is_named(ws):
    env = {**os.environ, "DNW_PLUGINS": "nope"}
    out = subprocess.run(
        [DNW, "list", "tasks"], cwd=ws.root, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0 and "DNW_PLUGINS names 'nope', which is not installed" in out.stderr


def test_a_long_prompt_says_how_much_was_read(ws):
    prompt = "sepia " * 20000
    result = run(
        ws, ["generate", "--generator", "gen", "--no-warmup", "--prompt", prompt, "--out", "a"]
    )
    assert result.exit_code == 0, result.output
    assert len(result.stdout) < 300 and "..." in result.stdout  # the prompt is not echoed whole


def test_list_concepts_takes_a_pattern(ws):
    result = run(ws, ["list", "concepts", "gamma*", "--json"])
    assert result.exit_code == 0
    assert {c["id"].split("-")[0] for c in json.loads(result.stdout)} == {"gamma"}


def test_ctrl_c_says_how_to_resume(ws):
    env = {**os.environ, "DNW_PLUGINS": "", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [
            DNW,
            "finetune",
            "--pairs",
            "pairs",
            "--prompt",
            "x",
            "--init",
            "scratch",
            "--preset",
            "tiny",
            "--max-steps",
            "100000",
            "--eval-every",
            "5",
            "--metrics",
            "l1",
            "--out",
            "ft",
        ],
        cwd=ws.root,
        env=env,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    deadline = time.time() + 120
    while time.time() < deadline and not (ws.ft / "checkpoint" / "checkpoint.json").is_file():
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=300)  # not a timing: a hung process fails, late or not
    assert proc.returncode == 130
    assert (
        stderr.strip().splitlines()[-1]
        == "Error: interrupted; rerun the same command to resume where it stopped"
    )
    assert "Traceback" not in stderr


def test_an_interrupt_swallowed_on_its_way_still_stops_the_run(ws, monkeypatch):
    """SIGINT raises KeyboardInterrupt wherever the main thread is; a finaliser or a library
    callback can swallow it. The training loop notices at its next step all the same."""
    from denoised_weights.plugins.image_translation.e2gan import E2GAN

    real, steps = E2GAN.training_phases, []

    def step(self, *args, **kwargs):
        steps.append(1)
        if len(steps) == 3:
            with contextlib.suppress(KeyboardInterrupt):  # lost, as in a __del__
                signal.raise_signal(signal.SIGINT)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(E2GAN, "training_phases", step)
    result = run(
        ws,
        [
            "finetune",
            "--pairs",
            "pairs",
            "--prompt",
            "x",
            "--init",
            "scratch",
            "--preset",
            "tiny",
            "--max-steps",
            "50",
            "--eval-every",
            "5",
            "--metrics",
            "l1",
            "--out",
            "lost",
        ],
    )
    assert result.exit_code == 130, result.output
    assert result.stderr.strip().splitlines()[-1].startswith("Error: interrupted;")
    assert len(steps) == 3  # stopped before a fourth step


def test_two_collects_on_one_folder_share_the_work(ws):
    env = {**os.environ, "DNW_PLUGINS": "", "OMP_NUM_THREADS": "1"}
    args = [
        DNW,
        "collect",
        "--base",
        "base",
        "--preset",
        "tiny",
        "--concepts",
        "3",
        "--checkpoints",
        "2",
        "--max-steps",
        "6",
        "--eval-every",
        "3",
        "--interval",
        "3",
        "--out",
        "shared",
    ]
    procs = [
        subprocess.Popen(
            args, cwd=ws.root, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=600)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert all("Traceback" not in o for o in outs)
    rerun = subprocess.run(args, cwd=ws.root, env=env, capture_output=True, text=True)
    assert rerun.returncode == 0 and "3 concepts, 6 entries" in rerun.stdout
    assert (
        subprocess.run([DNW, "dataset", "verify", "shared"], cwd=ws.root, env=env).returncode == 0
    )


def test_collect_redoes_damaged_and_missing_concepts(ws):
    import denoised_weights as dnw

    shards = sorted((ws.data / "shards").glob("*.safetensors"))
    overwrite_values(shards[0], 0x3F)
    shards[1].unlink()
    said: list[str] = []
    dataset = dnw.collect(
        ws.base,
        ws.data,
        preset="tiny",
        n_concepts=4,
        checkpoints=2,
        max_steps=6,
        eval_every=3,
        interval=3,
        n_train=12,
        n_eval=6,
        echo=said.append,
    )
    assert any("2 damaged or incomplete concept(s) set aside" in s for s in said), said
    assert dataset.verify() == [] and len(dataset.concepts) == 4
    assert (ws.data / "shards" / (shards[0].name + ".damaged")).is_file()  # kept, not deleted


def test_the_same_inputs_by_another_path_are_the_same_settings(ws):
    finished_finetune(ws, "--base", str(ws.base))  # an absolute path first
    result = run(
        ws,
        [
            *FT,
            "--pairs",
            "pairs",
            "--prompt",
            "x",
            "--init",
            "standard",
            "--base",
            "base",
            "--out",
            "ft",
        ],
    )
    assert result.exit_code == 0, result.output  # the finished run is reused

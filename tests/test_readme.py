"""Every command line of the README's bash blocks runs, as written, in one workspace and in the
README's order, with tiny settings where the README's take hours (the mapping below: it sets or
adds options; the command words and the README's option names are kept). A README command that
breaks fails this test.

Lines that are not run, and why:

- ``make ...``: they build the environment and run the whole suite, the demo or the pack
  rebuild (hours); this test is part of ``make test`` itself.
- ``pip install ... && dnw serve``: installing changes the environment under test, and
  ``dnw serve`` serves until it is stopped (``tests/test_serve.py`` covers the app).

A line listed in ``KNOWN_BROKEN`` (with the reason) must still fail; every other line must
pass. Other substitutions: ``...`` stands for the arguments the README gives the same command where
it first shows it in full (the block on processes and machines says "the same command, spread
out"); ``.venv/bin/dnw`` is this environment's ``dnw``; ``my_photos/``, the README's stand-in
for your photos, is made from two bundled photos first.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BIN = Path(sys.executable).parent

#: (command, condition on the line or None, {option: tiny value}): the value replaces the
#: README's where the line has the option, else the option is added
TINY: list[tuple[str, str | None, dict[str, str]]] = [
    ("base", None, {"--preset": "tiny", "--steps": "4", "--concepts": "4"}),
    (
        "collect",
        None,
        {
            "--preset": "tiny",
            "--concepts": "3",
            "--checkpoints": "2",
            "--max-steps": "4",
            "--eval-every": "2",
            "--interval": "2",
        },
    ),
    ("fit", None, {"--max-steps": "4", "--batch-size": "16", "--val-every": "2"}),
    ("fit", "--objective", {"--task-concepts": "2", "--task-batch": "4"}),
    ("pairs", None, {"-n": "8"}),
    ("finetune", None, {"--max-steps": "2", "--eval-every": "1"}),
    ("finetune", "--concept", {"--n-train": "8", "--n-eval": "4"}),
    ("finetune", "--base runs/base", {"--preset": "tiny"}),  # the README's base is small
    (
        "compare",
        None,
        {"--preset": "tiny", "--max-steps": "2", "--eval-every": "1", "--metrics": "l1"},
    ),
    ("benchmark", None, {"--preset": "smoke", "--seeds": "1", "--max-steps": "2"}),
    ("benchmark", "--task digits", {"--preset": "tiny", "--max-steps": "2"}),
    ("export", None, {"--check-images": "2", "--check-size": "64"}),
    (
        "speed",
        None,
        {
            "--threads": "1",
            "--rounds": "1",
            "--preset": "tiny",
            "--base": "runs/base",
            "--generator": "runs/generator",
        },
    ),
]
SKIPPED = ("make", "pip")
#: README lines that fail today, with the reason: the test checks that they still fail (so a
#: fix shows up here) and that every other line passes
KNOWN_BROKEN: dict[str, str] = {}
#: seconds after which a line counts as hung (its whole process group is killed)
TIMEOUT = {"known-broken": 90, "default": 1200}


def readme_lines(text: str) -> list[str]:
    """Every command line of the bash blocks, continuation lines joined."""
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        lines += [line.strip() for line in block.replace("\\\n", " ").splitlines() if line.strip()]
    return lines


def words(line: str) -> list[str]:
    return shlex.split(line, comments=True)


def subcommand(argv: list[str]) -> str | None:
    """The dnw command of a line (``dnw collect``, ``torchrun ... dnw collect``)."""
    for i, word in enumerate(argv):
        if Path(word).name == "dnw" and i + 1 < len(argv):
            return argv[i + 1]
    return None


def tiny(argv: list[str]) -> list[str]:
    argv = list(argv)
    command, line = subcommand(argv), " ".join(argv)
    for name, condition, options in TINY:
        if name != command or (condition and condition not in line):
            continue
        for option, value in options.items():
            if option in argv:
                argv[argv.index(option) + 1] = value
            else:
                argv += [option, value]
    return argv


def expand(argv: list[str], first: dict[str, list[str]]) -> list[str]:
    """``...`` -> the arguments of the command's first full line; ``.venv/bin/dnw`` -> ours."""
    out: list[str] = []
    for word in argv:
        if word == "...":
            out += first[subcommand(argv)]
        elif word == ".venv/bin/dnw":
            out.append(str(BIN / "dnw"))
        else:
            out.append(word)
    if out[0] in ("dnw", "torchrun"):
        out[0] = str(BIN / out[0])
    return out


def test_the_mapping_only_names_readme_commands():
    lines = [words(line) for line in readme_lines(README.read_text())]
    commands = {subcommand(argv) for argv in lines}
    assert {name for name, _, _ in TINY} <= commands
    assert {argv[0] for argv in lines if subcommand(argv) is None} <= set(SKIPPED)
    assert set(KNOWN_BROKEN) <= {shlex.join(argv) for argv in lines}


@pytest.mark.slow
def test_every_readme_command_runs(tmp_path):
    from PIL import Image

    from denoised_weights.plugins.image_translation.photos import list_photos

    (tmp_path / "my_photos").mkdir()
    for photo in list_photos()[:2]:
        small = Image.open(photo.path).convert("RGB").resize((96, 64))
        small.save(tmp_path / "my_photos" / f"{photo.path.stem}.jpg")
    # a user's environment: no test plugins; one thread per process on this shared machine
    env = {**os.environ, "DNW_PLUGINS": "", "OMP_NUM_THREADS": "1"}
    first: dict[str, list[str]] = {}
    ran, failed = [], {}
    for line in readme_lines(README.read_text()):
        argv = words(line)
        if argv[0] in SKIPPED:
            continue
        command = subcommand(argv)
        if "..." not in argv:
            first.setdefault(command, argv[argv.index(command) + 1 :])
        run = tiny(expand(argv, first))
        known = shlex.join(argv) in KNOWN_BROKEN
        started = time.monotonic()
        code, stderr = run_line(run, tmp_path, env, TIMEOUT["known-broken" if known else "default"])
        print(f"{time.monotonic() - started:6.1f} s  exit {code}  {shlex.join(run)}")  # pytest -s
        ran.append(command)
        if code != 0:
            failed[shlex.join(argv)] = f"{shlex.join(run)}\nexit {code}\n{stderr[-2000:]}"
    broken = "\n\n".join(
        f"README line failed: {k}\n{v}" for k, v in failed.items() if k not in KNOWN_BROKEN
    )
    assert not broken, broken
    fixed = set(KNOWN_BROKEN) - set(failed)
    assert not fixed, f"these README lines pass now: remove them from KNOWN_BROKEN: {fixed}"
    assert {"generate", "export", "translate", "speed"} <= set(ran)
    assert (tmp_path / "runs" / "sepia.onnx").is_file()
    assert len(list((tmp_path / "runs" / "translated").glob("*.png"))) == 2  # one per photo


def run_line(argv: list[str], cwd: Path, env: dict[str, str], timeout: float) -> tuple[int, str]:
    """Run one command line in its own process group; a hung one is killed with its children."""
    proc = subprocess.Popen(
        argv,
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        _, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)  # torchrun passes it on to its workers' sessions
        try:
            _, stderr = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            _, stderr = proc.communicate()
        return -1, f"hung: killed after {timeout} s\n{stderr}"
    return proc.returncode, stderr

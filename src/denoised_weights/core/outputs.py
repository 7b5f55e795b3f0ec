"""Output folders: a command writes only into a folder that is new, empty or its own.

Every writing command claims its ``--out`` first (:func:`claim_output`). The claim is recorded
in the folder's ``run.json`` (command, settings, seed, versions). A folder that holds this
command's earlier output with the same settings is resumed (or reused when finished); with
other settings, or holding anything else, it is refused with a one-line error that names what
is there. ``--overwrite`` lets a command write there anyway, and still removes nothing but
what this command wrote before: entries it owns are replaced, anything else is left alone,
and a foreign file in the way of one of its outputs stops it.

A command whose ``--out`` is one file claims that file only (:func:`claim_output_file`): its
run record goes beside it as ``<name>.run.json``, an existing file is refused unless
``--overwrite``, and the other entries of its folder are never touched or counted.

Nothing is ever written inside the installed package.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from denoised_weights.core.errors import DnwError
from denoised_weights.core.io import read_json, write_run_record

RUN_RECORD = "run.json"
#: marker files that say what a folder holds, for the refusal message
_KINDS = (
    ("provenance.json", "a pretrained pack"),
    ("base.json", "a base model"),
    ("dataset.json", "a weight dataset"),
    ("generator.json", "a generator"),
    ("adapter_model.safetensors", "a LoRA adapter"),
    ("curve.json", "a fine-tuning run"),
    ("results.json", "benchmark results"),
    ("pairs.json", "a pairs folder"),
)
PACKAGE_ROOT = Path(__file__).resolve().parents[1]


def normalise(settings: Mapping[str, Any]) -> dict[str, Any]:
    """Settings as they read back from JSON (tuples become lists, paths strings)."""
    return json.loads(json.dumps(dict(settings), default=str))


def describe(folder: Path) -> str:
    """A few words on what ``folder`` holds: a known kind of output or its first files."""
    record = folder / RUN_RECORD
    if record.is_file():
        try:
            command = (read_json(record).get("dnw") or {}).get("command")
        except DnwError:
            command = None
        if command:
            return f"the output of 'dnw {command}'"
    for marker, kind in _KINDS:
        if (folder / marker).exists():
            return kind
    if (folder / "A").is_dir() and (folder / "B").is_dir():
        return "a pairs folder"
    names = sorted(p.name for p in folder.iterdir())
    shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
    return f"{len(names)} entr{'y' if len(names) == 1 else 'ies'} ({shown})"


def differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """``["key: old -> new", ...]`` for the settings that differ (short values)."""

    def short(value: Any) -> str:
        text = json.dumps(value, default=str)
        return text if len(text) <= 40 else text[:37] + "..."

    keys = [k for k in dict.fromkeys([*old, *new]) if old.get(k) != new.get(k)]
    return [f"{k}: {short(old.get(k))} -> {short(new.get(k))}" for k in keys]


def _inside_package(path: Path) -> bool:
    try:
        path.resolve().relative_to(PACKAGE_ROOT)
    except ValueError:
        return False
    return True


def claim_output(
    out: str | Path,
    command: str,
    settings: Mapping[str, Any],
    *,
    overwrite: bool = False,
    owned: Iterable[str] = (),
    seed: int | None = None,
    config: Mapping[str, Any] | None = None,
    option: str = "--out",
) -> str:
    """Make ``out`` the output folder of ``dnw command`` with ``settings``, or refuse.

    Returns ``"new"`` (created, or was empty), ``"resume"`` (this command's own output with
    the same settings: resume or reuse it) or ``"overwrite"``. ``owned`` names the entries this
    command writes at the top of the folder (``run.json`` is always one); with ``overwrite``
    those of an earlier run of this command are removed first. ``config`` (default: the
    settings) and ``seed`` go into ``run.json`` with the versions of the libraries.
    """
    out = Path(out)
    settings = normalise(settings)
    owned = {RUN_RECORD, *owned}
    if _inside_package(out):
        raise DnwError(
            f"{out} is inside the installed denoised-weights package; write outputs elsewhere"
        )
    if out.exists() and not out.is_dir():
        raise DnwError(f"{option} {out} is a file, not a folder; choose a folder path")
    state = "new"
    if out.is_dir() and any(out.iterdir()):
        state = _existing(out, command, settings, overwrite=overwrite, owned=owned, option=option)
    if state != "resume":
        try:
            out.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise DnwError(
                f"{option} {out}: a parent of it is a file; choose another path"
            ) from None
        write_run_record(
            out,
            seed=seed,
            config=dict(config if config is not None else settings),
            extra={"dnw": {"command": command, "settings": settings}},
        )
    return state


def file_record(path: str | Path) -> Path:
    """Where the run record of a one-file output ``path`` goes: ``<name>.run.json`` beside it."""
    path = Path(path)
    return path.with_name(path.name + ".run.json")


def claim_output_file(
    path: str | Path,
    command: str,
    settings: Mapping[str, Any],
    *,
    overwrite: bool = False,
    sidecars: Iterable[str] = (),
    seed: int | None = None,
    config: Mapping[str, Any] | None = None,
    option: str = "--out",
) -> str:
    """Make the file ``path`` the output of ``dnw command`` with ``settings``, or refuse.

    Claims ``path`` and its ``sidecars`` (file names beside it, e.g. ``<name>.json``) and
    nothing else: the run record is written beside the file as ``<name>.run.json``
    (:func:`file_record`), and the other entries of the folder are never touched or counted.
    Returns ``"new"`` (nothing there yet), ``"resume"`` (this command's own file with the same
    settings) or ``"overwrite"``. An existing file is refused unless ``overwrite``; a sidecar
    that this command did not write stops it even then.
    """
    path = Path(path)
    settings = normalise(settings)
    if _inside_package(path):
        raise DnwError(
            f"{path} is inside the installed denoised-weights package; write outputs elsewhere"
        )
    if path.is_dir():
        raise DnwError(f"{option} {path} is a folder, not a file; name a file to write")
    record = file_record(path)
    if record.is_dir():
        raise DnwError(f"{record} is a folder in the way of the run record; move it away")
    ours = [path, *(path.with_name(name) for name in sidecars)]
    present = [p for p in ours if p.exists() or p.is_symlink()]
    previous = None
    if record.is_file():
        try:
            previous = read_json(record).get("dnw")
        except DnwError:
            previous = None
    mine = isinstance(previous, dict) and previous.get("command") == command
    state = "new"
    if present:
        if mine and previous.get("settings") == settings:
            return "resume"
        if not overwrite:
            if mine:
                diff = "; ".join(differences(previous.get("settings") or {}, settings)[:3])
                raise DnwError(
                    f"{path} was written by 'dnw {command}' with other settings ({diff}); "
                    f"choose a new {option}, or add --overwrite to replace it"
                )
            raise DnwError(
                f"{option} {present[0]} already exists; choose a new {option} "
                "(or add --overwrite to replace that file)"
            )
        if not mine:
            foreign = [p for p in present if p != path]
            if foreign:
                raise DnwError(
                    f"{foreign[0]} was not written by 'dnw {command}' and would be replaced; "
                    f"move it away or choose a new {option}"
                )
        for target in present:
            if target != path:  # the file itself is replaced when it is written
                target.unlink()
        state = "overwrite"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise DnwError(f"{option} {path}: a parent of it is a file; choose another path") from None
    write_run_record(
        path.parent,
        seed=seed,
        config=dict(config if config is not None else settings),
        name=record.name,
        extra={"dnw": {"command": command, "settings": settings, "file": path.name}},
    )
    return state


def _existing(
    out: Path,
    command: str,
    settings: dict[str, Any],
    *,
    overwrite: bool,
    owned: set[str],
    option: str,
) -> str:
    record = out / RUN_RECORD
    previous = None
    if record.is_file():
        try:
            previous = read_json(record).get("dnw")
        except DnwError:
            previous = None
    mine = isinstance(previous, dict) and previous.get("command") == command
    if mine and previous.get("settings") == settings:
        return "resume"
    if not overwrite:
        if mine:
            diff = "; ".join(differences(previous.get("settings") or {}, settings)[:3])
            raise DnwError(
                f"{out} holds a 'dnw {command}' run with other settings ({diff}); rerun with "
                f"those settings to resume, choose a new {option}, or add --overwrite to replace it"
            )
        raise DnwError(
            f"{option} {out} already holds {describe(out)}; choose a new {option} "
            "(or add --overwrite to write there: only this command's own files are replaced)"
        )
    present = [name for name in owned if (out / name).exists()]
    if not mine:
        foreign = [n for n in present if n != RUN_RECORD]
        if foreign:
            raise DnwError(
                f"{out / foreign[0]} was not written by 'dnw {command}' and would be replaced; "
                f"move it away or choose a new {option}"
            )
        if (out / RUN_RECORD).exists():  # another command's record: keep it beside ours
            (out / RUN_RECORD).rename(
                out / f"run.{previous.get('command', 'old') if previous else 'old'}.json"
            )
        return "overwrite"
    for name in present:  # an earlier run of this command: remove what it wrote
        target = out / name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        else:
            target.unlink()
    return "overwrite"

"""Atomic file writes, safetensors I/O, JSON and run records."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from denoised_weights.core.errors import DnwError


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``.

    A crash leaves either the old file or the new one, never half a file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():
            os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; match a plain open()
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary directory whose content lands in ``path`` on success.

    A new or empty ``path`` is replaced by it in one rename. Into an existing folder its
    entries are moved one by one, each replacing only the entry of the same name (the caller
    has checked those are its own, see :mod:`denoised_weights.core.outputs`); nothing else in
    the folder is touched. A crash before the end leaves ``path`` as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700
        if path.is_dir() and not any(path.iterdir()):
            path.rmdir()
        if not path.exists():
            os.replace(tmp, path)
            return
        if not path.is_dir():
            raise DnwError(f"{path} is a file; cannot write a folder there")
        for entry in sorted(tmp.iterdir(), key=lambda p: p.suffix == ".json"):  # JSON last
            target = path / entry.name
            if target.is_dir() and not target.is_symlink():
                old = target.with_name(f".{target.name}.old")
                shutil.rmtree(old, ignore_errors=True)
                os.replace(target, old)
                os.replace(entry, target)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(entry, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_json(path: str | Path, obj: Any) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")
    return path


def read_json(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise DnwError(f"{path}: file not found")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DnwError(f"{path}: not valid JSON ({exc}); the file is damaged") from None


def read_json_object(path: str | Path, what: str, keys: tuple[str, ...] = ()) -> dict[str, Any]:
    """A JSON object with at least ``keys``; a one-line error naming ``what`` otherwise."""
    data = read_json(path)
    if not isinstance(data, dict):
        raise DnwError(f"{path}: not a valid {what} (expected a JSON object)")
    missing = [k for k in keys if k not in data]
    if missing:
        raise DnwError(
            f"{path}: not a valid {what} (missing {', '.join(missing)}); the file is damaged "
            "or was made by another version"
        )
    return data


def save_tensors(
    path: str | Path, tensors: dict[str, Any], metadata: dict[str, str] | None = None
) -> Path:
    """Write tensors to a safetensors file atomically (values made contiguous CPU copies).

    Same tensors and metadata give the same bytes.
    """
    from safetensors.torch import save_file

    path = Path(path)
    clean = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    # safetensors writes metadata in hash-map order: with one key, the bytes are reproducible
    meta = (
        {"dnw": json.dumps({k: str(v) for k, v in metadata.items()}, sort_keys=True)}
        if metadata
        else None
    )
    with atomic_path(path) as tmp:
        save_file(clean, str(tmp), metadata=meta)
    return path


def load_tensors(
    path: str | Path, *, finite: bool = False
) -> tuple[dict[str, Any], dict[str, str]]:
    """``(tensors, metadata)`` from a safetensors file; a one-line error if it is missing,
    not safetensors, or (with ``finite``) holds a NaN or infinite value."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise DnwError(f"{path}: file not found")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = dict(f.metadata() or {})
            if "dnw" in metadata:
                metadata.update(json.loads(metadata.pop("dnw")))
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    except Exception as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DnwError(
            f"{path}: not a readable safetensors file ({reason}); the file is damaged"
        ) from None
    if finite:
        check_finite(tensors, path)
    return tensors, metadata


def check_finite(tensors: dict[str, Any], where: str | Path) -> None:
    """A one-line error naming the first tensor with a NaN or infinite value."""
    import torch

    for key, value in tensors.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise DnwError(
                f"{where}: tensor {key} holds NaN or infinite values; the file is damaged"
            )


def thread_record() -> dict[str, Any]:
    """The thread policy in effect (torch's thread count, OpenMP's wait policy, cores usable)."""
    out: dict[str, Any] = {
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "usable_cores": usable_cores(),
    }
    if "torch" in sys.modules:
        out["torch_threads"] = sys.modules["torch"].get_num_threads()
    return out


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity, else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def versions() -> dict[str, str]:
    """Versions of Python and the libraries a run depends on."""
    import importlib.metadata as md

    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for dist in ("denoised-weights", "torch", "peft", "diffusers", "transformers", "safetensors"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def write_run_record(
    out_dir: str | Path,
    *,
    seed: int | None,
    config: dict[str, Any],
    name: str = "run.json",
    extra: dict[str, Any] | None = None,
) -> Path:
    """Record seed, config, versions, threads and the command line next to a run's outputs."""
    record = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": sys.argv,
        "seed": seed,
        "config": config,
        "versions": versions(),
        "threads": thread_record(),
        **(extra or {}),
    }
    return write_json(Path(out_dir) / name, record)

"""Worker processes on one machine: independent jobs split over W spawned processes.

Two 1-thread processes beat one 2-thread process by about 28% on 2 cores for independent
training jobs (DESIGN.md), so ``dnw collect --workers`` and ``dnw benchmark --workers`` spawn
processes with cores/W threads each. A worker ends as soon as its parent is gone, so a killed
command leaves no orphan that keeps writing while its rerun resumes the same folder.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from denoised_weights.core.errors import DnwError


def threads_per_worker(workers: int, world: int = 1) -> int:
    """Torch threads for each of ``workers`` processes (times ``world`` ranks) on this machine."""
    return max(1, (os.cpu_count() or 1) // (workers * world))


def exit_with_parent() -> None:
    """End this process as soon as its parent is gone (killed, even with -9)."""
    parent = os.getppid()

    def watch() -> None:
        while True:
            if os.getppid() != parent:
                os._exit(1)
            time.sleep(0.5)

    threading.Thread(target=watch, daemon=True, name="exit-with-parent").start()


def run_workers(target: Callable[..., Any], worker_args: Sequence[tuple], what: str) -> None:
    """Run ``target(*args)`` in one spawned process per entry of ``worker_args`` and wait.

    ``target`` must be importable (module level) and should call :func:`exit_with_parent`
    first. Raises a one-line error naming the failed workers; ``what`` says what to rerun.
    """
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=target, args=args) for args in worker_args]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join()
    failed = [w for w, proc in enumerate(procs) if proc.exitcode != 0]
    if failed:
        raise DnwError(f"{what} worker(s) {failed} failed; rerun the same command to resume")

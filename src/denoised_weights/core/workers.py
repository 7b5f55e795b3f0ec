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


def _await_job(target: Callable[..., Any], warm: Callable[[], None] | None, inbox: Any) -> None:
    """A started worker: get ready (``warm``), wait for its arguments, run them (None: no work)."""
    exit_with_parent()
    if warm is not None:
        warm()
    try:
        args = inbox.recv()
    except EOFError:  # no work for this worker, or the parent has ended
        return
    finally:
        inbox.close()
    target(*args)


class EarlyWorkers:
    """``count`` spawned processes started before their work is known, so their start (several
    seconds of imports each) overlaps the caller's own set-up; each waits for its arguments.

    ``run(worker_args, local)`` hands one tuple to each process (the rest get none and end),
    runs ``local()`` in this process meanwhile (the caller's own share) and waits for all.
    Used as a context manager: leaving it with an exception terminates the processes (their
    work resumes on a rerun); leaving it without having called ``run`` dismisses them.
    ``target`` and ``warm`` must be importable (module level). Errors name the workers from
    ``first_number`` (1 where the caller itself is worker 0).
    """

    def __init__(
        self,
        target: Callable[..., Any],
        count: int,
        what: str,
        warm: Callable[[], None] | None = None,
        first_number: int = 0,
    ) -> None:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        self.what, self.first_number = what, first_number
        self._outboxes: list[Any] = []
        self._procs: list[Any] = []
        for _ in range(count):
            inbox, outbox = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=_await_job, args=(target, warm, inbox))
            proc.start()
            inbox.close()
            self._outboxes.append(outbox)
            self._procs.append(proc)

    def __len__(self) -> int:
        return len(self._procs)

    def __enter__(self) -> EarlyWorkers:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None:
            for proc in self._procs:
                proc.terminate()
        self._dismiss()
        for proc in self._procs:
            proc.join()

    def _dismiss(self) -> None:
        """Close every outbox not closed yet: a waiting worker reads end-of-file and ends."""
        for outbox in self._outboxes:
            if not outbox.closed:
                outbox.close()

    def run(self, worker_args: Sequence[tuple], local: Callable[[], Any] | None = None) -> Any:
        """Hand out ``worker_args``, run ``local()`` here, wait; returns what ``local`` returns.
        Raises a one-line error naming the failed workers."""
        if len(worker_args) > len(self._procs):
            raise ValueError(f"{len(worker_args)} jobs for {len(self._procs)} started workers")
        lost = set()
        for w, (outbox, args) in enumerate(zip(self._outboxes, worker_args, strict=False)):
            try:
                outbox.send(tuple(args))
            except OSError:  # it died while starting (BrokenPipeError): reported below
                lost.add(w)
            outbox.close()
        self._dismiss()
        result = local() if local is not None else None
        for proc in self._procs:
            proc.join()
        failed = [
            w + self.first_number
            for w, proc in enumerate(self._procs)
            if proc.exitcode != 0 or w in lost
        ]
        if failed:
            raise DnwError(
                f"{self.what} worker(s) {failed} failed; rerun the same command to resume"
            )
        return result


def run_workers(target: Callable[..., Any], worker_args: Sequence[tuple], what: str) -> None:
    """Run ``target(*args)`` in one spawned process per entry of ``worker_args`` and wait.

    ``target`` must be importable (module level). Raises a one-line error naming the failed
    workers; ``what`` says what to rerun.
    """
    with EarlyWorkers(target, len(worker_args), what) as workers:
        workers.run(worker_args)

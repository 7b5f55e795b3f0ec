"""Ctrl-C that is never lost.

Python raises KeyboardInterrupt wherever the main thread happens to be when SIGINT arrives. If
that is a finaliser (``__del__``, a weakref callback) or a library callback that turns
exceptions into its own, the interrupt is swallowed and a long training run goes on as if
nothing happened. While :func:`catching` is active, SIGINT also sets a flag, and the training
loops call :func:`check` at every step to raise it again.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

_interrupted = threading.Event()


def check() -> None:
    """Raise KeyboardInterrupt if SIGINT arrived (once is enough; see :func:`catching`)."""
    if _interrupted.is_set():
        raise KeyboardInterrupt


@contextlib.contextmanager
def catching() -> Iterator[None]:
    """Within this block SIGINT raises KeyboardInterrupt and is remembered for :func:`check`."""

    def handler(signum, frame):
        _interrupted.set()
        raise KeyboardInterrupt

    _interrupted.clear()
    try:
        previous = signal.signal(signal.SIGINT, handler)
    except ValueError:  # not the main thread: signals are not ours to handle
        previous = None
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
        _interrupted.clear()

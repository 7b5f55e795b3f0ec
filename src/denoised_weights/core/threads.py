"""The thread policy of a ``dnw`` process (measured: see ``tools/thread_policy.py`` and the README).

On a machine where another CPU-heavy process runs, OpenMP's default *active* wait makes torch's
worker threads spin for the cores the other process needs, and both slow down severely. The
command line therefore asks OpenMP for the passive wait policy before torch is imported (an
explicit ``OMP_WAIT_POLICY`` in the environment wins). Worker processes (``--workers W``) each
take usable-cores / W threads. ``run.json`` records the policy a run had.
"""

from __future__ import annotations

import os


def configure_process() -> None:
    """Set the process-wide policy; call before torch is imported."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("KMP_BLOCKTIME", "0")  # the same for Intel's OpenMP, if torch uses it

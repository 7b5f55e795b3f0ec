"""Generic built-in components: the layerwise blocker."""

from __future__ import annotations

from denoised_weights.core.hookspecs import hookimpl


@hookimpl
def register_blockers(register):
    register(
        "layerwise",
        "denoised_weights.blockers.layerwise:LayerwiseBlocker",
        tiny={"block_size": 64},
        small={"block_size": 256},
        paper={"block_size": 256},
    )

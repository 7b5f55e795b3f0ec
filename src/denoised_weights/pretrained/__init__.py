"""The pretrained pack: a base model and a fitted generator of the image-translation task's
small preset, shipped inside the package so that ``dnw generate`` and ``dnw demo`` work
without training anything. Layout of a pack folder::

    base/           model.safetensors, training.safetensors, base.json, run.json
    generator/      the dnw fit folder (model/, scheduler/, blocker.json, mean_blocks, ...)
    provenance.json task, commit, preset, seeds, versions and the measured figures of the build

``dnw pack --base DIR --generator DIR --out DIR`` writes one (see
:mod:`denoised_weights.pipeline.pack`); ``make pack`` rebuilds the shipped one from nothing.
This module holds data only: it imports nothing of the pipeline or the plugins.
"""

from __future__ import annotations

import json
from pathlib import Path

#: the packs that ship with the package (present in source checkouts and wheels)
SHIPPED = Path(__file__).parent / "small"
MAX_PACK_BYTES = 20 * 1024 * 1024


def shipped_pack(task: str | None = None) -> Path | None:
    """The shipped pack's folder (for ``task``, when given), or None when there is none."""
    provenance = SHIPPED / "provenance.json"
    if not provenance.is_file():
        return None
    if task is not None:
        try:
            made_for = json.loads(provenance.read_text()).get("task", "image-translation")
        except (OSError, json.JSONDecodeError):
            return None
        if made_for != task:
            return None
    return SHIPPED

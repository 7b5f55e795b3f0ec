"""The weight dataset as the regression probes see it: centred blocks, prompts, a fixed split.

Shared by ``regression_probe.py`` and ``head_probe.py``: every entry's blocks centred and
scaled with a generator's statistics, the prompt bank, 20 training concepts held out (always
the same 20), and the training entries (all checkpoints but each concept's last).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class ProbeData:
    gen: Any  # DiffusionGenerator
    entries: tuple[dict[str, Any], ...]
    x: Any  # [E, N, b] centred blocks
    prompts: dict[str, list[str]]
    bank: Any  # PromptBank
    concepts: list[str]
    held: list[str]
    last: int
    train: list[int]

    def last_entry(self, concept: str) -> int:
        return next(
            i
            for i, e in enumerate(self.entries)
            if e["concept"] == concept and e["checkpoint"] == self.last
        )


def load(generator: Path, data: Path) -> ProbeData:
    import torch

    from denoised_weights.core.dataset import WeightDataset
    from denoised_weights.generators.diffusion import DiffusionGenerator, PromptBank

    torch.manual_seed(0)
    gen = DiffusionGenerator(generator)
    entries, states = zip(*WeightDataset(data).iter_states(), strict=True)
    x = torch.stack([(gen.blocker.to_blocks(s) - gen.offset) / gen.scale for s in states])
    prompts = {e["concept"]: e["prompts"] for e in entries}
    bank = PromptBank(gen.encoder, sorted({p for ps in prompts.values() for p in ps}))
    concepts = sorted(prompts)
    held = sorted(random.Random(1).sample(concepts, 20))
    last = max(e["checkpoint"] for e in entries)
    train = [
        i for i, e in enumerate(entries) if e["checkpoint"] < last and e["concept"] not in held
    ]
    return ProbeData(gen, entries, x, prompts, bank, concepts, held, last, train)

"""What a generator reads about a new concept: its prompt, its examples, or both.

``text``      the prompt's token embeddings from a frozen text encoder (the paper's).
``examples``  a handful of the concept's examples (image pairs, labelled inputs: the task's
              data) through a trainable example encoder (registered by the task's plugin), one
              token per example; the generator trains it with itself.
``both``      the prompt's tokens followed by the examples' tokens. In training either part is
              dropped now and then, so the generator also works from one of them alone.

The generator cross-attends to these tokens; each concept is read once however many of its
blocks are generated (``text_index`` of the UNet).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from denoised_weights.core.errors import DnwError

MODES = ("text", "examples", "both")
CONFIG = "examples.json"
WEIGHTS = "examples.safetensors"
#: share of training draws that lose their text or their examples (``both`` only)
DROP = 0.15

TaskData = Mapping[str, torch.Tensor]


class Conditioner(nn.Module):
    """Cross-attention tokens ``[P, L, D]`` and mask ``[P, L]`` for P concepts."""

    def __init__(
        self,
        mode: str,
        text_encoder: Any,
        example_encoder: nn.Module | None = None,
        encoder_name: str | None = None,
        n_examples: int = 8,
    ) -> None:
        super().__init__()
        if mode not in MODES:
            raise DnwError(f"unknown conditioning {mode!r}: {', '.join(MODES)}")
        if mode != "text" and example_encoder is None:
            raise DnwError(f"conditioning {mode!r} needs an example encoder")
        if not isinstance(n_examples, int) or n_examples < 1:
            raise DnwError(f"--n-examples must be a positive integer, got {n_examples!r}")
        self.mode, self.text_encoder, self.n_examples = mode, text_encoder, n_examples
        self.encoder_name = encoder_name
        self.examples = example_encoder  # trained with the generator

    @property
    def reads_examples(self) -> bool:
        return self.mode != "text"

    @property
    def reads_text(self) -> bool:
        return self.mode != "examples"

    def forward(
        self,
        prompts: Sequence[str] | None,
        examples: Sequence[TaskData] | None,
        *,
        device: torch.device | None = None,
        drop: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokens and mask of P concepts from their prompts and/or examples. ``drop [P]``
        (``both``): 0 keeps everything, 1 drops the text, 2 drops the examples."""
        parts: list[tuple[torch.Tensor, torch.Tensor]] = []
        if self.reads_text and prompts is not None:
            tokens, mask = self.text_encoder.encode(list(prompts))
            parts.append((tokens.to(device), mask.to(device)))
        if self.reads_examples and examples is not None:
            parts.append(self._example_tokens(examples, device))
        if not parts:
            raise DnwError(
                "this generator reads the new concept's examples: give them (dnw generate "
                "--pairs DIR, or fine-tune on data: --pairs DIR or --concept)"
                if self.mode == "examples"
                else "nothing to condition on: give a prompt or examples"
            )
        if drop is not None and len(parts) == 2:
            (t, tm), (e, em) = parts
            tm = tm & (drop != 1).to(tm.device)[:, None]
            em = em & (drop != 2).to(em.device)[:, None]
            parts = [(t, tm), (e, em)]
        tokens = torch.cat([p[0] for p in parts], dim=1)
        return tokens, torch.cat([p[1] for p in parts], dim=1)

    def _example_tokens(
        self, examples: Sequence[TaskData], device: torch.device | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One token per example (the first ``n_examples`` of each concept), padded."""
        sizes = []
        batch: dict[str, list[torch.Tensor]] = {}
        for data in examples:
            n = min(self.n_examples, len(next(iter(data.values()))))
            if n == 0:
                raise DnwError("a concept has no examples to condition on")
            sizes.append(n)
            for key, value in data.items():
                batch.setdefault(key, []).append(value[:n].to(device))
        flat = self.examples({k: torch.cat(v) for k, v in batch.items()})
        longest = max(sizes)
        tokens, masks, start = [], [], 0
        for n in sizes:
            tokens.append(F.pad(flat[start : start + n], (0, 0, 0, longest - n)))
            masks.append(torch.arange(longest, device=flat.device) < n)
            start += n
        return torch.stack(tokens), torch.stack(masks)

    def draw_drops(self, count: int, generator: torch.Generator) -> torch.Tensor | None:
        """Which part each of ``count`` training draws loses (``both``), else None."""
        if self.mode != "both":
            return None
        u = torch.rand(count, generator=generator)
        return torch.where(u < DROP, 1, torch.where(u < 2 * DROP, 2, 0))

    # -- on disk, beside the generator -----------------------------------------------------
    def config(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "example_encoder": self.encoder_name,
            "n_examples": self.n_examples,
        }

    def save(self, folder: Path) -> None:
        from denoised_weights.core.io import save_tensors, write_json

        write_json(folder / CONFIG, self.config())
        if self.examples is not None:
            save_tensors(folder / WEIGHTS, self.examples.state_dict())


def example_encoder(name: str, dim: int, registries: Any = None) -> nn.Module:
    """A registered example encoder of width ``dim``."""
    from denoised_weights.core.plugins import default_registries

    regs = registries if registries is not None else default_registries()
    return regs.example_encoders.create(name, dim=dim)


def load_conditioner(folder: Path, text_encoder: Any, registries: Any = None) -> Conditioner:
    """The conditioner saved beside a generator (text only when there is none)."""
    from denoised_weights.core.io import load_tensors, read_json_object

    if not (folder / CONFIG).is_file():
        return Conditioner("text", text_encoder)
    cfg = read_json_object(folder / CONFIG, "example conditioning", ("mode",))
    encoder = None
    if cfg["mode"] != "text":
        if not (folder / WEIGHTS).is_file():
            raise DnwError(f"{folder}: no {WEIGHTS} (the example encoder); fit the generator again")
        encoder = example_encoder(cfg["example_encoder"], text_encoder.dim, registries)
        weights, _ = load_tensors(folder / WEIGHTS, finite=True)
        try:
            encoder.load_state_dict(weights)
        except RuntimeError as exc:
            raise DnwError(
                f"{folder / WEIGHTS} does not fit example encoder "
                f"{cfg['example_encoder']!r} ({str(exc).splitlines()[0]})"
            ) from None
        encoder.eval()
    return Conditioner(
        cfg["mode"],
        text_encoder,
        encoder,
        cfg.get("example_encoder"),
        int(cfg.get("n_examples", 8)),
    )

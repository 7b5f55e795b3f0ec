"""The small set of interfaces every plugin implements.

Each is an abstract base class: plugins subclass it and register a factory for it through a
hook (see :mod:`denoised_weights.core.hookspecs`). Only the methods marked abstract are
required; the rest have working defaults.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # keep this module import-light: torch is imported by implementations
    import torch
    from torch import nn

    from denoised_weights.core.lora import LoraSpec

StateDict = dict[str, "torch.Tensor"]


class TargetArchitecture(ABC):
    """A network family whose LoRA adapters are generated.

    An instance is one fully resolved configuration (a preset plus overrides). It knows how
    to build the network, which modules get LoRA (and with which rank), how to take one
    training step, how to evaluate, and how to make a dummy batch for tests.
    """

    #: registry name, set by the registry when created through it
    name: str = ""
    #: configuration keys that concern only the LoRA (a base network fits every value of them)
    lora_config_keys: tuple[str, ...] = ()

    @property
    def network_config(self) -> dict[str, Any]:
        """The configuration of the network alone (what a base model must match)."""
        return {k: v for k, v in self.config.items() if k not in self.lora_config_keys}

    @property
    @abstractmethod
    def config(self) -> dict[str, Any]:
        """JSON-serialisable configuration that fully determines the network's shapes."""

    @abstractmethod
    def build(self, seed: int = 0) -> nn.Module:
        """The network that receives LoRA (for a GAN: the generator)."""

    @abstractmethod
    def lora_spec(self) -> LoraSpec:
        """Which modules get LoRA, with which rank; which norm layers train alongside."""

    @abstractmethod
    def dummy_batch(self, batch_size: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
        """A small random batch in the format ``training_step`` and ``evaluate`` take."""

    @abstractmethod
    def forward(self, model: nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The network's output on a batch (for a translator: the translated images)."""

    @abstractmethod
    def init_training(self, model: nn.Module, *, seed: int = 0, **options: Any) -> Any:
        """Everything training needs besides the model (optimisers, a discriminator, ...).

        Only parameters of ``model`` with ``requires_grad`` are optimised, so the same call
        trains a full network or just its LoRA.
        """

    @abstractmethod
    def training_step(
        self, model: nn.Module, state: Any, batch: Mapping[str, torch.Tensor]
    ) -> dict[str, float]:
        """One optimisation step; returns the losses as floats."""

    @abstractmethod
    def evaluate(self, model: nn.Module, batch: Mapping[str, torch.Tensor]) -> dict[str, float]:
        """Quality metrics of ``model`` on a batch (lower-is-better ``l1`` at least)."""

    def auxiliary_modules(self) -> dict[str, nn.Module]:
        """Other networks of the family (e.g. a discriminator), for parameter counts."""
        return {}


class WeightBlocker(ABC):
    """Cuts a LoRA state into equal-size blocks and puts it back together exactly.

    Life cycle: ``bind`` to a state template and LoRA spec (fixes the layout), optionally
    ``fit`` normalisation statistics on training states, then ``to_blocks``/``from_blocks``.
    ``layout()`` / ``from_layout()`` save and restore all of it as JSON.
    """

    block_size: int

    @abstractmethod
    def bind(self, template: StateDict, spec: LoraSpec) -> WeightBlocker:
        """Fix the layout (groups, offsets, block count) for states shaped like ``template``."""

    @abstractmethod
    def layout(self) -> dict[str, Any]:
        """JSON-serialisable layout and statistics; ``structure`` excludes the statistics."""

    def structure(self) -> dict[str, Any]:
        """The layout without fitted statistics: what the fingerprint covers."""
        return self.layout()

    @classmethod
    @abstractmethod
    def from_layout(cls, layout: dict[str, Any]) -> WeightBlocker:
        """Rebuild a bound (and fitted) blocker from :meth:`layout`."""

    @abstractmethod
    def fit(self, states: Sequence[StateDict]) -> WeightBlocker:
        """Fit normalisation statistics on training states; returns self."""

    @abstractmethod
    def to_blocks(self, state: StateDict) -> torch.Tensor:
        """``[n_blocks, block_size]`` float32 tensor of (normalised) weights."""

    @abstractmethod
    def from_blocks(self, blocks: torch.Tensor) -> StateDict:
        """The exact inverse of :meth:`to_blocks`."""

    @property
    @abstractmethod
    def n_blocks(self) -> int:
        """Number of blocks N per state."""


class WeightGenerator(ABC):
    """Produces an initial LoRA state for a prompt (a diffusion model, a baseline, ...)."""

    @abstractmethod
    def generate(self, prompt: str, *, seed: int = 0) -> StateDict:
        """A LoRA state (peft key names, no adapter name) for ``prompt``."""

    def initialise(
        self,
        prompt: str,
        *,
        arch: TargetArchitecture | None = None,
        model: nn.Module | None = None,
        pairs: Mapping[str, Any] | None = None,
        seed: int = 0,
    ) -> StateDict:
        """The LoRA init for fine-tuning a new concept.

        Most initialisers ignore everything but the prompt; data-aware ones (FINE) also use the
        LoRA-injected ``model``, its ``arch`` and the concept's training ``pairs``
        (``{"A": ..., "B": ..., "discriminator": ...}``).
        """
        return self.generate(prompt, seed=seed)

    def check_fits(self, arch: TargetArchitecture) -> None:  # noqa: B027 - optional hook
        """Raise if this initialiser's LoRA states do not fit ``arch``."""


def masked_mean(tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``[B, dim]``: the mean of ``tokens [B, L, dim]`` over the positions ``mask [B, L]`` keeps."""
    m = mask.unsqueeze(-1).to(tokens.dtype)
    return (tokens * m).sum(1) / m.sum(1).clamp_min(1.0)


class TextEncoder(ABC):
    """Frozen text encoder: prompts to token embeddings (for cross-attention) and a vector."""

    dim: int

    @abstractmethod
    def encode(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(tokens [B, L, dim], mask [B, L] bool)``."""

    def pooled(self, prompts: Sequence[str]) -> torch.Tensor:
        """``[B, dim]`` mean of the token embeddings under the mask."""
        return masked_mean(*self.encode(prompts))


class PairSource(ABC):
    """Paired images (source A, target B) for one image-translation task."""

    @abstractmethod
    def pairs(
        self, n: int, *, split: str = "train", seed: int = 0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(A, B)``, each ``[n, 3, H, W]`` float32 in [0, 1]."""


class Metric(ABC):
    """An image-quality metric accumulated over batches of images in [0, 1], ``[B, 3, H, W]``."""

    #: short name used as a key in curves and reports
    name: str = ""
    higher_is_better: bool = False

    @abstractmethod
    def reset(self) -> None:
        """Forget everything accumulated."""

    @abstractmethod
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch of predictions and their targets."""

    @abstractmethod
    def compute(self) -> float:
        """The metric over everything added since the last reset."""

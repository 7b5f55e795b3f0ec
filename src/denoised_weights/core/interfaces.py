"""The small set of interfaces every plugin implements.

Each is an abstract base class: plugins subclass it and register a factory for it through a
hook (see :mod:`denoised_weights.core.hookspecs`). Only the methods marked abstract are
required; the rest have working defaults.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from typing import TYPE_CHECKING, Any

from denoised_weights.core.errors import DnwError, UnknownNameError

if TYPE_CHECKING:  # keep this module import-light: torch is imported by implementations
    import torch
    from torch import nn

    from denoised_weights.core.lora import LoraSpec

StateDict = dict[str, "torch.Tensor"]


@dataclass
class Phase:
    """One loss of a training step and the optimiser that steps on it
    (:meth:`TargetArchitecture.training_phases`)."""

    name: str
    loss: torch.Tensor
    optimizer: Any
    #: what to log besides the loss itself (tensors or floats), e.g. an L1 beside a GAN loss
    logs: Mapping[str, Any] = dataclass_field(default_factory=dict)

    def logged(self) -> dict[str, Any]:
        return {self.name: self.loss.detach(), **self.logs}


def overrides(obj: Any, method: str) -> bool:
    """Whether ``obj``'s class overrides ``TargetArchitecture.<method>``."""
    return getattr(type(obj), method, None) is not getattr(TargetArchitecture, method)


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
    #: default learning rates of ``init_training`` for a full network and for a LoRA
    learning_rates: Mapping[str, float] = {"full": 1e-3, "lora": 1e-3}

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
        trains a full network or just its LoRA. ``options`` may hold ``lr``. The result should
        have ``state_dict()`` / ``load_state_dict()`` (a torch optimiser has both) so that a
        killed run resumes exactly; it lives on the model's device.
        """

    def training_carry(self, state: Any) -> dict[str, torch.Tensor]:
        """What a base model hands to the fine-tunes made from it besides the network (a GAN:
        its discriminator's weights), as flat tensors. Default: nothing."""
        return {}

    def load_training_carry(self, state: Any, carry: Mapping[str, torch.Tensor]) -> None:  # noqa: B027
        """Put a base's :meth:`training_carry` into a fresh training ``state``. Default: nothing."""

    def training_phases(
        self, model: nn.Module, state: Any, batch: Mapping[str, torch.Tensor]
    ) -> Iterator[Phase]:
        """The losses of one training step, each with the optimiser that steps on it, in
        order (a GAN: the discriminator's, then the generator's). The training engine
        back-propagates each phase's loss and steps its optimiser before asking for the next
        phase, so code after a ``yield`` sees the updated parameters. Losses stay tensors: the
        engine decides when to read them. Implement this (new plugins) or
        :meth:`training_step` (older ones); the engine prefers this one."""
        raise NotImplementedError
        yield  # pragma: no cover - makes this a generator

    def training_step(
        self, model: nn.Module, state: Any, batch: Mapping[str, torch.Tensor]
    ) -> dict[str, float]:
        """One optimisation step; returns the losses as floats.

        The default steps through :meth:`training_phases` (zero the gradients, backward,
        step). Architectures written before the training engine override this instead; the
        engine then runs it as it is (no clipping or other engine features for them)."""
        if not overrides(self, "training_phases"):
            raise DnwError(
                f"architecture {self.name or type(self).__name__!r} implements neither "
                "training_phases nor training_step: implement training_phases (see "
                "TargetArchitecture.training_phases)"
            )
        logs: dict[str, float] = {}
        for phase in self.training_phases(model, state, batch):
            phase.optimizer.zero_grad(set_to_none=True)
            phase.loss.backward()
            phase.optimizer.step()
            logs.update({k: float(v) for k, v in phase.logged().items()})
        return logs

    @abstractmethod
    def evaluate(self, model: nn.Module, batch: Mapping[str, torch.Tensor]) -> dict[str, float]:
        """Quick quality figures of ``model`` on a batch (the conformance kit's sanity check;
        the pipeline evaluates through the task and its metrics)."""

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

    def from_blocks_differentiable(self, blocks: torch.Tensor) -> StateDict:
        """:meth:`from_blocks` that keeps the autograd graph and the device (for training a
        generator through what its weights do)."""
        raise DnwError(f"{type(self).__name__} cannot un-block differentiably")

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
        task: Task | None = None,
        data: Mapping[str, torch.Tensor] | None = None,
        carry: Mapping[str, torch.Tensor] | None = None,
        seed: int = 0,
    ) -> StateDict:
        """The LoRA init for fine-tuning a new concept.

        Most initialisers ignore everything but the prompt; data-aware ones (FINE) also use the
        LoRA-injected ``model``, its ``arch``, the ``task`` and the concept's training ``data``,
        and the base's training ``carry`` (e.g. a GAN's discriminator) to train with.
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


class ExampleEncoder:
    """Reads a concept's examples (a task's data: image pairs, labelled inputs, ...) for an
    example-conditioned generator, which trains it with itself.

    An implementation is a ``torch.nn.Module`` built as ``factory(dim=...)`` whose
    ``forward(data)`` returns ``[N, dim]``: one token per example, in the width of the text
    encoder's tokens (the generator cross-attends to them as it does to a prompt's). A task
    names its default in ``Task.default_example_encoder``; plugins register their own with
    the ``register_example_encoders`` hook.
    """

    dim: int


class PairSource(ABC):
    """Paired images (source A, target B) for one image-translation task (a source of data
    the image-translation plugin registers; other tasks make their data themselves)."""

    @abstractmethod
    def pairs(
        self, n: int, *, split: str = "train", seed: int = 0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(A, B)``, each ``[n, 3, H, W]`` float32 in [0, 1]."""


class Metric(ABC):
    """A quality figure accumulated over batches of a task's predictions and targets (images
    in [0, 1] for image translation, logits and labels for a classifier, ...)."""

    #: short name used as a key in curves and reports
    name: str = ""
    higher_is_better: bool = False

    @abstractmethod
    def reset(self) -> None:
        """Forget everything accumulated."""

    @abstractmethod
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch of predictions (``Task.predict``) and their targets."""

    @abstractmethod
    def compute(self) -> float:
        """The metric over everything added since the last reset."""


# -- tasks ------------------------------------------------------------------------------------
TaskData = dict[str, "torch.Tensor"]
TRAIN, HELD_OUT = "train", "held-out"
SPLITS = (TRAIN, HELD_OUT)


@dataclass(frozen=True)
class Concept:
    """One concept of a task: what a LoRA is trained for and a prompt describes.

    ``family`` names the kind of change (an edit type, a transformation); concepts of one
    family differ in their continuous ``params``. A composition's family joins its parts'
    families with ``+`` (``"rotate+blur"``), which is how ``Task.select_concepts`` counts
    parts. ``split`` is ``"train"`` (the base, the weight dataset and the generator may use
    it) or ``"held-out"`` (never seen by them).
    """

    id: str
    prompts: tuple[str, ...]
    split: str = TRAIN
    family: str = ""
    params: tuple[tuple[str, float], ...] = ()
    #: for held-out concepts, how they are unseen: "interpolation" (a parameter value between
    #: trained ones), "extrapolation" (beyond the trained range), "composition" (a combination
    #: never trained together) or "family" (an edit type never trained at all)
    holdout: str = ""

    def __post_init__(self) -> None:
        if not self.id or not self.prompts:
            raise ValueError("a concept needs an id and at least one prompt")
        if self.split not in SPLITS:
            raise ValueError(
                f"concept {self.id}: split must be one of {SPLITS}, got {self.split!r}"
            )

    @property
    def prompt(self) -> str:
        return self.prompts[0]


@dataclass(frozen=True)
class TaskPreset:
    """The sizes of a whole run of the pipeline for one task: what ``dnw benchmark --preset``
    and ``dnw demo`` build (base, dataset, generator) and run (fine-tuning every init).

    ``arch`` is the architecture preset; ``base``, ``collect`` and ``fit`` are keyword
    arguments of the three building stages; the rest shape the fine-tuning comparison.
    """

    arch: str
    base: dict[str, Any] = dataclass_field(default_factory=dict)
    collect: dict[str, Any] = dataclass_field(default_factory=dict)
    fit: dict[str, Any] = dataclass_field(default_factory=dict)
    concepts: int = 8
    seeds: int = 2
    max_steps: int = 400
    eval_every: int = 50
    n_train: int = 256
    n_eval: int = 64
    batch_size: int = 8
    metrics: tuple[str, ...] = ()
    snapshot_at: tuple[int, ...] = (0, 20, 100)
    step0_all: bool = True
    text_encoder: str = "minilm"
    #: the init whose final value is the benchmark's target ("scratch", the paper's; a task
    #: whose base already scores above scratch's final value names a LoRA init, "standard")
    target_init: str = "scratch"


class Task(ABC):
    """A field of application: its concepts, their data, batches and evaluation.

    The pipeline never looks inside the data: a task's data is a dict of tensors whose first
    dimensions agree (``{"A", "B"}`` image pairs, ``{"x", "y"}`` inputs and labels, ...). The
    architecture trains on the task's batches; the task evaluates the architecture's outputs
    (:meth:`predict`) with its metrics.
    """

    #: registry name, set by the registry when created through it
    name: str = ""
    #: the metric targets and speed-ups are measured in, and its direction
    target_metric: str = "l1"
    higher_is_better: bool = False
    #: what the pipeline evaluates by default (the target metric first)
    metrics: tuple[str, ...] = ("l1",)
    #: the registered architecture this task trains by default, and its default preset
    default_architecture: str = ""
    default_preset: str | None = None
    #: the registered example encoder an example-conditioned generator reads this task's
    #: examples with (``dnw fit --conditioning examples``)
    default_example_encoder: str = ""
    #: the keys of the data the network reads, and the key of what it should output
    input_keys: tuple[str, ...] = ("A",)
    target_key: str = "B"
    #: the factory's keyword arguments, which worker processes use to rebuild the task (set by
    #: ``create_task`` unless the task sets it itself)
    options: dict[str, Any] | None = None

    @abstractmethod
    def concepts(self, split: str | None = None) -> list[Concept]:
        """Every concept (of one split), in a fixed order."""

    @abstractmethod
    def make_data(
        self, concept: Concept, *, arch: TargetArchitecture, split: str, n: int, seed: int
    ) -> TaskData:
        """``n`` seeded examples of ``concept``: ``split="train"`` to train on, ``"eval"``
        from inputs never used for training (e.g. held-out photos)."""

    # -- defaults a task may override -------------------------------------------------------
    @property
    def presets(self) -> dict[str, TaskPreset]:
        """Named sizes of a whole run (``dnw benchmark --preset``, ``dnw demo``)."""
        return {}

    def get_concept(self, id_or_prompt: str) -> Concept:
        """The concept with this id or prompt (case and spacing ignored)."""
        import difflib

        def norm(text: str) -> str:
            return " ".join(text.lower().split())

        key = norm(id_or_prompt)
        for concept in self.concepts():
            if concept.id == id_or_prompt or key in {norm(concept.id), *map(norm, concept.prompts)}:
                return concept
        ids = [c.id for c in self.concepts()]
        close = difflib.get_close_matches(id_or_prompt, ids, n=3, cutoff=0.5)
        hint = f"; closest: {', '.join(close)}" if close else ""
        raise UnknownNameError(
            f"unknown concept {id_or_prompt!r} of task {self.name!r}{hint} "
            f"(see 'dnw list concepts --task {self.name}')"
        )

    def select_concepts(
        self, split: str = TRAIN, *, n: int | None = None, max_parts: int | None = None
    ) -> list[Concept]:
        """The concepts of ``split`` made of at most ``max_parts`` parts (the parts of a
        composition are its family's ``+``-separated names), all or ``n`` spread evenly."""
        chosen = [
            c
            for c in self.concepts(split)
            if max_parts is None or len(c.family.split("+")) <= max_parts
        ]
        if n is None or n >= len(chosen):
            return chosen
        return [chosen[round(i * len(chosen) / n)] for i in range(n)]

    def sample_concept(self, generator: Any) -> Concept:
        """A training concept at a random parameter value of the training ranges (never inside
        a held-out interval), drawn with the ``torch.Generator`` given; tasks whose concepts
        have no continuous parameters return a random training concept. :meth:`get_concept`
        must accept the id of every concept this returns."""
        import torch

        train = self.concepts(TRAIN)
        return train[int(torch.randint(len(train), (1,), generator=generator))]

    def load_data(self, path: Any, *, arch: TargetArchitecture, split: str) -> TaskData:
        """Data from a user's folder (image translation: pix2pix A/ and B/ pairs)."""
        raise DnwError(f"task {self.name!r} reads no data folders; give a --concept instead")

    def batch(self, data: TaskData, *, batch_size: int, seed: int, step: int) -> TaskData:
        """A random training batch fixed by ``(seed, step)``, so a resumed run sees the same."""
        import torch

        g = torch.Generator().manual_seed(seed * 1_000_003 + step)
        idx = torch.randint(data_size(data), (batch_size,), generator=g)
        return {k: v[idx] for k, v in data.items()}

    def base_data(
        self,
        arch: TargetArchitecture,
        concepts: Sequence[Concept],
        *,
        n_per_concept: int,
        seed: int,
    ) -> TaskData:
        """The base-pretraining mixture: ``n_per_concept`` examples of every concept."""
        parts = [
            self.make_data(c, arch=arch, split="train", n=n_per_concept, seed=seed * 7919 + i)
            for i, c in enumerate(concepts)
        ]
        return concat_data(parts)

    def base_eval_data(
        self, arch: TargetArchitecture, concepts: Sequence[Concept], *, seed: int
    ) -> TaskData:
        """What the base is evaluated on while it trains: a few eval examples of up to 16
        concepts spread over the mixture."""
        picks = list(concepts)[:: max(1, len(concepts) // 16)]
        return concat_data(
            [
                self.make_data(c, arch=arch, split="eval", n=4, seed=10_000 + i)
                for i, c in enumerate(picks)
            ]
        )

    def predict(
        self, arch: TargetArchitecture, model: nn.Module, data: TaskData, batch_size: int = 32
    ) -> torch.Tensor:
        """The network's outputs on ``data`` (eval mode, no gradients, batched, on the CPU)."""
        import torch

        was = model.training
        model.eval()
        device = _device_of(model)
        outs = []
        with torch.no_grad():
            for i in range(0, data_size(data), batch_size):
                chunk = {k: data[k][i : i + batch_size].to(device) for k in self.input_keys}
                outs.append(self.postprocess(arch.forward(model, chunk)).cpu())
        model.train(was)
        return torch.cat(outs)

    def loss(self, output: torch.Tensor, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The task's own differentiable loss of the network's raw output on a batch (image
        translation: L1 to the targets; a classifier: cross-entropy). Training a generator on
        what its weights do (``dnw fit --objective task``) backpropagates through it."""
        raise DnwError(
            f"task {self.name!r} defines no differentiable "
            "loss (Task.loss); use --objective weights"
        )

    def postprocess(self, output: torch.Tensor) -> torch.Tensor:
        """What :meth:`predict` makes of the network's raw output (e.g. clamp to [0, 1])."""
        return output

    def evaluate(
        self,
        arch: TargetArchitecture,
        model: nn.Module,
        data: TaskData,
        metrics: Mapping[str, Metric],
        *,
        outputs: torch.Tensor | None = None,
    ) -> dict[str, float | None]:
        """Every metric of the predictions against ``data[target_key]``; a metric the data
        cannot support (FID on a handful of images) is None."""
        import math

        out = self.predict(arch, model, data) if outputs is None else outputs
        result: dict[str, float | None] = {}
        for name, metric in metrics.items():
            metric.reset()
            try:
                metric.update(out, data[self.target_key])
                value = metric.compute()
            except DnwError:
                value = None
            result[name] = None if value is None or math.isnan(value) else float(value)
        return result

    def preview(
        self, data: TaskData, outputs: Mapping[str, torch.Tensor], path: Any, title: str = ""
    ) -> Any:
        """A picture comparing ``outputs`` (label -> predictions on the first items of
        ``data``); returns its path, or None when the task has no pictures."""
        return None


def data_size(data: Mapping[str, torch.Tensor]) -> int:
    """The number of examples in a task's data (the common first dimension)."""
    sizes = {len(v) for v in data.values()}
    if len(sizes) != 1:
        raise DnwError(f"task data with unequal lengths {sorted(sizes)}")
    return sizes.pop()


def concat_data(parts: Sequence[Mapping[str, torch.Tensor]]) -> TaskData:
    import torch

    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


def subset(data: Mapping[str, torch.Tensor], index: Any) -> TaskData:
    return {k: v[index] for k, v in data.items()}


def _device_of(model: nn.Module) -> torch.device:
    import torch

    param = next(iter(model.parameters()), None)
    return param.device if param is not None else torch.device("cpu")

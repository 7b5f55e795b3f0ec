"""The options of the pipeline's stages: one dataclass each, the one place where an option's
default, help, bounds and choices are written.

``dnw`` builds its command-line options from these fields
(:func:`denoised_weights.cli.options.dataclass_options`) and :mod:`denoised_weights.api` takes
them as keyword arguments, as Hugging Face's ``HfArgumentParser`` does with its dataclasses.
This module is import-light (no torch), so that building the command line stays fast.
"""

from __future__ import annotations

import dataclasses
import math
import operator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from denoised_weights.core.config import JsonConfig, check_fields, field
from denoised_weights.core.errors import DnwError
from denoised_weights.pipeline.context import MAX_SEED, check_lr, check_seed

#: bounds shared by several stages
MAX_STEPS = 10**7
MAX_BATCH = 4096
MAX_EXAMPLES = 1_000_000
#: base steps when neither the options nor the task's run presets say
DEFAULT_BASE_STEPS = 2500
#: the inits each comparing command runs by default
COMPARE_INITS = ("scratch", "standard")
DEMO_INITS = ("scratch", "standard", "generated")
BENCHMARK_INITS = ("scratch", "standard", "generated", "mean", "nearest", "noisy-nearest", "fine")


def _seed(help: str) -> Any:
    return field(0, help=help, low=0, high=MAX_SEED)


def _lr(help: str) -> Any:
    return field(None, help=help, low=0, high=10, low_open=True)


@dataclass
class ConceptSelection:
    """Which of the task's training concepts a base mixes or a collection collects."""

    n_concepts: int | None = field(
        None,
        help="training concepts to use, spread evenly over the task's (default: all)",
        flags=("--concepts",),
        low=1,
        high=MAX_STEPS,
    )
    max_parts: int | None = field(
        None,
        help=(
            "only concepts of at most this many parts (1: "
            "every single edit at every training value)"
        ),
        flags=("--max-parts", "--max-primitives"),
        low=1,
        high=3,
    )

    def __post_init__(self) -> None:
        check_fields(self)


@dataclass
class BaseOptions(JsonConfig):
    """How a base model is pretrained (``dnw base``)."""

    config_type = "base"

    steps: int | None = field(
        None,
        help=(
            "training steps (default: the task's run preset for "
            f"this architecture preset, else {DEFAULT_BASE_STEPS})"
        ),
        low=1,
        high=MAX_STEPS,
    )
    batch_size: int = field(8, help="examples per step", low=1, high=MAX_BATCH)
    pairs_per_concept: int = field(
        32, help="training examples made per concept", low=1, high=MAX_EXAMPLES
    )
    eval_every: int = field(
        250, help="steps between evaluations (and checkpoints)", low=1, high=MAX_STEPS
    )
    seed: int = _seed("seed of the network's init, the data and the batches")
    lr: float | None = _lr("learning rate (default: the architecture's full-network rate)")

    def __post_init__(self) -> None:
        check_seed(self.seed)
        check_lr(self.lr)
        check_fields(self)


@dataclass
class CollectOptions:
    """How each concept's LoRA is trained and which checkpoints are kept (``dnw collect``)."""

    checkpoints: int = field(
        4, help="checkpoints kept per concept", flags=("--checkpoints", "-k"), low=1, high=1000
    )
    max_steps: int = field(
        400, help="step budget before keeping checkpoints", low=1, high=MAX_STEPS
    )
    min_steps: int = field(
        50, help="steps before a plateau may end training", low=0, high=MAX_STEPS
    )
    eval_every: int = field(
        25, help="steps between evaluations until checkpoints are kept", low=1, high=MAX_STEPS
    )
    interval: int = field(25, help="steps between kept checkpoints", low=1, high=MAX_STEPS)
    patience: int = field(
        3, help="evaluations without a relative gain of --tol that end training", low=1, high=1000
    )
    tol: float = field(
        0.01, help="relative gain of the target metric that counts as progress", low=0, high=1
    )
    n_train: int = field(128, help="training examples made per concept", low=1, high=MAX_EXAMPLES)
    n_eval: int = field(32, help="eval examples made per concept", low=1, high=MAX_EXAMPLES)
    batch_size: int = field(8, help="examples per step", low=1, high=MAX_BATCH)
    lr: float | None = _lr("LoRA learning rate (default: the architecture's)")
    seed: int = _seed("seed of each concept's data and batches")

    def __post_init__(self) -> None:
        check_seed(self.seed)
        check_lr(self.lr)
        check_fields(self)


@dataclass
class FinetuneOptions(JsonConfig):
    """The schedule of one fine-tuning run (``dnw finetune``)."""

    config_type = "finetune"

    max_steps: int = field(600, help="training steps", low=1, high=MAX_STEPS)
    eval_every: int = field(50, help="steps between evaluations", low=1, high=MAX_STEPS)
    batch_size: int = field(8, help="examples per step", low=1, high=MAX_BATCH)
    lr: float | None = _lr(
        "learning rate (default: the architecture's; e2gan 2e-4 full, 1e-3 LoRA)"
    )
    metrics: tuple[str, ...] | None = field(
        None, help="comma-separated metrics to evaluate (default: the task's)", names="metrics"
    )
    seed: int = _seed("seed of the batches and of scratch's init")
    eval_at: tuple[int, ...] = field((), help="extra evaluation steps", cli=False)
    snapshot_at: tuple[int, ...] = field(
        (), help="evaluation steps whose outputs are kept", cli=False
    )

    def __post_init__(self) -> None:
        if self.metrics is not None and not isinstance(self.metrics, tuple):
            self.metrics = tuple(self.metrics) or None
        for name in ("max_steps", "eval_every", "batch_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise DnwError(f"--{name.replace('_', '-')} must be a positive integer")
        check_seed(self.seed)
        check_lr(self.lr)
        check_fields(self)


@dataclass
class ConceptData:
    """What one concept is fine-tuned and evaluated on: data the task makes for one of its
    concepts, or a folder of the user's (``dnw finetune``)."""

    concept: str | None = field(
        None,
        help="a concept of the task (id or prompt); its data is made here",
        flags=("--concept", "-c"),
    )
    pairs: Path | None = field(
        None, help="or a folder of training data (image translation: A/ and B/ pairs)", path="any"
    )
    eval_pairs: Path | None = field(
        None, help="eval data folder (default: a fixed 10% of --pairs)", path="any"
    )
    prompt: str | None = field(
        None, help="the concept's text (default with --concept: its first prompt)"
    )
    n_train: int = field(256, help="training examples made for --concept", low=1, high=MAX_EXAMPLES)
    n_eval: int = field(64, help="eval examples made for --concept", low=1, high=MAX_EXAMPLES)

    def __post_init__(self) -> None:
        check_fields(self)


@dataclass
class InitOptions:
    """Where a fine-tune's weights start, and the folders its initialiser reads."""

    init: str = field(
        "standard",
        help=(
            "scratch (the full network from random weights), standard (the "
            "base + LoRA with peft's init) or a registered initialiser"
        ),
        names="generators",
        extra_names=("scratch", "standard"),
    )
    base: Path | None = field(
        None, help="base model folder (default: the pretrained pack's, when it fits)", path="any"
    )
    generator: Path | None = field(
        None,
        help=(
            "generator folder for the inits that read one, such as generated (default: the pack's)"
        ),
        flags=("--generator", "-g"),
        path="any",
    )
    data: Path | None = field(
        None,
        help="weight dataset (dnw collect) for the inits that read one, such as mean and nearest",
        path="any",
    )


#: default training steps of ``dnw fit`` per preset (small: about 27 minutes on 2 CPU cores)
FIT_STEPS = {"tiny": 500, "small": 7500, "paper": 20000}
LR_SCHEDULES = ("constant", "cosine", "linear", "constant_with_warmup")
OBJECTIVES = ("weights", "task", "both")
#: where the prediction types and conditioning modes live (modules that import torch)
PREDICTIONS_REF = "denoised_weights.generators.diffusion:PREDICTIONS"
MODES_REF = "denoised_weights.generators.conditioning:MODES"


@dataclass
class FitConfig(JsonConfig):
    """How the block diffusion model is trained (``dnw fit``)."""

    config_type = "fit"

    text_encoder: str = field("minilm", help="text encoder", names="text-encoders")
    text_encoder_path: str | None = field(None, help="local model folder (for clip)")
    preset: str | None = field(
        None, help="model size preset (default: the dataset's)", flags=("--preset", "-p")
    )
    block_size: int | None = field(
        None, help="values per block (default: the preset's; a multiple of 32)", low=1
    )
    batch_size: int = field(256, help="blocks per step", low=1, high=1_000_000)
    lr: float = field(1e-3, help="AdamW learning rate", low=0, high=10, low_open=True)
    max_steps: int | None = field(
        None,
        help="training steps (default per preset: "
        + ", ".join(f"{k} {v:,}" for k, v in FIT_STEPS.items())
        + "; small takes about 27 minutes on 2 cores)",
        low=1,
        high=10**8,
    )
    max_minutes: float | None = field(
        None, help="stop after this long", low=0, high=10**6, low_open=True
    )
    val_every: int = field(
        250, help="steps between validations (and checkpoints)", low=1, high=10**8
    )
    prediction_type: str = field(
        "epsilon",
        help="what the network predicts: the noise (epsilon, the paper's), the clean sample, or v",
        flags=("--prediction",),
        choices=PREDICTIONS_REF,
    )
    seed: int = _seed("seed of the model's init and the batches")
    center: bool = field(
        True, help="model each block's deviation from the dataset mean, scaled per layer group"
    )
    noisy_share: float | None = field(
        None,
        help=(
            "share of each batch at the noisiest 10% of timesteps "
            "(default: 0.5 for sample and v_prediction, 0 for epsilon)"
        ),
        low=0,
        high=1,
    )
    lr_schedule: str = field(
        "constant",
        help=(
            "diffusers learning-rate schedule over --max-steps (small preset, 2,000 steps: "
            "cosine decay reached a one-step cosine of 0.21 where constant reached 0.32)"
        ),
        choices=LR_SCHEDULES,
    )
    warmup_steps: int = field(
        100,
        help="linear warm-up of the cosine, linear and constant_with_warmup schedules",
        low=0,
        high=10**8,
    )
    model_options: dict[str, Any] | None = field(
        None, help="extra WeightUNet1D arguments", cli=False
    )
    objective: str = field(
        "weights",
        help=(
            "what the generator learns from: weights (denoising the collected LoRAs, "
            "the paper's), task (the task's own loss of the generated LoRAs on fresh "
            "data of concepts drawn from the training ranges) or both (the sum)"
        ),
        choices=OBJECTIVES,
    )
    base: str | None = field(
        None,
        help="base model folder the generated LoRAs are applied to (--objective task or both)",
        path="dir",
    )
    task_concepts: int = field(4, help="concepts drawn per step (task objective)", low=1, high=4096)
    task_batch: int = field(8, help="examples of each drawn concept per step", low=1, high=4096)
    task_weight: float = field(
        1.0,
        help="weight of the task loss beside the denoising loss (--objective both)",
        low=0,
        high=10**6,
        low_open=True,
    )
    task_options: dict[str, Any] | None = field(
        None,
        help="an option of the task's factory, e.g. photos_dir (task objectives; repeatable)",
        flags=("--task-option", "-T"),
    )
    init_from: str | None = field(
        None,
        help=(
            "start from a fitted generator (its network, block layout and "
            "centring; same dataset layout), e.g. to continue on the task loss"
        ),
        path="dir",
    )
    concepts: int | None = field(
        None,
        help="train on this many of the dataset's concepts, spread evenly (scaling curves)",
        low=1,
        high=10**6,
    )
    conditioning: str = field(
        "text",
        help=(
            "what the generator reads about a concept: its prompt (text), a few of its examples "
            "through a trained example encoder (examples; needs --objective task), or both"
        ),
        choices=MODES_REF,
    )
    example_encoder: str | None = field(
        None, help="example encoder (default: the task's)", names="example-encoders"
    )
    n_examples: int = field(
        8,
        help=(
            "examples of each concept the generator reads "
            "(disjoint from those its loss is computed on)"
        ),
        low=1,
        high=1024,
    )

    def __post_init__(self) -> None:
        from denoised_weights.generators.conditioning import MODES
        from denoised_weights.generators.diffusion import NOISY_SHARE, PREDICTIONS

        if self.prediction_type not in PREDICTIONS:
            raise DnwError(
                f"unknown prediction type {self.prediction_type!r}: {', '.join(PREDICTIONS)}"
            )
        if self.lr_schedule not in LR_SCHEDULES:
            raise DnwError(f"unknown --lr-schedule {self.lr_schedule!r}: {', '.join(LR_SCHEDULES)}")
        if self.noisy_share is None:  # where one-step generation reads the model (DEFAULT_TIMESTEP)
            self.noisy_share = NOISY_SHARE[self.prediction_type]
        if not (math.isfinite(self.lr) and 0 < self.lr <= 10):
            raise DnwError(f"--lr must be a positive finite number up to 10, got {self.lr}")
        if self.objective not in OBJECTIVES:
            raise DnwError(f"unknown --objective {self.objective!r}: {', '.join(OBJECTIVES)}")
        if self.conditioning not in MODES:
            raise DnwError(f"unknown --conditioning {self.conditioning!r}: {', '.join(MODES)}")
        check_seed(self.seed)
        check_fields(self)
        if self.conditioning != "text" and self.objective != "task":
            raise DnwError(
                f"--conditioning {self.conditioning} trains on "
                "freshly made examples: use it with --objective task"
            )
        if self.objective != "weights" and not self.base:
            raise DnwError(
                f"--objective {self.objective} needs --base DIR: "
                "the base model the generated LoRAs are applied to"
            )

    @property
    def steps(self) -> int:
        return self.max_steps or FIT_STEPS.get(self.preset or "", FIT_STEPS["paper"])

    def making(self) -> dict[str, Any]:
        """What a resumed fit must share with the unfinished one."""
        out = {
            k: getattr(self, k)
            for k in ("center", "prediction_type", "noisy_share", "lr_schedule", "objective")
        }
        if self.conditioning != "text":  # recorded only when on: older checkpoints stay valid
            out.update(conditioning=self.conditioning, n_examples=self.n_examples)
        # laid out over max_steps: extending changes it
        if self.lr_schedule in ("cosine", "linear"):
            out["max_steps"] = self.steps
        return out


@dataclass
class GenerateOptions:
    """How a fitted generator denoises a new concept's LoRA (``dnw generate``)."""

    steps: int = field(1, help="1: one-step; more: DDIM (trailing)", low=1, high=1000)
    timestep: int | None = field(
        None, help="noise-biased timestep of the one-step path (generator default)", low=0, high=999
    )
    start: str | None = field(None, help="one-step starting point", choices=("mean", "noise"))
    guidance: float | None = field(
        None,
        help="extrapolate away from the dataset mean: mean + G·(generated − mean) "
        "(generator default, else 1; the README measures G)",
        low=0,
        high=10,
        low_open=True,
    )
    seed: int = _seed("seed of the generation's noise")

    def __post_init__(self) -> None:
        check_seed(self.seed)
        check_fields(self)


@dataclass
class BenchmarkSpec:
    """What ``dnw benchmark`` runs: the preset, the parts it reuses, the concepts, seeds and
    inits (``out``, ``device`` and ``overwrite`` are given beside the options)."""

    out: Path = field(help="output folder", cli=False)
    preset: str = field(
        "small",
        help="the task's run preset (image translation: smoke, demo, small, paper)",
        flags=("--preset", "-p"),
    )
    base: Path | None = field(None, help="reuse a base (dnw base)", path="any")
    data: Path | None = field(None, help="reuse a weight dataset (dnw collect)", path="any")
    generator: Path | None = field(
        None, help="reuse a generator (dnw fit)", flags=("--generator", "-g"), path="any"
    )
    concepts: list[str] | None = field(
        None,
        help="comma-separated held-out concept ids (preset default: a spread-out choice)",
    )
    seeds: int | None = field(None, help="seeds per concept (preset default)", low=1, high=100)
    inits: tuple[str, ...] = field(
        BENCHMARK_INITS,
        help="comma-separated inits",
        names="generators",
        extra_names=("scratch", "standard"),
    )
    max_steps: int | None = field(None, help="step budget (preset default)", low=1, high=MAX_STEPS)
    workers: int = field(
        1, help="processes for collection and fine-tuning (cores/W threads each)", low=1, high=256
    )
    seed: int = _seed("seed of the fine-tunes and of the data")
    step0_only: bool = field(
        False,
        help=(
            "only the step-0 table: every init on every "
            "held-out concept (or --concepts), no fine-tuning"
        ),
    )
    device: str | None = field(None, help="device", cli=False)
    overwrite: bool = field(False, help="write into an existing output folder", cli=False)

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        for name in ("base", "data", "generator"):
            if getattr(self, name) is not None:
                setattr(self, name, Path(getattr(self, name)))
        self.concepts = list(self.concepts) if self.concepts else None
        self.inits = tuple(self.inits or BENCHMARK_INITS)
        check_seed(self.seed)
        check_fields(self)


@dataclass
class DemoOptions:
    """What ``dnw demo`` builds and runs, and where (the device is given beside these)."""

    workdir: Path = field(
        Path("runs/demo"),
        help="folder of the run (resumable): results, report, plots and pictures",
        path="dir",
    )
    from_scratch: bool = field(
        False, help="build base, dataset and generator here instead of using the pretrained pack"
    )
    preset: str = field(
        "demo",
        help="sizes when building (smoke: toy sizes, a quick check; never uses the pack)",
        flags=("--preset", "-p"),
    )
    n_concepts: int = field(1, help="held-out concepts", flags=("--concepts",), low=1, high=100)
    inits: tuple[str, ...] = field(
        DEMO_INITS,
        help="comma-separated inits",
        names="generators",
        extra_names=("scratch", "standard"),
    )
    max_steps: int | None = field(None, help="step budget (preset default)", low=1, high=MAX_STEPS)
    seed: int = _seed("seed of the fine-tunes and of the data")
    workers: int = field(
        2, help="processes for collection and fine-tuning", low=1, high=256, cli=False
    )

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir)
        self.inits = tuple(self.inits or DEMO_INITS)
        check_seed(self.seed)
        check_fields(self)


def thread_counts(values: Any) -> tuple[int, ...]:
    """Thread counts (``"1,2"``, or a sequence of numbers or their texts) as positive integers;
    a ValueError says what is wrong."""
    if isinstance(values, str):
        values = [v for v in values.split(",") if v.strip()]
    items = list(values or ())
    try:
        counts = tuple(int(v) if isinstance(v, str) else operator.index(v) for v in items)
    except (TypeError, ValueError):
        raise ValueError(f"{','.join(map(str, items))!r} is not a list of integers") from None
    if not counts or any(n < 1 for n in counts):
        raise ValueError("give one or more positive thread counts, e.g. 1,2")
    return counts


@dataclass
class SpeedOptions:
    """What ``dnw speed`` measures: the base and generator it times, with how many threads, in
    how many rounds, and how many concepts it collects (the task is given beside these)."""

    preset: str | None = field(
        None, help="architecture preset (default: the task's)", flags=("--preset", "-p")
    )
    base: Path | None = field(None, help="base model (default: the shipped pack's)", path="dir")
    generator: Path | None = field(
        None,
        help="fitted generator for the task-loss fit and generation rows (default: the pack's)",
        flags=("--generator", "-g"),
        path="dir",
    )
    threads: tuple[int, ...] = field((1, 2), help="comma-separated thread counts")
    rounds: int = field(
        20, help="interleaved rounds per measurement (medians are reported)", low=1, high=10_000
    )
    collect_concepts: int = field(
        0,
        help="also collect this many concepts with the README recipe (concepts per hour)",
        flags=("--collect",),
        low=0,
        high=10_000,
    )
    collect_workers: int = field(
        2, help="processes for --collect", flags=("--workers",), low=1, high=256
    )

    def __post_init__(self) -> None:
        for name in ("base", "generator"):
            if getattr(self, name) is not None:
                setattr(self, name, Path(getattr(self, name)))
        try:
            self.threads = thread_counts(self.threads)
        except ValueError as exc:
            raise DnwError(f"--threads: {exc}") from None
        check_fields(self)


def split_options(call: str, given: dict[str, Any], *classes: type) -> list[Any]:
    """One instance of each dataclass of ``classes`` from the keyword arguments ``given`` (each
    field taken by the first class that has it); an unknown keyword is a TypeError, as Python
    raises for a function's, naming the fields there are."""
    rest = dict(given)
    made = []
    for cls in classes:
        names = {f.name for f in dataclasses.fields(cls)}
        made.append(cls(**{k: rest.pop(k) for k in list(rest) if k in names}))
    if rest:
        known = sorted({f.name for cls in classes for f in dataclasses.fields(cls)})
        raise TypeError(
            f"{call}() got unexpected keyword argument(s) {', '.join(sorted(rest))}; "
            f"its options are {', '.join(known)}"
        )
    return made


__all__ = [
    "BaseOptions",
    "BenchmarkSpec",
    "CollectOptions",
    "ConceptData",
    "ConceptSelection",
    "DemoOptions",
    "FinetuneOptions",
    "FitConfig",
    "GenerateOptions",
    "InitOptions",
    "SpeedOptions",
    "split_options",
    "thread_counts",
]

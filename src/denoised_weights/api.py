"""The programmatic API: one call per stage of the pipeline, for any registered task.

Every call takes ``task`` (a registered name, default ``"image-translation"``, or a Task object;
``task_options`` go to its factory, e.g. ``{"photos_dir": ...}``), ``registries`` (default: the
installed plugins), ``device`` (default: CUDA when present, else the CPU) and ``overwrite``
(write into an existing output folder, replacing only what the same command wrote before).
The ``dnw`` commands are thin wrappers around these calls.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from denoised_weights.core.components import (
    architecture_info,
    bind_blocker,
    build_lora_model,
    create_architecture,
    create_blocker,
    create_task,
    is_architecture,
    list_architectures,
    list_components,
    list_tasks,
    lora_fingerprint,
)
from denoised_weights.core.errors import DnwError
from denoised_weights.core.interfaces import Task
from denoised_weights.core.plugins import Registries
from denoised_weights.pipeline.options import COMPARE_INITS


def _setup(
    task: str | Task | None,
    task_options: dict[str, Any] | None,
    architecture: Any,
    preset: str | None,
    registries: Registries | None,
    **overrides: Any,
):
    from denoised_weights.pipeline.context import resolve_architecture, resolve_task

    t = resolve_task(task, registries, **(task_options or {}))
    return t, resolve_architecture(t, architecture, preset, registries, **overrides)


def pack_part(task: Task, part: str, preset: str | None) -> Path | None:
    """The shipped pack's ``base`` or ``generator`` when the pack fits the task and preset."""
    from denoised_weights.core.io import read_json
    from denoised_weights.pretrained import shipped_pack

    pack = shipped_pack(task.name)
    if pack is None:
        return None
    made = read_json(pack / "provenance.json").get("preset")
    return (
        pack / part if preset in (None, made) and (preset or task.default_preset) == made else None
    )


def train_base(
    out: str | Path,
    *,
    task: str | Task | None = None,
    task_options: dict[str, Any] | None = None,
    architecture: str | None = None,
    preset: str | None = None,
    arch_options: dict[str, Any] | None = None,
    concepts: Sequence[str] | None = None,
    device: str | None = None,
    overwrite: bool = False,
    registries: Registries | None = None,
    **options: Any,
) -> Path:
    """``dnw base``: pretrain the full network on a mixture of training concepts.

    ``options``: the fields of :class:`~denoised_weights.pipeline.options.BaseOptions` (steps,
    batch_size, lr, ...) and of :class:`~denoised_weights.pipeline.options.ConceptSelection`
    (n_concepts, max_parts; or name the ``concepts``)."""
    from denoised_weights.pipeline.base import train_base as run
    from denoised_weights.pipeline.options import BaseOptions, ConceptSelection, split_options

    opts, pick = split_options("train_base", options, BaseOptions, ConceptSelection)
    t, arch = _setup(task, task_options, architecture, preset, registries, **(arch_options or {}))
    if concepts is None and (pick.n_concepts is not None or pick.max_parts is not None):
        concepts = [
            c.id for c in t.select_concepts("train", n=pick.n_concepts, max_parts=pick.max_parts)
        ]
    if opts.steps is None:
        opts = replace(opts, steps=default_base_steps(t, preset or t.default_preset))
    return run(
        t,
        arch,
        out,
        concepts=concepts,
        options=opts,
        device=device,
        overwrite=overwrite,
        registries=registries,
    )


def default_base_steps(task: Task, arch_preset: str | None) -> int:
    """The base steps of the task's first run preset for this architecture preset."""
    from denoised_weights.pipeline.options import DEFAULT_BASE_STEPS

    for p in task.presets.values():
        if p.arch == arch_preset and "steps" in p.base:
            return int(p.base["steps"])
    return DEFAULT_BASE_STEPS


def collect(
    base: str | Path,
    out: str | Path,
    *,
    task: str | Task | None = None,
    task_options: dict[str, Any] | None = None,
    architecture: str | None = None,
    arch_options: dict[str, Any] | None = None,
    preset: str | None = None,
    concepts: Sequence[str] | None = None,
    shard: str | tuple[int, int] | None = None,
    workers: int = 1,
    device: str | None = None,
    overwrite: bool = False,
    registries: Registries | None = None,
    echo: Callable[[str], None] | None = None,
    **options: Any,
):
    """``dnw collect``: a LoRA per training concept, K checkpoints each (a WeightDataset).

    ``options``: the fields of :class:`~denoised_weights.pipeline.options.CollectOptions`
    (checkpoints, max_steps, eval_every, interval, lr, seed, ...) and of
    :class:`~denoised_weights.pipeline.options.ConceptSelection` (n_concepts, max_parts; or name
    the ``concepts``)."""
    from denoised_weights.pipeline.collect import collect as run
    from denoised_weights.pipeline.collect import parse_shard
    from denoised_weights.pipeline.options import CollectOptions, ConceptSelection, split_options

    opts, pick = split_options("collect", options, CollectOptions, ConceptSelection)
    t, arch = _setup(task, task_options, architecture, preset, registries, **(arch_options or {}))
    if concepts is None:
        concepts = [
            c.id for c in t.select_concepts("train", n=pick.n_concepts, max_parts=pick.max_parts)
        ]
    shard = shard if isinstance(shard, tuple) else parse_shard(shard)
    return run(
        t,
        arch,
        base,
        out,
        concept_ids=concepts,
        opts=opts,
        preset=preset or t.default_preset,
        shard=shard,
        workers=workers,
        device=device,
        overwrite=overwrite,
        echo=echo,
        registries=registries,
    )


def fit(
    data: str | Path,
    out: str | Path,
    *,
    device: str | None = None,
    overwrite: bool = False,
    registries: Registries | None = None,
    **config: Any,
) -> Path:
    """``dnw fit``: train the block diffusion model on a weight dataset (``config``: the
    fields of :class:`~denoised_weights.pipeline.options.FitConfig`)."""
    from denoised_weights.pipeline.fit import fit as run
    from denoised_weights.pipeline.options import FitConfig

    return run(
        data, out, FitConfig(**config), device=device, overwrite=overwrite, registries=registries
    )


def generate(
    prompt: str,
    out: str | Path | None = None,
    *,
    generator: str | Path | Any | None = None,
    task: str = "image-translation",
    pairs: str | Path | None = None,
    examples: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    registries: Registries | None = None,
    **options: Any,
) -> dict[str, Any]:
    """``dnw generate``: a LoRA for ``prompt`` from a fitted generator (a folder, a loaded
    ``DiffusionGenerator``, or None for the shipped pack's for ``task``), every block in one
    batched denoising step. With ``out`` the PEFT adapter is written there; the result holds
    the timing, the state and its description. A generator that reads examples conditions on
    ``pairs`` (a folder of the new concept's examples, read by the task) or ``examples`` (the
    task's data, e.g. ``{"A": ..., "B": ...}``); a prompt-only generator ignores them and
    warns. ``options``: the fields of
    :class:`~denoised_weights.pipeline.options.GenerateOptions`."""
    import dataclasses
    import warnings

    from denoised_weights.generators.diffusion import DiffusionGenerator
    from denoised_weights.pipeline.generate import generate_adapter
    from denoised_weights.pipeline.options import GenerateOptions, split_options
    from denoised_weights.pipeline.pack import default_generator

    (opts,) = split_options("generate", options, GenerateOptions)
    if pairs is not None and examples is not None:
        raise DnwError("give the new concept's examples once: pairs (a folder) or examples")
    if pairs is not None or examples is not None:
        if not isinstance(generator, DiffusionGenerator):
            generator = DiffusionGenerator(
                generator or default_generator(task), registries=registries
            )
        if not generator.reads_examples:
            warnings.warn(
                "this generator reads only the prompt; the examples are not used", stacklevel=2
            )
            pairs = examples = None
        elif pairs is not None:
            examples = load_examples(generator, pairs, task=task, registries=registries)
    return generate_adapter(
        prompt,
        out,
        generator=generator,
        task=task,
        overwrite=overwrite,
        registries=registries,
        **dataclasses.asdict(opts),
        **({"examples": dict(examples)} if examples is not None else {}),
    )


def load_examples(
    generator: Any,
    folder: str | Path,
    *,
    task: str | Task | None = None,
    registries: Registries | None = None,
) -> dict[str, Any]:
    """A user's examples of a new concept (``Task.load_data`` of ``folder``), shaped for the
    network ``generator`` was fitted for."""
    from denoised_weights.core.components import create_architecture
    from denoised_weights.pipeline.context import resolve_task

    info = generator.info
    arch = create_architecture(info["architecture"], registries=registries, **info["config"])
    return resolve_task(task, registries).load_data(folder, arch=arch, split="all")


def _initialiser(
    init: str, t: Task, preset: str | None, generator: Any, data: Any, registries: Any
):
    from denoised_weights.pipeline.finetune import make_initialiser

    if generator is None and init == "generated":
        generator = pack_part(t, "generator", preset)
    return make_initialiser(init, generator=generator, data=data, registries=registries)


def finetune(
    out: str | Path,
    *,
    task: str | Task | None = None,
    task_options: dict[str, Any] | None = None,
    architecture: str | None = None,
    preset: str | None = None,
    arch_options: dict[str, Any] | None = None,
    device: str | None = None,
    overwrite: bool = False,
    registries: Registries | None = None,
    **options: Any,
) -> dict[str, Any]:
    """``dnw finetune``: train one concept (a task ``concept`` or a data folder ``pairs``) from
    scratch or from a base + LoRA init; returns the curve.

    ``options``: the fields of :class:`~denoised_weights.pipeline.options.ConceptData` (concept,
    pairs, eval_pairs, prompt, n_train, n_eval),
    :class:`~denoised_weights.pipeline.options.InitOptions` (init, base, generator, data) and
    :class:`~denoised_weights.pipeline.options.FinetuneOptions`
    (max_steps, eval_every, batch_size, lr, metrics, seed, ...)."""
    from denoised_weights.pipeline.finetune import finetune as run
    from denoised_weights.pipeline.options import (
        ConceptData,
        FinetuneOptions,
        InitOptions,
        split_options,
    )

    what, start, opts = split_options(
        "finetune", options, ConceptData, InitOptions, FinetuneOptions
    )
    t, arch = _setup(task, task_options, architecture, preset, registries, **(arch_options or {}))
    base = start.base
    if base is None and start.init != "scratch":
        base = pack_part(t, "base", preset)
    initialiser = _initialiser(start.init, t, preset, start.generator, start.data, registries)
    train, held, prompt = task_data(
        t,
        arch,
        concept=what.concept,
        pairs=what.pairs,
        eval_pairs=what.eval_pairs,
        prompt=what.prompt,
        n_train=what.n_train,
        n_eval=what.n_eval,
        seed=opts.seed,
    )
    fp = lora_fingerprint(arch) if start.init != "scratch" else None
    return run(
        t,
        arch,
        out,
        train=train,
        eval=held,
        prompt=prompt,
        init=start.init,
        base=base,
        initialiser=initialiser,
        options=opts,
        fingerprint=fp,
        device=device,
        overwrite=overwrite,
        registries=registries,
    )


def task_data(
    t: Task,
    arch: Any,
    *,
    concept: str | None,
    pairs: Any,
    eval_pairs: Any,
    prompt: str | None,
    n_train: int,
    n_eval: int,
    seed: int,
):
    """``(train, eval, prompt)`` from a task concept or a user's data folder."""
    if (concept is None) == (pairs is None):
        raise DnwError("give exactly one of --concept and --pairs")
    if concept is not None:
        c = t.get_concept(concept)
        train = t.make_data(c, arch=arch, split="train", n=n_train, seed=seed)
        held = t.make_data(c, arch=arch, split="eval", n=n_eval, seed=seed + 1)
        return train, held, prompt or c.prompt
    if not prompt:
        raise DnwError("--pairs needs --prompt TEXT: the concept the pairs show")
    if eval_pairs is None:
        return (
            t.load_data(pairs, arch=arch, split="train"),
            t.load_data(pairs, arch=arch, split="eval"),
            prompt,
        )
    return (
        t.load_data(pairs, arch=arch, split="all"),
        t.load_data(eval_pairs, arch=arch, split="all"),
        prompt,
    )


def speed(
    *,
    task: str | Task | None = None,
    task_options: dict[str, Any] | None = None,
    architecture: str | None = None,
    registries: Registries | None = None,
    echo: Any = print,
    **options: Any,
) -> list[dict[str, Any]]:
    """``dnw speed``: the cost of training on this machine (rows of the speed table, one set per
    thread count; ``options``: the fields of
    :class:`~denoised_weights.pipeline.options.SpeedOptions`)."""
    from denoised_weights.pipeline.options import SpeedOptions, split_options
    from denoised_weights.pipeline.speed import measure_speed

    (opts,) = split_options("speed", options, SpeedOptions)
    t, arch = _setup(task, task_options, architecture, opts.preset, registries)
    base = opts.base or pack_part(t, "base", opts.preset)
    if base is None:
        raise DnwError(f"no pretrained base for task {t.name!r} and this preset; pass --base DIR")
    generator = opts.generator or pack_part(t, "generator", opts.preset)
    opts = replace(opts, base=base, generator=generator)
    rows = []
    for n in opts.threads:
        rows += measure_speed(t, arch, opts, threads=n, echo=echo)
    return rows


def compare(
    workdir: str | Path,
    *,
    task: str | Task | None = None,
    task_options: dict[str, Any] | None = None,
    inits: Sequence[str] = COMPARE_INITS,
    architecture: str | None = None,
    preset: str | None = None,
    arch_options: dict[str, Any] | None = None,
    device: str | None = None,
    overwrite: bool = False,
    registries: Registries | None = None,
    progress: Callable[[str], None] | None = None,
    **options: Any,
) -> dict[str, Any]:
    """``dnw compare``: one concept fine-tuned from several ``inits`` with the same data and steps.

    ``options``: the fields of :class:`~denoised_weights.pipeline.options.ConceptData` (a
    ``pairs`` folder's prompt defaults to its name), of
    :class:`~denoised_weights.pipeline.options.InitOptions` but ``init`` (base, generator, data)
    and of :class:`~denoised_weights.pipeline.options.FinetuneOptions`."""
    from denoised_weights.pipeline.compare import compare_inits
    from denoised_weights.pipeline.options import (
        ConceptData,
        FinetuneOptions,
        InitOptions,
        split_options,
    )

    if "init" in options:
        raise TypeError("compare() takes inits=, not init=")
    what, start, opts = split_options("compare", options, ConceptData, InitOptions, FinetuneOptions)
    t, arch = _setup(task, task_options, architecture, preset, registries, **(arch_options or {}))
    pairs = what.pairs
    train, held, prompt = task_data(
        t,
        arch,
        concept=what.concept,
        pairs=pairs,
        eval_pairs=what.eval_pairs,
        prompt=what.prompt or (Path(pairs).name if pairs else None),
        n_train=what.n_train,
        n_eval=what.n_eval,
        seed=opts.seed,
    )
    base = start.base or pack_part(t, "base", preset)
    if base is None:
        raise DnwError("--base DIR is needed (a base model from 'dnw base')")
    initialisers = {
        n: _initialiser(n, t, preset, start.generator, start.data, registries) for n in inits
    }
    label = t.get_concept(what.concept).id if what.concept else str(pairs)
    run_preset = t.presets.get(preset or t.default_preset)  # its target (digits: standard's)
    return compare_inits(
        t,
        arch,
        workdir,
        train=train,
        eval=held,
        label=label,
        prompt=prompt,
        base=base,
        inits=inits,
        initialisers=initialisers,
        options=opts,
        progress=progress,
        target_init=run_preset.target_init if run_preset else "scratch",
        device=device,
        overwrite=overwrite,
        registries=registries,
    )


def benchmark(
    out: str | Path,
    *,
    task: str | Task | None = None,
    task_options: dict[str, Any] | None = None,
    device: str | None = None,
    overwrite: bool = False,
    registries: Registries | None = None,
    echo: Callable[[str], None] = print,
    **options: Any,
) -> dict[str, Any]:
    """``dnw benchmark``: build what is missing, then every init on held-out concepts
    (``options``: the fields of :class:`~denoised_weights.pipeline.options.BenchmarkSpec`)."""
    from denoised_weights.pipeline.benchmark import run_benchmark
    from denoised_weights.pipeline.context import resolve_task
    from denoised_weights.pipeline.options import BenchmarkSpec, split_options

    given = {**options, "out": out, "device": device, "overwrite": overwrite}
    (spec,) = split_options("benchmark", given, BenchmarkSpec)
    t = resolve_task(task, registries, **(task_options or {}))
    return run_benchmark(t, spec, echo=echo, registries=registries)


def demo(
    *,
    task: str | Task | None = None,
    task_options: dict[str, Any] | None = None,
    device: str | None = None,
    registries: Registries | None = None,
    echo: Callable[[str], None] = print,
    **options: Any,
) -> dict[str, Any]:
    """``dnw demo``: a base and a generator (the shipped pack, or built here), then held-out
    concepts fine-tuned from every init, with the headline table and plots (``options``: the
    fields of :class:`~denoised_weights.pipeline.options.DemoOptions`)."""
    from denoised_weights.pipeline.benchmark import BenchmarkSpec, held_out_concepts, run_benchmark
    from denoised_weights.pipeline.context import resolve_task
    from denoised_weights.pipeline.options import DemoOptions, split_options
    from denoised_weights.pretrained import shipped_pack

    (opts,) = split_options("demo", options, DemoOptions)
    from_scratch, preset, workdir = opts.from_scratch, opts.preset, opts.workdir
    t = resolve_task(task, registries, **(task_options or {}))
    pack = None if from_scratch or preset != "demo" else shipped_pack(t.name)
    echo(
        f"using the pretrained pack in {pack} (--from-scratch rebuilds everything)"
        if pack
        else f"building base, weight dataset and generator in {workdir} (resumable)"
    )
    spec = BenchmarkSpec(
        preset=preset,
        out=workdir,
        base=pack / "base" if pack else None,
        generator=pack / "generator" if pack else None,
        concepts=held_out_concepts(t, opts.n_concepts),
        inits=opts.inits,
        max_steps=opts.max_steps,
        seed=opts.seed,
        workers=opts.workers,
        device=device,
    )
    return run_benchmark(t, spec, echo=echo, registries=registries)


def pack(
    base: str | Path,
    generator: str | Path,
    out: str | Path,
    *,
    data: str | Path | None = None,
    results: str | Path | None = None,
    overwrite: bool = False,
    registries: Registries | None = None,
) -> dict[str, Any]:
    """``dnw pack``: a finished base and generator with their provenance, in one folder."""
    from denoised_weights.pipeline.pack import build_pack

    return build_pack(
        base, generator, out, data=data, results=results, overwrite=overwrite, registries=registries
    )


__all__ = [
    "architecture_info",
    "benchmark",
    "bind_blocker",
    "build_lora_model",
    "collect",
    "compare",
    "create_architecture",
    "create_blocker",
    "create_task",
    "demo",
    "finetune",
    "fit",
    "generate",
    "is_architecture",
    "list_architectures",
    "list_components",
    "list_tasks",
    "lora_fingerprint",
    "pack",
    "train_base",
]

"""The pipeline's commands for any task: base, collect, dataset, finetune, compare, benchmark,
demo, pack. Each is a thin wrapper around one call of :mod:`denoised_weights.api`."""

from __future__ import annotations

from pathlib import Path

import click

from denoised_weights.cli import echo_json, registries_of
from denoised_weights.cli.options import (
    NamesOption,
    arch_options,
    common,
    csv,
    dataclass_options,
    existing_dir,
    options_from,
    parse_arch_options,
    parse_task_options,
    positive,
    source_options,
    source_task_options,
    task_options,
)
from denoised_weights.pipeline.options import (
    COMPARE_INITS,
    BaseOptions,
    BenchmarkSpec,
    CollectOptions,
    ConceptData,
    ConceptSelection,
    DemoOptions,
    FinetuneOptions,
    InitOptions,
)

OUT = click.Path(file_okay=False, path_type=Path)
DIR = click.Path(path_type=Path)


@click.command()
@task_options
@source_options()
@arch_options
@click.option("--out", "-o", required=True, type=OUT)
@dataclass_options(ConceptSelection)
@dataclass_options(BaseOptions)
@common
@click.pass_context
def base(
    ctx,
    task,
    task_option,
    photos,
    source,
    model,
    source_option,
    architecture,
    arch_option,
    preset,
    out,
    device,
    overwrite,
    **options,
) -> None:
    """Pretrain the base network on a mixture of training concepts (resumable)."""
    from denoised_weights import api
    from denoised_weights.core.io import read_json

    api.train_base(
        out,
        task=task,
        task_options=_task_options(task_option, photos, source, model, source_option),
        architecture=architecture,
        arch_options=parse_arch_options(arch_option),
        preset=preset,
        **options_from(ConceptSelection, options),
        **options_from(BaseOptions, options),
        device=device,
        overwrite=overwrite,
        registries=registries_of(ctx),
    )
    seconds = read_json(out / "base.json")["train_seconds"]
    click.echo(f"base model in {out} ({seconds:.0f} s of training)")


def _task_options(pairs, photos, source, model, source_option) -> dict:
    return {
        **parse_task_options(pairs, photos),
        **source_task_options(source, model, source_option),
    }


@click.command()
@task_options
@source_options()
@arch_options
@click.option("--base", required=True, type=DIR, help="Base model folder (dnw base).")
@click.option("--out", "-o", required=True, type=OUT, help="Dataset folder.")
@dataclass_options(ConceptSelection)
@click.option(
    "--split",
    type=click.Choice(["train"]),
    default="train",
    show_default=True,
    help="Only training concepts are ever collected.",
)
@dataclass_options(CollectOptions)
@click.option(
    "--shard", default=None, help="Collect only part i of n (i/n), e.g. one machine of several."
)
@click.option(
    "--workers", type=positive(256), default=1, show_default=True, help="Processes on this machine."
)
@common
@click.pass_context
def collect(
    ctx,
    task,
    task_option,
    photos,
    source,
    model,
    source_option,
    architecture,
    arch_option,
    preset,
    base,
    out,
    split,
    shard,
    workers,
    device,
    overwrite,
    **options,
) -> None:
    """Train a LoRA per training concept from the base; keep K checkpoints (resumable,
    shardable)."""
    from denoised_weights import api

    existing_dir("--base", base, "a base model folder made by 'dnw base'")
    dataset = api.collect(
        base,
        out,
        task=task,
        task_options=_task_options(task_option, photos, source, model, source_option),
        architecture=architecture,
        arch_options=parse_arch_options(arch_option),
        preset=preset,
        **options_from(ConceptSelection, options),
        **options_from(CollectOptions, options),
        shard=shard,
        workers=workers,
        device=device,
        overwrite=overwrite,
        registries=registries_of(ctx),
        echo=click.echo,
    )
    info = dataset.info()
    click.echo(f"{info['concepts']} concepts, {info['entries']} entries in {out}")


@click.group()
def dataset() -> None:
    """Inspect weight datasets."""


@dataset.command(name="info")
@click.argument("path", type=DIR)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def dataset_info(path: Path, as_json: bool) -> None:
    """Counts, fingerprint and size of a weight dataset."""
    from denoised_weights.core.dataset import WeightDataset

    info = WeightDataset(path).info()
    if as_json:
        echo_json(info)
        return
    for key, value in info.items():
        click.echo(f"{key}: {value}")


@dataset.command(name="verify")
@click.argument("path", type=DIR)
def dataset_verify(path: Path) -> None:
    """Check every shard is readable and matches the manifest (non-zero exit otherwise)."""
    from denoised_weights.core.dataset import WeightDataset
    from denoised_weights.core.errors import DnwError

    ds = WeightDataset(path)
    problems = ds.verify()
    if problems:
        for p in problems[:20]:
            click.echo(p)
        raise DnwError(
            f"{path}: {len(problems)} problem(s) found; rerun "
            "'dnw collect' on it to collect those concepts again"
        )
    click.echo(f"ok: {len(ds.concepts)} concepts, {len(ds.entries)} entries")


@click.command()
@task_options
@arch_options
@dataclass_options(ConceptData)
@dataclass_options(InitOptions)
@dataclass_options(FinetuneOptions)
@click.option("--out", "-o", required=True, type=OUT)
@common
@click.pass_context
def finetune(
    ctx,
    task,
    task_option,
    photos,
    architecture,
    arch_option,
    preset,
    out,
    device,
    overwrite,
    **options,
) -> None:
    """Train one concept from scratch or from a base + LoRA init (resumable)."""
    from denoised_weights import api
    from denoised_weights.pipeline.finetune import summarise_curve

    regs = registries_of(ctx)
    what, start = options_from(ConceptData, options), options_from(InitOptions, options)
    schedule = options_from(FinetuneOptions, options)
    for name in schedule["metrics"] or ():
        regs.metrics.get(name)  # an unknown metric: a one-line error before any work
    existing_dir("--pairs", what["pairs"], "a folder of training pairs")
    curve = api.finetune(
        out,
        task=task,
        task_options=parse_task_options(task_option, photos),
        architecture=architecture,
        arch_options=parse_arch_options(arch_option),
        preset=preset,
        **what,
        **start,
        **schedule,
        device=device,
        overwrite=overwrite,
        registries=regs,
    )
    click.echo(f"{start['init']}: {summarise_curve(curve, curve['metric'])}; outputs in {out}")


@click.command()
@task_options
@arch_options
@dataclass_options(ConceptData, only=("concept", "pairs", "prompt"))
@dataclass_options(InitOptions, only=("base",))
@click.option(
    "--inits",
    default=",".join(COMPARE_INITS),
    show_default=True,
    cls=NamesOption,
    names_kind="generators",
    extra_names=("scratch", "standard"),
    help="Comma-separated inits.",
)
@dataclass_options(InitOptions, only=("generator", "data"))
@dataclass_options(FinetuneOptions, only=("max_steps", "eval_every", "metrics", "seed"))
@click.option("--workdir", "-o", required=True, type=OUT)
@common
@click.pass_context
def compare(
    ctx,
    task,
    task_option,
    photos,
    architecture,
    arch_option,
    preset,
    inits,
    workdir,
    device,
    overwrite,
    **options,
) -> None:
    """Fine-tune one concept from several inits (same data, steps, evaluation) and tabulate.
    The prompt of a --pairs folder defaults to the folder's name."""
    from denoised_weights import api
    from denoised_weights.pipeline.compare import format_table

    given = {
        **options_from(ConceptData, options),
        **options_from(InitOptions, options),
        **options_from(FinetuneOptions, options),
    }
    result = api.compare(
        workdir,
        task=task,
        task_options=parse_task_options(task_option, photos),
        inits=csv(inits),
        architecture=architecture,
        arch_options=parse_arch_options(arch_option),
        preset=preset,
        **given,
        device=device,
        overwrite=overwrite,
        registries=registries_of(ctx),
    )
    click.echo(format_table([result]))


@click.command()
@task_options
@dataclass_options(BenchmarkSpec, only=("preset",))
@click.option("--out", "-o", required=True, type=OUT)
@dataclass_options(BenchmarkSpec, exclude=("preset",))
@common
@click.pass_context
def benchmark(ctx, task, task_option, photos, out, device, overwrite, **options) -> None:
    """Every init on held-out concepts: speed-ups to scratch's final quality (resumable)."""
    from denoised_weights import api
    from denoised_weights.pipeline.report import headline_table, step0_split_table, step0_table

    given = options_from(BenchmarkSpec, options)
    for option, name in (("--base", "base"), ("--data", "data"), ("--generator", "generator")):
        existing_dir(option, given[name], "a folder made by the matching dnw command")
    results = api.benchmark(
        out,
        task=task,
        task_options=parse_task_options(task_option, photos),
        **given,
        device=device,
        overwrite=overwrite,
        registries=registries_of(ctx),
        echo=click.echo,
    )
    if given["step0_only"]:
        click.echo(step0_table(results["step0"]))
        if results["step0"].get("splits"):
            click.echo(step0_split_table(results["step0"]))
        click.echo(f"per-concept values: {out / 'step0.json'}")
        return
    click.echo(headline_table(results))
    click.echo(f"results.json, report.md, plots/ and grids/ in {out}")


@click.command()
@task_options
@dataclass_options(DemoOptions)
@click.option(
    "--device",
    default="auto",
    show_default=True,
    help="auto (CUDA when present, else CPU), cpu, cuda.",
)
@click.pass_context
def demo(ctx, task, task_option, photos, device, **options) -> None:
    """The main job: a base and a generator (pretrained or built here, resumable), then
    unseen concepts fine-tuned from every init, with the headline table and plots."""
    from denoised_weights import api
    from denoised_weights.pipeline.report import headline_table

    given = options_from(DemoOptions, options)
    workdir = given["workdir"]
    results = api.demo(
        task=task,
        task_options=parse_task_options(task_option, photos),
        **given,
        device=device,
        registries=registries_of(ctx),
        echo=click.echo,
    )
    click.echo(headline_table(results))
    click.echo(
        f"report: {workdir / 'report.md'}; plots: "
        f"{workdir / 'plots'}; pictures: {workdir / 'grids'}"
    )


@click.command()
@click.option("--base", required=True, type=DIR, help="Base model folder (dnw base).")
@click.option("--generator", "-g", required=True, type=DIR, help="Generator folder (dnw fit).")
@click.option(
    "--data", type=DIR, default=None, help="Its weight dataset (figures for the provenance)."
)
@click.option(
    "--results",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="A results.json to quote in the provenance.",
)
@click.option(
    "--out",
    "-o",
    required=True,
    type=OUT,
    help=(
        "Pack folder (never inside the installed package; "
        "'make pack' copies a pack into the source tree)."
    ),
)
@click.option(
    "--overwrite",
    is_flag=True,
    help="Write into an existing --out (replaces only what this command wrote).",
)
@click.pass_context
def pack(ctx, base, generator, data, results, out, overwrite) -> None:
    """Write a pretrained pack (base + generator, at most 20 MiB) with its provenance."""
    from denoised_weights import api

    info = api.pack(
        base,
        generator,
        out,
        data=data,
        results=results,
        overwrite=overwrite,
        registries=registries_of(ctx),
    )
    click.echo(f"pack in {out}: {info['size_bytes'] / 2**20:.1f} MiB, commit {info['commit']}")


def add_commands(cli: click.Group) -> None:
    cli.add_command(base)
    cli.add_command(collect)
    cli.add_command(dataset)
    cli.add_command(finetune)
    cli.add_command(compare)
    cli.add_command(benchmark)
    cli.add_command(demo)
    cli.add_command(pack)

"""``dnw fit`` and ``dnw generate``: the diffusion weight generator."""

from __future__ import annotations

from pathlib import Path

import click

from denoised_weights.cli import echo_json, registries_of
from denoised_weights.cli.options import (
    common,
    dataclass_options,
    existing_dir,
    options_from,
    parse_task_options,
    task_options,
)
from denoised_weights.pipeline.options import (
    FitConfig,
    GenerateOptions,
    SpeedOptions,
    thread_counts,
)


@click.command()
@click.option(
    "--data", required=True, type=click.Path(path_type=Path), help="Weight dataset (dnw collect)."
)
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False, path_type=Path))
@dataclass_options(FitConfig)
@common
@click.pass_context
def fit(ctx, data: Path, out: Path, device: str, overwrite: bool, **options) -> None:
    """Train the text-conditioned block diffusion model on a weight dataset (resumable,
    torchrun)."""
    from denoised_weights import api
    from denoised_weights.core.io import read_json

    existing_dir("--data", data, "a weight dataset folder made by 'dnw collect'")
    api.fit(
        data,
        out,
        **options_from(FitConfig, options),
        device=device,
        overwrite=overwrite,
        registries=registries_of(ctx),
    )
    if (out / "generator.json").is_file():
        info = read_json(out / "generator.json")
        last = read_json(out / "val_loss.json")[-1]
        figures = [
            f"validation loss {last['val_loss']:.4f}" if last.get("val_loss") is not None else "",
            f"one-step cosine to held-out checkpoints {last['val_cos']:.3f}"
            if last.get("val_cos") is not None
            else "",
            f"task loss of generated LoRAs {last['val_task']:.4f}"
            if last.get("val_task") is not None
            else "",
        ]
        click.echo(
            f"generator in {out}: {info['steps']} steps in {info['train_seconds']:.0f} s, "
            + ", ".join(f for f in figures if f)
        )


@click.command()
@click.option(
    "--generator",
    "-g",
    default=None,
    type=click.Path(path_type=Path),
    help="Folder made by dnw fit (default: the pretrained pack's).",
)
@click.option(
    "--task",
    default="image-translation",
    show_default=True,
    help="Whose pretrained pack to use without --generator.",
)
@click.option(
    "--prompt",
    default=None,
    help="The new concept's text (optional with --pairs for a generator that reads examples).",
)
@click.option(
    "--pairs",
    type=click.Path(path_type=Path),
    default=None,
    help=(
        "Examples of the new concept (image translation: a "
        "pix2pix folder) for a generator that reads examples."
    ),
)
@click.option(
    "--out",
    "-o",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Adapter folder to write.",
)
@dataclass_options(GenerateOptions)
@click.option(
    "--warmup/--no-warmup",
    default=True,
    show_default=True,
    help="Run the whole generation once first, untimed, into a scratch folder (lazy "
    "imports, kernel and tokenizer set-up), as a long-running service would; its time "
    "is reported as first_call_seconds.",
)
@click.option(
    "--overwrite",
    is_flag=True,
    help="Write into an existing --out (replaces only the adapter files).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def generate(
    ctx, generator, task, prompt, pairs, out, warmup, overwrite, as_json, **options
) -> None:
    """Generate a PEFT LoRA adapter for PROMPT: every block in one batched denoising step."""
    import tempfile

    from denoised_weights.generators.diffusion import DiffusionGenerator
    from denoised_weights.pipeline.generate import generate_adapter
    from denoised_weights.pipeline.pack import default_generator

    if prompt is not None and not prompt.strip():
        raise click.BadParameter(
            "the prompt is empty; say what the new concept is", param_hint="--prompt"
        )
    existing_dir("--generator", generator, "a generator folder made by 'dnw fit'")
    gen = DiffusionGenerator(generator or default_generator(task), registries=registries_of(ctx))
    if prompt is None:
        if pairs is None or not gen.reads_examples:
            raise click.BadParameter(
                "say what the new concept is"
                + ("" if pairs is None else " (this generator reads only the prompt)"),
                param_hint="--prompt",
            )
        prompt = ""  # the examples alone
    options = options_from(GenerateOptions, options)
    if pairs is not None:
        if not gen.reads_examples:
            click.echo("note: this generator reads only the prompt; --pairs is not used", err=True)
        else:
            from denoised_weights import api

            existing_dir("--pairs", pairs, "a folder of the new concept's examples")
            options["examples"] = api.load_examples(
                gen, pairs, task=task, registries=registries_of(ctx)
            )
    elif gen.reads_examples and gen.conditioner.mode == "both":
        click.echo("note: no --pairs: the generator reads the prompt alone", err=True)
    first = None
    if warmup:  # the whole path once, written to a scratch folder
        with tempfile.TemporaryDirectory() as tmp:
            first = generate_adapter(prompt, Path(tmp) / "warmup", generator=gen, **options)[
                "generation_seconds"
            ]
    result = generate_adapter(prompt, out, generator=gen, overwrite=overwrite, **options)
    result.pop("state")
    result["first_call_seconds"] = first
    if result["prompt_tokens_used"] < result["prompt_tokens"]:
        click.echo(
            f"warning: the prompt has {result['prompt_tokens']:,} tokens; the text encoder reads "
            f"only the first {result['prompt_tokens_used']} ({short(prompt)})",
            err=True,
        )
    if as_json:
        echo_json(result)
    else:
        click.echo(
            f"adapter for {short(prompt) if prompt else f'the examples in {pairs}'} in {out} "
            f"({result['n_blocks']} "
            f"blocks, {result['generation_seconds']:.3f} s)"
        )


def short(text: str, limit: int = 60) -> str:
    """A prompt as shown in messages: quoted, cut to ``limit`` characters."""
    return repr(text) if len(text) <= limit else repr(text[: limit - 3] + "...")


@click.command()
@task_options
@dataclass_options(SpeedOptions)
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON.")
@click.pass_context
def speed(ctx, task, task_option, photos, as_json, **options) -> None:
    """What training costs on this machine: matmul rate, full vs LoRA steps (peft's and the
    engine's), task-loss fit, generation and collection, as ratios measured in one run."""
    from denoised_weights import api

    given = options_from(SpeedOptions, options)
    try:
        given["threads"] = thread_counts(given["threads"])
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--threads") from None
    existing_dir("--base", given["base"], "a base model folder made by 'dnw base'")
    existing_dir("--generator", given["generator"], "a generator folder made by 'dnw fit'")
    rows = api.speed(
        task=task,
        task_options=parse_task_options(task_option, photos),
        **given,
        registries=registries_of(ctx),
        echo=lambda m: click.echo(m, err=True),
    )
    if as_json:
        echo_json(rows)
    else:
        from denoised_weights.pipeline.speed import format_table

        click.echo(format_table(rows))


def add_commands(cli: click.Group) -> None:
    cli.add_command(fit)
    cli.add_command(generate)
    cli.add_command(speed)

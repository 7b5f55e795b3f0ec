"""``dnw fit`` and ``dnw generate``: the diffusion weight generator."""

from __future__ import annotations

from pathlib import Path

import click


def add_commands(cli: click.Group) -> None:
    from denoised_weights.cli import echo_json

    @cli.command()
    @click.option(
        "--data",
        required=True,
        type=click.Path(path_type=Path),
        help="Weight dataset (dnw collect).",
    )
    @click.option("--out", "-o", required=True, type=click.Path(file_okay=False, path_type=Path))
    @click.option(
        "--preset", "-p", default=None, help="Model size preset (default: the dataset's)."
    )
    @click.option(
        "--text-encoder", default="minilm", show_default=True, help="Registered text encoder."
    )
    @click.option("--text-encoder-path", default=None, help="Local model folder (for clip).")
    @click.option(
        "--block-size",
        type=click.IntRange(min=1),
        default=None,
        help="Values per block (preset default).",
    )
    @click.option("--batch-size", type=click.IntRange(min=1), default=256, show_default=True)
    @click.option(
        "--lr", type=click.FloatRange(min=0, min_open=True), default=1e-3, show_default=True
    )
    @click.option(
        "--max-steps",
        type=click.IntRange(min=1),
        default=None,
        help="Training steps (preset default: tiny 500, small 7500 (~27 min on 2 cores), paper 20000).",
    )
    @click.option(
        "--max-minutes",
        type=click.FloatRange(min=0, min_open=True),
        default=None,
        help="Stop after this long.",
    )
    @click.option("--val-every", type=click.IntRange(min=1), default=250, show_default=True)
    @click.option(
        "--prediction",
        type=click.Choice(["epsilon", "sample", "v_prediction"]),
        default="epsilon",
        show_default=True,
    )
    @click.option(
        "--center/--no-center",
        default=True,
        show_default=True,
        help="Model each block's deviation from the dataset mean, scaled per layer group.",
    )
    @click.option(
        "--noisy-share",
        type=click.FloatRange(0, 1),
        default=None,
        help="Share of each batch at the noisiest 10% of timesteps (default: 0.5 for sample/v, 0 for epsilon).",
    )
    @click.option(
        "--lr-schedule",
        type=click.Choice(["cosine", "linear", "constant", "constant_with_warmup"]),
        default="constant",
        show_default=True,
        help="diffusers learning-rate schedule over --max-steps (small preset, 2,000 steps: "
        "cosine decay reached a one-step cosine of 0.21 where constant reached 0.32).",
    )
    @click.option(
        "--warmup-steps",
        type=click.IntRange(min=0),
        default=100,
        show_default=True,
        help="Linear warm-up of the cosine, linear and constant_with_warmup schedules.",
    )
    @click.option("--seed", type=int, default=0, show_default=True)
    def fit(
        data: Path, out: Path, preset: str | None, text_encoder: str, text_encoder_path: str | None,
        block_size: int | None, batch_size: int, lr: float, max_steps: int | None, max_minutes: float | None,
        val_every: int, prediction: str, center: bool, noisy_share: float | None, lr_schedule: str,
        warmup_steps: int, seed: int,
    ) -> None:  # fmt: skip
        """Train the text-conditioned block diffusion model on a weight dataset (resumable, torchrun)."""
        from denoised_weights.core.io import read_json
        from denoised_weights.core.plugins import default_registries
        from denoised_weights.generators.diffusion import fit as run_fit

        default_registries().text_encoders.get(
            text_encoder
        )  # an unknown name fails before any work
        run_fit(
            data, out, text_encoder=text_encoder, text_encoder_path=text_encoder_path, preset=preset,
            block_size=block_size, batch_size=batch_size, lr=lr, max_steps=max_steps, max_minutes=max_minutes,
            val_every=val_every, prediction_type=prediction, seed=seed, center=center, noisy_share=noisy_share,
            lr_schedule=lr_schedule, warmup_steps=warmup_steps,
        )  # fmt: skip
        if (out / "generator.json").is_file():
            info = read_json(out / "generator.json")
            last = read_json(out / "val_loss.json")[-1]
            click.echo(
                f"generator in {out}: {info['steps']} steps in {info['train_seconds']:.0f} s, "
                f"validation loss {last['val_loss']:.4f}, one-step cosine to held-out "
                f"checkpoints {last.get('val_cos', float('nan')):.3f}"
            )

    @cli.command()
    @click.option(
        "--generator",
        "-g",
        default=None,
        type=click.Path(path_type=Path),
        help="Folder made by dnw fit (default: the pretrained pack's).",
    )
    @click.option("--prompt", required=True, help="The new concept's text.")
    @click.option(
        "--out",
        "-o",
        required=True,
        type=click.Path(file_okay=False, path_type=Path),
        help="Adapter folder to write.",
    )
    @click.option(
        "--steps",
        type=click.IntRange(min=1),
        default=1,
        show_default=True,
        help="1: one-step; more: DDIM (trailing).",
    )
    @click.option(
        "--timestep",
        type=int,
        default=None,
        help="Noise-biased timestep of the one-step path (generator default).",
    )
    @click.option(
        "--start",
        type=click.Choice(["mean", "noise"]),
        default=None,
        help="One-step starting point.",
    )
    @click.option(
        "--guidance",
        type=click.FloatRange(0, 10, min_open=True),
        default=None,
        help="Extrapolate away from the dataset mean: mean + G·(generated − mean) "
        "(generator default, else 1; the README measures G).",
    )
    @click.option("--seed", type=int, default=0, show_default=True)
    @click.option(
        "--warmup/--no-warmup",
        default=True,
        show_default=True,
        help="Run the whole generation once first, untimed, into a scratch folder (lazy "
        "imports, kernel and tokenizer set-up), as a long-running service would; its time "
        "is reported as first_call_seconds.",
    )
    @click.option("--json", "as_json", is_flag=True, help="Print JSON.")
    def generate(
        generator: Path | None,
        prompt: str,
        out: Path,
        steps: int,
        timestep: int | None,
        start: str | None,
        guidance: float | None,
        seed: int,
        warmup: bool,
        as_json: bool,
    ) -> None:
        """Generate a PEFT LoRA adapter for PROMPT: every block in one batched denoising step."""
        import tempfile

        from denoised_weights.generators.diffusion import DiffusionGenerator, timed_generate
        from denoised_weights.pretrained import default_generator

        gen = DiffusionGenerator(generator or default_generator())
        options = dict(seed=seed, steps=steps, timestep=timestep, start=start, guidance=guidance)
        first = None
        if warmup:  # the whole path once, written to a scratch folder
            with tempfile.TemporaryDirectory() as tmp:
                first = timed_generate(gen, prompt, Path(tmp) / "warmup", **options)[
                    "generation_seconds"
                ]
        result = timed_generate(gen, prompt, out, **options)
        result["first_call_seconds"] = first
        if as_json:
            echo_json(result)
        else:
            click.echo(
                f"adapter for {prompt!r} in {out} ({result['n_blocks']} blocks, {result['generation_seconds']:.3f} s)"
            )

"""``dnw`` commands of the image-translation plugin: ``pairs``, ``translate``, ``export`` and
``serve``. Each is a thin wrapper around one Python call of the plugin (heavy imports inside)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click


def _registries(ctx: click.Context) -> Any:
    obj = ctx.find_root().obj
    return obj.get("registries") if isinstance(obj, dict) else None


def add_commands(cli: click.Group) -> None:
    from denoised_weights.cli.options import json_values, source_options
    from denoised_weights.plugins.image_translation.sources import DEFAULT_SOURCE

    @cli.command()
    @source_options(DEFAULT_SOURCE)
    @click.option(
        "--concept",
        "-c",
        default=None,
        help="Catalogue concept id or one of its prompts (--source catalogue).",
    )
    @click.option(
        "--prompt", default=None, help="The edit instruction (--source instruct-pix2pix)."
    )
    @click.option(
        "--out",
        "-o",
        required=True,
        type=click.Path(file_okay=False, path_type=Path),
        help="Output folder (A/ and B/).",
    )
    @click.option(
        "-n",
        "count",
        type=click.IntRange(min=1, max=100_000),
        default=64,
        show_default=True,
        help="Number of pairs.",
    )
    @click.option(
        "--split",
        type=click.Choice(["train", "eval"]),
        default="train",
        show_default=True,
        help="Photos to crop from.",
    )
    @click.option(
        "--size",
        type=click.IntRange(min=8, max=2048),
        default=64,
        show_default=True,
        help="Square image size.",
    )
    @click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=0, show_default=True)
    @click.option(
        "--photos",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="Your own photo folder.",
    )
    @click.option(
        "--device",
        default=None,
        help="Where a model-based source runs: cpu, cuda, cuda:N (default: CUDA when present).",
    )
    @click.option(
        "--overwrite",
        is_flag=True,
        help="Write into an existing --out (replaces only files this command wrote).",
    )
    @click.pass_context
    def pairs(
        ctx,
        source: str,
        concept: str | None,
        prompt: str | None,
        model: Path | None,
        out: Path,
        count: int,
        split: str,
        size: int,
        seed: int,
        photos: Path | None,
        device: str | None,
        source_option: tuple[str, ...],
        overwrite: bool,
    ) -> None:
        """Write N (photo, edited photo) pairs in the pix2pix A/B layout, made by a pair source:
        a catalogue concept's edit (default) or any registered source, e.g. instruct-pix2pix
        from a local model folder."""
        from denoised_weights.core.errors import DnwError
        from denoised_weights.core.outputs import claim_output
        from denoised_weights.plugins.image_translation.pairs import write_pairs
        from denoised_weights.plugins.image_translation.sources import make_pair_source

        if model is not None and not model.is_dir():
            raise DnwError(f"--model {model} is no such folder; give a local model folder")
        if photos is not None and not photos.is_dir():
            raise DnwError(f"--photos {photos} is no such folder; give a folder of photos")
        given = {
            "concept": concept,
            "prompt": prompt,
            "model_dir": model,
            "size": size,
            "photos_dir": photos,
            "device": device,
        }
        src, used = make_pair_source(
            source, given, json_values(source_option, "--source-option"), _registries(ctx)
        )
        if source == DEFAULT_SOURCE and not source_option:  # today's record, so old folders resume
            info = {
                "concept": src.concept.id,
                "prompts": list(src.prompts),
                "split": split,
                "seed": seed,
                "size": size,
                "count": count,
                "photos": str(photos) if photos else None,
            }
        else:
            options = {k: str(v) if isinstance(v, Path) else v for k, v in used.items()}
            prompts = list(getattr(src, "prompts", None) or ([prompt] if prompt else []))
            info = {
                "source": source,
                "options": options,
                "prompts": prompts,
                "split": split,
                "seed": seed,
                "size": size,
                "count": count,
            }
        claim_output(
            out, "pairs", info, overwrite=overwrite, owned=("A", "B", "pairs.json"), seed=seed
        )
        a, b = src.pairs(count, split=split, seed=seed)
        write_pairs(out, a, b, info)
        what = (
            src.concept.id
            if source == DEFAULT_SOURCE
            else f"{source} ({prompt or ''})".replace(" ()", "")
        )
        click.echo(f"wrote {count} pairs of {what} to {out}")

    add_translate(cli)
    add_export(cli)
    add_serve(cli)


def add_translate(cli: click.Group) -> None:
    from denoised_weights.cli.options import dataclass_options, options_from
    from denoised_weights.plugins.image_translation.options import TranslateOptions, TranslatorSpec

    @cli.command()
    @click.argument("inputs", nargs=-1, type=click.Path(path_type=Path))
    @click.option(
        "--out",
        "-o",
        required=True,
        type=click.Path(file_okay=False, path_type=Path),
        help="Output folder (PNGs, one per input, same size; never an input folder).",
    )
    @dataclass_options(TranslatorSpec, exclude=("seed",))
    @dataclass_options(TranslateOptions)
    @dataclass_options(TranslatorSpec, only=("seed",))
    @click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N.")
    @click.option(
        "--overwrite",
        is_flag=True,
        help="Write into an existing --out (replaces only what this command wrote there).",
    )
    @click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
    @click.pass_context
    def translate(ctx, inputs, out, device, overwrite, as_json, **options) -> None:
        """Translate image files or folders (INPUT...) with base + adapter; each output the size of
        its input.

        Unreadable files are named and skipped; the exit status is 1 when any was skipped."""
        import json

        from tqdm.auto import tqdm

        from denoised_weights.plugins.image_translation.translate import translate

        summary = translate(
            list(inputs),
            out,
            **options_from(TranslatorSpec, options),
            **options_from(TranslateOptions, options),
            device=None if device == "auto" else device,
            overwrite=overwrite,
            registries=_registries(ctx),
            echo=lambda line: tqdm.write(line, file=sys.stderr),
        )
        skipped = len(summary["skipped"])
        if as_json:
            click.echo(json.dumps({k: v for k, v in summary.items() if k != "images"}, indent=2))
        click.echo(
            f"translated {summary['translated']} of {summary['total']} images into {out} "
            f"in {summary['seconds']:.1f} s"
            + (f"; skipped {skipped} unreadable (named above)" if skipped else ""),
            err=as_json,
        )
        if skipped:
            ctx.exit(1)


def add_export(cli: click.Group) -> None:
    from denoised_weights.cli.options import dataclass_options, options_from
    from denoised_weights.plugins.image_translation.options import ExportOptions

    @cli.command(name="export")
    @click.option(
        "--out",
        "-o",
        required=True,
        type=click.Path(path_type=Path),
        help="FILE.onnx / FILE.safetensors, or a folder (gets model.onnx / model.safetensors).",
    )
    @dataclass_options(ExportOptions)
    @click.option(
        "--overwrite",
        is_flag=True,
        help=(
            "Replace an existing --out file (a folder --out: "
            "replace only what this command wrote there)."
        ),
    )
    @click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
    @click.pass_context
    def export_command(ctx, out, overwrite, as_json, **options) -> None:
        """Merge the adapter into the base (peft) and write ONNX (checked with onnxruntime) or
        safetensors."""
        import json

        from denoised_weights.plugins.image_translation.export import export

        report = export(
            out,
            **options_from(ExportOptions, options),
            overwrite=overwrite,
            registries=_registries(ctx),
            echo=lambda line: click.echo(line, err=True),
        )
        if as_json:
            click.echo(json.dumps(report, indent=2))
            return
        fmt = report["format"]
        line = f"{report['file']}: {report['megabytes']:.2f} MiB, {fmt}"
        if fmt == "onnx":
            dyn = ", ".join(report["dynamic"]) or f"fixed {report['fixed_shape']}"
            line += (
                f" ({dyn} dynamic); onnxruntime vs PyTorch on {report['check_images']} photos: "
                f"max abs diff {report['max_abs_diff']:.2e}; onnxruntime "
                f"{report['onnxruntime_ms_per_image']:.1f} ms "
                f"per {report['latency_image']} image ({report['latency_threads']} thread)"
            )
        else:
            line += f"; reloaded: max abs diff {report['reload_max_abs_diff']:.1e}"
        click.echo(line)


def add_serve(cli: click.Group) -> None:
    @cli.command()
    @click.option(
        "--host",
        default="127.0.0.1",
        show_default=True,
        help="Address to bind (only this machine by default).",
    )
    @click.option("--port", type=click.IntRange(0, 65535), default=7860, show_default=True)
    @click.option(
        "--workdir",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="Where each browser session's runs go (default: a temporary folder).",
    )
    @click.option(
        "--base",
        type=click.Path(path_type=Path),
        default=None,
        help="Base model folder (default: the pretrained pack's).",
    )
    @click.option(
        "--generator",
        "-g",
        type=click.Path(path_type=Path),
        default=None,
        help="Generator folder (default: the pack's).",
    )
    @click.option(
        "--photos",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="Your photo folder for the picker (default: the bundled photos).",
    )
    @click.pass_context
    def serve(ctx, host, port, workdir, base, generator, photos) -> None:
        """A local web app: type a concept, see the generated translator on a photo, fine-tune it,
        download it.

        Needs the app extra: pip install 'denoised-weights[app]'."""
        from denoised_weights.plugins.image_translation.serve import serve as run

        run(
            host=host,
            port=port,
            workdir=workdir,
            base=base,
            generator=generator,
            photos=photos,
            registries=_registries(ctx),
            echo=click.echo,
        )

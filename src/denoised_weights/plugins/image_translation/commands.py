"""``dnw`` commands of the image-translation plugin: ``pairs``."""

from __future__ import annotations

from pathlib import Path

import click


def add_commands(cli: click.Group) -> None:
    @cli.command()
    @click.option(
        "--concept", "-c", required=True, help="Catalogue concept id or one of its prompts."
    )
    @click.option("--out", "-o", required=True, type=click.Path(file_okay=False, path_type=Path), help="Output folder (A/ and B/).")  # fmt: skip
    @click.option("-n", "count", type=click.IntRange(min=1, max=100_000), default=64, show_default=True, help="Number of pairs.")  # fmt: skip
    @click.option("--split", type=click.Choice(["train", "eval"]), default="train", show_default=True, help="Photos to crop from.")  # fmt: skip
    @click.option("--size", type=click.IntRange(min=8, max=2048), default=64, show_default=True, help="Square image size.")  # fmt: skip
    @click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=0, show_default=True)
    @click.option("--photos", type=click.Path(file_okay=False, path_type=Path), default=None, help="Your own photo folder.")  # fmt: skip
    @click.option("--overwrite", is_flag=True, help="Write into an existing --out (replaces only files this command wrote).")  # fmt: skip
    def pairs(concept: str, out: Path, count: int, split: str, size: int, seed: int, photos: Path | None, overwrite: bool) -> None:  # fmt: skip
        """Write N (photo, edited photo) pairs of a catalogue concept in the pix2pix A/B layout."""
        from denoised_weights.core.outputs import claim_output
        from denoised_weights.plugins.image_translation.pairs import CataloguePairs, write_pairs

        source = CataloguePairs(concept, size, photos)
        info = {"concept": source.concept.id, "prompts": list(source.prompts), "split": split,
                "seed": seed, "size": size, "count": count, "photos": str(photos) if photos else None}  # fmt: skip
        claim_output(
            out, "pairs", info, overwrite=overwrite, owned=("A", "B", "pairs.json"), seed=seed
        )
        a, b = source.pairs(count, split=split, seed=seed)
        write_pairs(out, a, b, info)
        click.echo(f"wrote {count} pairs of {source.concept.id} to {out}")

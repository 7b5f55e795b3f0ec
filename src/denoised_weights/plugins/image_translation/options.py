"""The options of the plugin's commands ``dnw translate`` and ``dnw export``: one dataclass each
(with :func:`denoised_weights.core.config.field`), the one place where an option's default, help
and bounds are written. The commands' options are made from these fields
(:func:`denoised_weights.cli.options.dataclass_options`) and the Python calls
(:func:`~denoised_weights.plugins.image_translation.translate.translate`,
:func:`~denoised_weights.plugins.image_translation.export.export`) take them as keywords.
Import-light (no torch): the command line is built from it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from denoised_weights.core.config import check_fields, field
from denoised_weights.core.errors import DnwError
from denoised_weights.pipeline.context import MAX_SEED, check_seed

#: E2GAN downsamples twice by 2: inputs must be multiples of this
MULTIPLE = 4
DEFAULT_TILE = 256
DEFAULT_OVERLAP = 32
DEFAULT_MAX_FULL_PIXELS = 512 * 512
#: the shorter side at which the network sees a photo by default (the scale it learned)
MODEL_SCALE = 128
#: what ``dnw export`` writes, and with which ``torch.onnx.export`` exporter
FORMATS = ("onnx", "safetensors")
EXPORTERS = ("dynamo", "torchscript")
#: side of ``dnw export``'s check crops (and of its latency figure)
CHECK_SIZE = 256


@dataclass
class TranslatorSpec:
    """Which translator ``dnw translate`` runs: a base with an adapter folder, or with an adapter
    generated from a prompt first."""

    adapter: Path | None = field(
        None,
        help="PEFT adapter folder (dnw finetune's adapter/, or dnw generate's output)",
        path="any",
    )
    prompt: str | None = field(
        None, help="or a concept prompt: generate the adapter first (into OUT/adapter)"
    )
    base: Path | None = field(
        None, help="base model folder (default: the pretrained pack's)", path="any"
    )
    generator: Path | None = field(
        None,
        help="generator for --prompt (default: the pack's)",
        flags=("--generator", "-g"),
        path="any",
    )
    seed: int = field(0, help="seed of the generated adapter (--prompt)", low=0, high=MAX_SEED)

    def __post_init__(self) -> None:
        check_seed(self.seed)
        check_fields(self)


@dataclass
class TranslateOptions:
    """How images go through the network (see
    :mod:`~denoised_weights.plugins.image_translation.translate` for the measurements)."""

    #: a number of pixels or "native" (a number's text is read as the number)
    resolution: str | int = field(
        str(MODEL_SCALE),
        help=(
            "shorter side the network sees (the model's scale; the change is carried back to "
            "full size), or 'native' to run at the file's own resolution"
        ),
    )
    tile: int = field(
        DEFAULT_TILE, help="tile side for images too large to run whole", low=16, high=4096
    )
    overlap: int = field(
        DEFAULT_OVERLAP, help="pixels shared by neighbouring tiles (blended)", low=0, high=2048
    )
    max_full_pixels: int = field(
        DEFAULT_MAX_FULL_PIXELS,
        help="run images up to this many pixels whole, tile larger ones",
        low=0,
    )
    batch_size: int = field(4, help="images (or tiles) per forward pass", low=1, cli=False)

    def __post_init__(self) -> None:
        if isinstance(self.resolution, str) and self.resolution != "native":
            try:
                self.resolution = int(self.resolution)
            except ValueError:
                raise DnwError(
                    f"--resolution must be 'native' or a number of pixels, got {self.resolution!r}"
                ) from None
        if isinstance(self.resolution, int) and self.resolution < MULTIPLE * 4:
            raise DnwError(f"--resolution must be at least {MULTIPLE * 4} pixels")
        if self.tile < MULTIPLE * 4 or self.tile % MULTIPLE:
            raise DnwError(f"--tile must be a multiple of {MULTIPLE} of at least {MULTIPLE * 4}")
        if not 0 <= self.overlap <= self.tile // 2:
            raise DnwError(f"--overlap must be from 0 to half the tile ({self.tile // 2})")
        if self.max_full_pixels < 0 or self.batch_size < 1:
            raise DnwError("--max-full-pixels must be >= 0 and the batch size >= 1")
        check_fields(self)

    def to_dict(self) -> dict[str, Any]:
        return {
            "resolution": self.resolution,
            "tile": self.tile,
            "overlap": self.overlap,
            "max_full_pixels": self.max_full_pixels,
        }


@dataclass
class ExportOptions:
    """What ``dnw export`` writes (base + adapter merged, as which file) and how it checks it
    (the output path is given beside these)."""

    adapter: Path = field(help="PEFT adapter folder to merge into the base", path="any")
    base: Path | None = field(
        None, help="base model folder (default: the pretrained pack's)", path="any"
    )
    format: str | None = field(
        None, help="default: from the --out suffix, else onnx", choices=FORMATS
    )
    exporter: str = field(
        "dynamo",
        help="exporter of torch.onnx.export (dynamo: torch.export-based)",
        choices=EXPORTERS,
    )
    check_photos: Path | None = field(
        None, help="photos to check the export on (default: the bundled photos)", path="dir"
    )
    n_check: int = field(
        16,
        help="crops of --check-size compared with PyTorch",
        flags=("--check-images",),
        low=1,
        high=1024,
    )
    check_size: int = field(
        CHECK_SIZE, help="side of the check crops (and of the latency figure)", low=16, high=4096
    )
    threads: int = field(1, help="threads of onnxruntime for the latency figure", low=1, high=256)
    plain_merge: bool = field(
        False,
        help=(
            "ONNX: peft's merge as it is (its reflect-padded "
            "convs then differ from the adapter at the border)"
        ),
    )

    def __post_init__(self) -> None:
        check_fields(self)

    def format_for(self, out: str | Path) -> str:
        """The format written to ``out``: ``format``, else ``out``'s suffix, else onnx."""
        if self.format is not None:
            return self.format
        return "safetensors" if Path(out).suffix.lower() == ".safetensors" else "onnx"


__all__ = ["ExportOptions", "TranslateOptions", "TranslatorSpec"]

"""The pretrained pack: a base model and a fitted generator of the small preset, shipped inside
the package so that ``dnw generate`` and ``dnw demo`` work without training anything.

Layout of a pack folder::

    base/           generator.safetensors, discriminator.safetensors, base.json, run.json
    generator/      the dnw fit folder (model/, scheduler/, blocker.json, mean_blocks, ...)
    provenance.json commit, preset, seeds, versions and the measured figures of the build

``dnw pack --base DIR --generator DIR --out DIR`` writes one; ``make pack`` rebuilds the
shipped one from nothing (base, collection, fit), see the README.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

from denoised_weights.core.errors import DnwError
from denoised_weights.core.io import atomic_dir, read_json, write_json

#: the pack that ships with the package (present in source checkouts and wheels)
SHIPPED = Path(__file__).parent / "small"
MAX_PACK_BYTES = 20 * 1024 * 1024
_BASE_FILES = ("generator.safetensors", "discriminator.safetensors", "base.json", "run.json")
_GENERATOR_SKIP = {"checkpoint"}


def shipped_pack() -> Path | None:
    """The shipped pack's folder, or None when this installation has none."""
    ok = (SHIPPED / "provenance.json").is_file()
    return SHIPPED if ok else None


def default_generator() -> Path:
    """The shipped generator (for ``dnw generate`` without ``--generator``)."""
    pack = shipped_pack()
    if pack is None:
        raise DnwError(
            "no --generator given and this installation has no pretrained pack; "
            "fit one with 'dnw fit' and pass --generator DIR"
        )
    return pack / "generator"


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).parent,
            timeout=10,
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def build_pack(
    base: str | Path,
    generator: str | Path,
    out: str | Path,
    *,
    data: str | Path | None = None,
    results: str | Path | None = None,
) -> dict[str, Any]:
    """Copy a finished base and generator into a pack folder with their provenance."""
    from denoised_weights.core.dataset import WeightDataset
    from denoised_weights.generators.diffusion import GENERATOR_CONFIG
    from denoised_weights.plugins.image_translation.training import BASE_CONFIG

    base, generator, out = Path(base), Path(generator), Path(out)
    if not (base / BASE_CONFIG).is_file():
        raise DnwError(f"{base}: not a finished base model (no {BASE_CONFIG}); run 'dnw base'")
    if not (generator / GENERATOR_CONFIG).is_file():
        raise DnwError(
            f"{generator}: not a finished generator (no {GENERATOR_CONFIG}); run 'dnw fit'"
        )
    base_info, gen_info = read_json(base / BASE_CONFIG), read_json(generator / GENERATOR_CONFIG)
    if gen_info["architecture"] != base_info["architecture"]:
        raise DnwError(f"{generator} and {base} are for different architectures")
    from denoised_weights.api import create_architecture
    from denoised_weights.plugins.image_translation.training import load_base

    load_base(base, create_architecture(gen_info["architecture"], **gen_info["config"]))
    history = read_json(generator / "val_loss.json")
    provenance: dict[str, Any] = {
        "commit": _git_commit(),
        "architecture": gen_info["architecture"],
        "preset": gen_info.get("preset"),
        "lora_fingerprint": gen_info["lora_fingerprint"],
        "base": {
            "seed": base_info.get("seed"),
            "steps": base_info.get("steps"),
            "train_seconds": base_info.get("train_seconds"),
        },
        "generator": {
            "seed": read_json(generator / "run.json").get("seed"),
            "steps": gen_info["steps"],
            "train_seconds": gen_info["train_seconds"],
            "text_encoder": gen_info["text_encoder"],
            "final_val_loss": history[-1]["val_loss"],
            "centered": gen_info.get("centered", False),
            "default_timestep": gen_info.get("default_timestep"),
            "default_start": gen_info.get("default_start"),
        },
        "versions": read_json(generator / "run.json").get("versions"),
        "rebuild": "make pack (base, collection of every single-edit training concept, fit for the recorded steps, dnw pack)",
    }  # fmt: skip
    if data is not None:
        provenance["dataset"] = WeightDataset(data).info()
    if results is not None:
        provenance["benchmark_summary"] = read_json(results).get("summary")
    with atomic_dir(out) as tmp:
        (tmp / "base").mkdir()
        for name in _BASE_FILES:
            if (base / name).is_file():
                shutil.copy2(base / name, tmp / "base" / name)
        shutil.copytree(
            generator, tmp / "generator", ignore=lambda _d, names: [n for n in names if n in _GENERATOR_SKIP]
        )  # fmt: skip
        size = _folder_bytes(tmp)
        if size > MAX_PACK_BYTES:
            raise DnwError(
                f"the pack would be {size / 2**20:.1f} MiB, over the {MAX_PACK_BYTES / 2**20:.0f} MiB limit; "
                "use a smaller generator preset"
            )
        provenance["size_bytes"] = size
        write_json(tmp / "provenance.json", provenance)
    return provenance

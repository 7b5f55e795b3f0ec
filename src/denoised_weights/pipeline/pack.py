"""``dnw pack``: a finished base and generator copied into a pack folder with their provenance."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

from denoised_weights.core.errors import DnwError
from denoised_weights.core.io import atomic_dir, read_json, write_json
from denoised_weights.core.outputs import claim_output
from denoised_weights.core.plugins import Registries

BASE_FILES = ("model.safetensors", "training.safetensors", "base.json", "run.json")
GENERATOR_SKIP = {"checkpoint"}


def default_generator(task: str = "image-translation") -> Path:
    """The shipped generator of ``task`` (``dnw generate`` without ``--generator``)."""
    from denoised_weights.pretrained import shipped_pack

    pack = shipped_pack(task)
    if pack is None:
        raise DnwError(
            "no --generator given and this installation has no pretrained pack "
            f"for task {task!r}; fit one with 'dnw fit' and pass --generator DIR"
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
    overwrite: bool = False,
    registries: Registries | None = None,
) -> dict[str, Any]:
    """Copy a finished base and generator into a pack folder with their provenance."""
    from denoised_weights.core.components import create_architecture
    from denoised_weights.core.dataset import WeightDataset
    from denoised_weights.generators.diffusion import GENERATOR_CONFIG
    from denoised_weights.pipeline.base import base_info, load_base
    from denoised_weights.pretrained import MAX_PACK_BYTES

    base, generator, out = Path(base), Path(generator), Path(out)
    base_json = base_info(base)
    if not (generator / GENERATOR_CONFIG).is_file():
        raise DnwError(
            f"{generator}: not a finished generator (no {GENERATOR_CONFIG}); run 'dnw fit'"
        )
    gen_info = read_json(generator / GENERATOR_CONFIG)
    if gen_info["architecture"] != base_json["architecture"]:
        raise DnwError(f"{generator} and {base} are for different architectures")
    load_base(
        base,
        create_architecture(gen_info["architecture"], registries=registries, **gen_info["config"]),
    )
    history = read_json(generator / "val_loss.json")
    gen_run = read_json(generator / "run.json") if (generator / "run.json").is_file() else {}
    provenance: dict[str, Any] = {
        "task": base_json.get("task", "image-translation"),
        "commit": _git_commit(),
        "architecture": gen_info["architecture"],
        "preset": gen_info.get("preset"),
        "lora_fingerprint": gen_info["lora_fingerprint"],
        "base": {k: base_json.get(k) for k in ("seed", "steps", "train_seconds")},
        "generator": {
            "seed": gen_run.get("seed"),
            "steps": gen_info["steps"],
            "train_seconds": gen_info["train_seconds"],
            "text_encoder": gen_info["text_encoder"],
            "final_val_loss": history[-1]["val_loss"],
            "centered": gen_info.get("centered", False),
            "default_timestep": gen_info.get("default_timestep"),
            "default_start": gen_info.get("default_start"),
        },
        "versions": gen_run.get("versions"),
        "rebuild": (
            "make pack (base, collection of every single-edit training concept, "
            "fit for the recorded steps, dnw pack)"
        ),
    }
    if data is not None:
        provenance["dataset"] = WeightDataset(data).info()
    if results is not None:
        provenance["benchmark_summary"] = read_json(results).get("summary")
    size = sum((base / n).stat().st_size for n in BASE_FILES if (base / n).is_file()) + sum(
        p.stat().st_size
        for p in generator.rglob("*")
        if p.is_file() and not GENERATOR_SKIP & set(p.relative_to(generator).parts)
    )
    if size > MAX_PACK_BYTES:
        raise DnwError(
            f"the pack would be {size / 2**20:.1f} MiB, over "
            f"the {MAX_PACK_BYTES / 2**20:.0f} MiB limit; "
            "use a smaller generator preset"
        )
    settings = {
        "base": str(base.resolve()),
        "generator": str(generator.resolve()),
        "data": str(Path(data).resolve()) if data else None,
    }
    claim_output(
        out, "pack", settings, overwrite=overwrite, owned=("base", "generator", "provenance.json")
    )
    with atomic_dir(out) as tmp:
        (tmp / "base").mkdir()
        for name in BASE_FILES:
            if (base / name).is_file():
                shutil.copy2(base / name, tmp / "base" / name)
        shutil.copytree(
            generator,
            tmp / "generator",
            ignore=lambda _d, names: [n for n in names if n in GENERATOR_SKIP],
        )
        provenance["size_bytes"] = _folder_bytes(tmp)
        write_json(tmp / "provenance.json", provenance)
    return provenance

"""``dnw translate``: a base + LoRA translator applied to image files and folders.

The network is E2GAN's: fully convolutional except one self-attention block over the
bottleneck tokens (an H/4 x W/4 grid), and it needs H and W to be multiples of 4, so every
image is reflect-padded to a multiple of 4 and cropped back: an output has its input's size.

**At which resolution the network runs** (``resolution``, looked at on the bundled photos
with adapters fine-tuned for sketch, vignette, sepia and halftone concepts). The models learn
from 64 x 64 crops that cover 30-100% of a photo's shorter side, so an edit's sizes ("a pencil
sketch with 2-pixel strokes", "a vignette", "5-pixel halftone dots") are sizes at a scale
where a whole photo is 64-213 pixels high. Run at a 2-megapixel photo's own resolution, the
sketch adapter returns a blank white page (at that scale there are no edges as strong as the
ones it learned) and the vignette adapter darkens nothing; colour and tone edits look the
same at any scale. So by default (``resolution=128``, the geometric middle of 64-213) the
network sees a copy whose shorter side is 128 pixels (never enlarged), and the *change* it
makes is upsampled and added to the full-resolution input: the photo keeps its full detail,
colour edits are exact in colour, sketches and vignettes appear at the scale they were
learned. The price: edits that should remove detail (blur, pixelation) keep the input's
finest detail on top. ``resolution="native"`` runs the network at the file's own resolution.

**Whole or tiled** (measured on this 2-core CPU, one thread, the small preset with a LoRA):
the attention's cost grows with (H·W/16)², the convolutions' linearly. Whole images took
0.09 s at 128 x 128, 0.52 s at 256 x 256, 2.0 s at 384 x 384, 4.8 s at 512 x 512, 22 s at
768 x 768 and 59 s at 1024 x 1024; 256 x 256 tiles overlapping by 32 pixels cost as much as
the whole image up to 512 x 512 and far less beyond (8 s at 768, 13 s at 1024). So images up
to ``max_full_pixels`` (512 x 512) run whole, so that the attention sees all of them, and
larger ones (``native``, or a long panorama) run as ``tile`` x ``tile`` tiles (256) that overlap
by ``overlap`` pixels (32) and are blended with weights that fall linearly to each tile's
edge inside the overlaps, so no seam shows.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from denoised_weights.core.errors import DnwError
from denoised_weights.core.interfaces import TargetArchitecture, Task
from denoised_weights.core.plugins import Registries
from denoised_weights.plugins.image_translation.imagefiles import (
    LoadedImage,
    UnreadableImage,
    load_image,
    readable_suffixes,
    save_png,
    to_pil,
)
from denoised_weights.plugins.image_translation.options import (
    MULTIPLE,
    TranslateOptions,
    TranslatorSpec,
)

REPORT = "translate.json"
ADAPTER_DIR = "adapter"


# -- running the network at any size -----------------------------------------------------------
def pad_to_multiple(x: torch.Tensor, multiple: int = MULTIPLE) -> torch.Tensor:
    """``x [B, C, H, W]`` padded at the bottom and right to multiples of ``multiple`` (reflect;
    replicate for images too small to reflect)."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if not ph and not pw:
        return x
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode)


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of ``tile`` covering ``length`` with at least ``overlap`` shared."""
    if length <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, length - tile + 1, stride))
    if starts[-1] != length - tile:
        starts.append(length - tile)
    return starts


def blend_window(length: int, start: int, size: int, overlap: int) -> torch.Tensor:
    """1-D weights of a tile: 1 inside, falling linearly towards a side that has a neighbour."""
    w = torch.ones(size)
    if overlap > 0:
        ramp = (torch.arange(overlap, dtype=torch.float32) + 0.5) / overlap
        if start > 0:
            w[:overlap] = ramp
        if start + size < length:
            w[size - overlap :] = ramp.flip(0)
    return w


class Translator:
    """A base network with a LoRA adapter (or merged), ready to translate images of any size.

    Built by :func:`load_translator`; ``info`` says which base, adapter and prompt it holds.
    """

    def __init__(
        self,
        task: Task,
        arch: TargetArchitecture,
        model: nn.Module,
        options: TranslateOptions | None = None,
        info: dict[str, Any] | None = None,
    ) -> None:
        self.task, self.arch, self.model = task, arch, model.eval()
        self.options = options or TranslateOptions()
        self.info = dict(info or {})

    @property
    def device(self) -> torch.device:
        param = next(iter(self.model.parameters()), None)
        return param.device if param is not None else torch.device("cpu")

    def _predict(self, batch: torch.Tensor) -> torch.Tensor:
        """The task's own prediction of a batch ``[B, 3, H, W]`` (multiples of 4)."""
        return self.task.predict(
            self.arch, self.model, {"A": batch}, batch_size=self.options.batch_size
        )

    def run(self, x: torch.Tensor) -> tuple[torch.Tensor, str]:
        """``x [3, H, W]`` in [0, 1] through the network at its own resolution:
        ``(output [3, H, W], "whole" or "tiled RxC")``."""
        h, w = x.shape[-2:]
        xp = pad_to_multiple(x.unsqueeze(0))
        if h * w <= self.options.max_full_pixels:
            return self._predict(xp)[0, :, :h, :w], "whole"
        out, how = self._tiled(xp[0])
        return out[:, :h, :w], how

    def _tiled(self, x: torch.Tensor) -> tuple[torch.Tensor, str]:
        o = self.options
        _, h, w = x.shape
        th, tw = min(o.tile, h), min(o.tile, w)
        ys, xs = tile_starts(h, th, o.overlap), tile_starts(w, tw, o.overlap)
        acc = torch.zeros(3, h, w)
        weight = torch.zeros(1, h, w)
        boxes = [(y, x0) for y in ys for x0 in xs]
        for i in range(0, len(boxes), o.batch_size):
            chunk = boxes[i : i + o.batch_size]
            batch = torch.stack([x[:, y : y + th, x0 : x0 + tw] for y, x0 in chunk])
            outs = self._predict(batch)
            for (y, x0), out in zip(chunk, outs, strict=True):
                win = (
                    blend_window(h, y, th, min(o.overlap, th // 2))[:, None]
                    * blend_window(w, x0, tw, min(o.overlap, tw // 2))[None, :]
                )
                acc[:, y : y + th, x0 : x0 + tw] += out * win
                weight[:, y : y + th, x0 : x0 + tw] += win
        return acc / weight, f"tiled {len(ys)}x{len(xs)}"

    def translate_tensor(self, x: torch.Tensor) -> tuple[torch.Tensor, str]:
        """``x [3, H, W]`` in [0, 1] translated at the options' resolution, same size."""
        res = self.options.resolution
        h, w = x.shape[-2:]
        if res == "native" or min(h, w) <= int(res):
            return self.run(x)
        scale = int(res) / min(h, w)
        size = (max(1, round(h * scale)), max(1, round(w * scale)))
        small = F.interpolate(x[None], size=size, mode="bilinear", antialias=True)[0]
        out, how = self.run(small)
        change = F.interpolate((out - small)[None], size=(h, w), mode="bilinear")[0]
        return (x + change).clamp(0, 1), f"{how} at {size[1]}x{size[0]}"

    def translate_image(self, image: LoadedImage) -> tuple[Any, str]:
        """A loaded image translated: ``(Pillow image of the same size, how it ran)``."""
        out, how = self.translate_tensor(image.rgb)
        return to_pil(out, image.alpha), how

    def translate_pil(self, image: Any) -> Any:
        """A Pillow image translated (EXIF orientation applied), same size."""
        from denoised_weights.plugins.image_translation.imagefiles import to_loaded

        return self.translate_image(to_loaded(image))[0]


def _architecture_for(base: Path, adapter_info: dict[str, Any], registries: Registries | None):
    """The architecture a base was trained as, with the adapter's LoRA settings."""
    from denoised_weights.core.components import create_architecture
    from denoised_weights.pipeline.base import base_info

    info = base_info(base)
    config = dict(info["config"])
    spec = adapter_info.get("lora_spec") or {}
    lora_keys = {
        "rank": "rank",
        "alpha": "alpha",
        "train_norms": "train_norms",
        "init_seed": "lora_seed",
        "shared_a": "shared_a",
    }
    for key, name in lora_keys.items():
        if key in spec and (name in config or spec[key] is True):
            config[name] = spec[key]
    return create_architecture(info["architecture"], None, registries=registries, **config)


def load_translator(
    base: str | Path | None = None,
    adapter: str | Path | None = None,
    *,
    options: TranslateOptions | None = None,
    merge: str | None = None,
    task: str | Task | None = None,
    device: str | None = None,
    registries: Registries | None = None,
) -> Translator:
    """Base (default: the shipped pack's) + PEFT adapter folder as a :class:`Translator`.

    The adapter is checked against the base (fingerprint, shapes). Without ``merge`` the LoRA
    stays a separate branch exactly as it was trained; ``merge="peft"`` merges it into the
    weights with peft, ``"faithful"`` too but keeps the trained zero padding of the update of
    reflect-padded convs (see :mod:`~denoised_weights.plugins.image_translation.merge`)."""
    from denoised_weights.api import pack_part
    from denoised_weights.core.components import lora_fingerprint
    from denoised_weights.core.lora import apply_lora, load_adapter, load_lora_state
    from denoised_weights.pipeline.base import load_base
    from denoised_weights.pipeline.context import resolve_task

    t = resolve_task(task, registries)
    base_dir = Path(base) if base is not None else pack_part(t, "base", None)
    if base_dir is None:
        raise DnwError("--base DIR is needed (a base model from 'dnw base')")
    if not base_dir.is_dir():
        raise DnwError(f"--base {base_dir} is no such folder; give a base made by 'dnw base'")
    if adapter is None:
        raise DnwError("give --adapter DIR (a PEFT adapter from 'dnw finetune' or 'dnw generate')")
    adapter_dir = Path(adapter)
    if not adapter_dir.is_dir():
        raise DnwError(
            f"--adapter {adapter_dir} is no such folder; give an adapter folder "
            "(made by 'dnw generate', or the adapter/ of a 'dnw finetune' run)"
        )
    _, meta = load_adapter(adapter_dir)
    arch = _architecture_for(base_dir, meta, registries)
    state, meta = load_adapter(adapter_dir, expected_fingerprint=lora_fingerprint(arch))
    dev = device if device not in (None, "auto") else None
    model, _ = load_base(base_dir, arch, device=dev)
    if merge not in (None, "peft", "faithful"):
        raise DnwError(f"merge must be None, 'peft' or 'faithful', got {merge!r}")
    if merge:
        from denoised_weights.plugins.image_translation.merge import merged_network

        model = merged_network(model, adapter_dir, faithful=merge == "faithful")
    else:
        model = apply_lora(model, arch.lora_spec())
        load_lora_state(model, state)
    info = {
        "base": str(base_dir),
        "adapter": str(adapter_dir),
        "prompt": meta.get("prompt"),
        "fingerprint": meta.get("fingerprint"),
        "merged": merge,
    }
    return Translator(t, arch, model, options, info)


# -- files and folders -------------------------------------------------------------------------
@dataclass
class Plan:
    """Which file goes where: ``jobs`` (input, output path relative to --out)."""

    jobs: list[tuple[Path, Path]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


def _folder_images(folder: Path) -> list[Path]:
    suffixes = readable_suffixes()
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file()
        and p.suffix.lower() in suffixes
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def plan_outputs(inputs: Sequence[str | Path], out: Path) -> Plan:
    """Every input file with its output path; refuses an ``out`` that is or holds an input.

    A file goes to ``OUT/<stem>.png``; a folder's images (recursively, the formats Pillow
    reads) to ``OUT/<path inside the folder>.png``. Two inputs that would land on one name
    keep their suffix (``photo.jpg.png``)."""
    if not inputs:
        raise DnwError("give at least one INPUT (an image file or a folder of images)")
    out_r = out.resolve()
    plan = Plan()
    seen: set[Path] = set()
    pairs: list[tuple[Path, Path]] = []
    for raw in inputs:
        path = Path(raw)
        if not path.exists():
            plan.missing.append(f"{path}: no such file or folder")
            continue
        src = path.resolve()
        if src == out_r or out_r in src.parents:
            raise DnwError(
                f"--out {out} is or contains the input {path}; outputs never overwrite inputs: "
                "choose a new output folder"
            )
        if path.is_dir():
            if src in out_r.parents:
                raise DnwError(
                    f"--out {out} is inside the input folder {path}; a rerun would translate "
                    "the outputs: choose an output folder outside it"
                )
            files = [(f, f.relative_to(path)) for f in _folder_images(path)]
            if not files:
                plan.missing.append(f"{path}: no images in this folder")
        else:
            files = [(path, Path(path.name))]
        for f, rel in files:
            if f.resolve() in seen:
                continue
            seen.add(f.resolve())
            pairs.append((f, rel))
    targets: dict[Path, int] = {}
    for _, rel in pairs:
        key = rel.with_suffix(".png")
        targets[key] = targets.get(key, 0) + 1
    for f, rel in pairs:
        target = rel.with_suffix(".png")
        plan.jobs.append((f, rel.with_name(rel.name + ".png") if targets[target] > 1 else target))
    return plan


def _owned(plan: Plan, with_adapter: bool) -> set[str]:
    names = {rel.parts[0] for _, rel in plan.jobs} | {REPORT}
    return names | ({ADAPTER_DIR} if with_adapter else set())


def translate(
    inputs: Sequence[str | Path] | str | Path,
    out: str | Path,
    *,
    options: TranslateOptions | None = None,
    device: str | None = None,
    overwrite: bool = False,
    registries: Registries | None = None,
    echo: Callable[[str], None] | None = None,
    progress: bool = True,
    **given: Any,
) -> dict[str, Any]:
    """``dnw translate``: every image of ``inputs`` (files and folders) translated into ``out``
    by base + adapter, each output the size of its input.

    ``given``: the fields of :class:`TranslatorSpec` (``adapter``, or ``prompt``, which
    generates the adapter first into ``out/adapter`` with ``generator``, default the shipped
    pack's; ``base``; ``seed``) and of :class:`TranslateOptions` (or those as one ``options``),
    both of :mod:`~denoised_weights.plugins.image_translation.options`. Unreadable files are
    skipped and named (``echo``, and ``skipped`` in the result); a rerun with the same
    arguments resumes. Returns the summary written to ``out/translate.json``."""
    from tqdm.auto import tqdm

    from denoised_weights.core.io import write_json
    from denoised_weights.core.outputs import claim_output
    from denoised_weights.pipeline.options import split_options

    if options is None:
        spec, opts = split_options("translate", given, TranslatorSpec, TranslateOptions)
    else:
        (spec,) = split_options("translate", given, TranslatorSpec)
        opts = options
    base, adapter, prompt, generator, seed = (
        spec.base,
        spec.adapter,
        spec.prompt,
        spec.generator,
        spec.seed,
    )
    out = Path(out)
    paths = [inputs] if isinstance(inputs, str | Path) else list(inputs)
    if (adapter is None) == (prompt is None):
        raise DnwError("give exactly one of --adapter DIR and --prompt TEXT")
    plan = plan_outputs(paths, out)
    if not plan.jobs:
        raise DnwError(
            "nothing to translate: " + "; ".join(plan.missing) + " (give image files or folders)"
        )
    settings = {
        "inputs": [str(Path(p).resolve()) for p in paths],
        "base": str(Path(base).resolve()) if base else None,
        "adapter": str(Path(adapter).resolve()) if adapter else None,
        "prompt": prompt,
        "generator": str(generator) if generator else None,
        "seed": seed,
        **opts.to_dict(),
    }
    claim_output(
        out,
        "translate",
        settings,
        overwrite=overwrite,
        owned=_owned(plan, prompt is not None),
        seed=seed,
    )
    if prompt is not None:
        from denoised_weights.api import generate

        if not (out / ADAPTER_DIR / "adapter_model.safetensors").is_file():
            generate(
                prompt,
                out / ADAPTER_DIR,
                generator=generator,
                seed=seed,
                overwrite=True,
                registries=registries,
            )
        adapter = out / ADAPTER_DIR
    translator = load_translator(base, adapter, options=opts, device=device, registries=registries)
    say = echo or (lambda line: tqdm.write(line))
    skipped = [{"input": m.split(":", 1)[0], "reason": m} for m in plan.missing]
    for line in plan.missing:
        say(f"skipped {line}")
    done: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    bar = tqdm(plan.jobs, desc="translate", unit="img", disable=not progress, dynamic_ncols=True)
    for src, rel in bar:
        target = out / rel
        if target.is_file():  # written by an earlier run of the same command (atomically)
            done.append({"input": str(src), "output": str(target), "resumed": True})
            continue
        t1 = time.perf_counter()
        try:
            image = load_image(src)
        except UnreadableImage as exc:
            skipped.append({"input": str(src), "reason": str(exc)})
            say(f"skipped {exc}")
            continue
        result, how = translator.translate_image(image)
        save_png(target, result)
        done.append(
            {
                "input": str(src),
                "output": str(target),
                "size": list(image.size),
                "mode": image.mode,
                "format": image.format,
                "how": how,
                "seconds": round(time.perf_counter() - t1, 4),
            }
        )
    bar.close()
    summary = {
        "translated": len(done),
        "skipped": skipped,
        "total": len(done) + len(skipped),
        "seconds": round(time.perf_counter() - t0, 3),
        "out": str(out),
        "base": translator.info["base"],
        "adapter": translator.info["adapter"],
        "prompt": prompt or translator.info.get("prompt"),
        **opts.to_dict(),
        "images": done,
    }
    write_json(out / REPORT, summary)
    return summary


__all__ = [
    "TranslateOptions",
    "Translator",
    "TranslatorSpec",
    "load_translator",
    "pad_to_multiple",
    "plan_outputs",
    "translate",
]

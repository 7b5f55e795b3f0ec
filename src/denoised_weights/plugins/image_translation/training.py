"""Training image translators: the base model on many concepts, and per-concept fine-tuning.

Both loops checkpoint to ``OUT/checkpoint/`` (safetensors + JSON, written atomically) at every
evaluation, and a rerun of the same command resumes from there. Batches are drawn with a
generator seeded by (seed, step), so a resumed run sees the same batches as an unbroken one.
"""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from denoised_weights.core.checkpoint import load_checkpoint, save_checkpoint
from denoised_weights.core.errors import DnwError
from denoised_weights.core.interfaces import TargetArchitecture
from denoised_weights.core.io import (
    load_tensors,
    read_json,
    save_tensors,
    write_json,
    write_run_record,
)
from denoised_weights.core.lora import apply_lora, load_lora_state, lora_state, save_adapter

BASE_CONFIG = "base.json"
DEFAULT_METRICS = ("l1", "psnr", "ssim", "lpips", "fid")
#: pix2pix's Adam learning rate for full networks; LoRA adapters take a larger one
DEFAULT_LR = {"full": 2e-4, "lora": 1e-3}


# -- batches and evaluation ------------------------------------------------------------------
def sample_batch(
    a: torch.Tensor, b: torch.Tensor, batch_size: int, seed: int, step: int
) -> dict[str, torch.Tensor]:
    """A random batch with random horizontal flips, fixed by (seed, step)."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + step)
    idx = torch.randint(len(a), (batch_size,), generator=g)
    flip = torch.rand(batch_size, generator=g) < 0.5
    xa, xb = a[idx].clone(), b[idx].clone()
    xa[flip], xb[flip] = xa[flip].flip(-1), xb[flip].flip(-1)
    return {"A": xa, "B": xb}


@dataclass
class Evaluator:
    """Metrics of a model's outputs on a fixed eval set, batched."""

    arch: TargetArchitecture
    a: torch.Tensor
    b: torch.Tensor
    metrics: dict[str, Any] = field(default_factory=dict)
    batch_size: int = 32

    @torch.no_grad()
    def outputs(self, model: nn.Module) -> torch.Tensor:
        was = model.training
        model.eval()
        outs = [
            self.arch.forward(model, {"A": self.a[i : i + self.batch_size]}).clamp(0, 1)
            for i in range(0, len(self.a), self.batch_size)
        ]
        model.train(was)
        return torch.cat(outs)

    def __call__(self, model: nn.Module) -> dict[str, float | None]:
        out = self.outputs(model)
        result: dict[str, float | None] = {}
        for name, metric in self.metrics.items():
            metric.reset()
            try:
                metric.update(out, self.b)
                value = metric.compute()
            except DnwError:  # e.g. FID on an eval set too small for it: recorded as null
                value = None
            result[name] = None if value is None or math.isnan(value) else float(value)
        return result


def build_metrics(names: Sequence[str]) -> dict[str, Any]:
    from denoised_weights.core.plugins import default_registries

    registry = default_registries().metrics
    return {name: registry.create(name) for name in names}


# -- the shared loop -------------------------------------------------------------------------
def train_loop(
    *,
    arch: TargetArchitecture,
    model: nn.Module,
    tstate: Any,
    batch_fn: Callable[[int], dict[str, torch.Tensor]],
    max_steps: int,
    eval_every: int,
    evaluate: Callable[[nn.Module], dict[str, float | None]] | None,
    ckpt_dir: Path,
    desc: str,
    extra_seconds: float = 0.0,
    eval_at: Sequence[int] = (),
    on_record: Callable[[int, nn.Module], None] | None = None,
) -> list[dict[str, Any]]:
    """Train to ``max_steps``, evaluating (and checkpointing) at step 0, every ``eval_every``
    steps, at the steps in ``eval_at`` and at the end; ``on_record(step, model)`` runs after
    each evaluation.

    Returns the curve points; each has ``step``, ``train_seconds`` (training plus
    ``extra_seconds`` such as init time, evaluation excluded) and the metrics.
    """
    parts = {
        "model": model,
        "discriminator": tstate.discriminator,
        "opt_g": tstate.opt_g,
        "opt_d": tstate.opt_d,
    }
    meta = load_checkpoint(ckpt_dir, parts)
    step = meta["step"] if meta else 0
    train_seconds = meta["train_seconds"] if meta else extra_seconds
    points: list[dict[str, Any]] = meta["points"] if meta else []
    extra_evals = set(eval_at)

    def checkpoint() -> None:
        save_checkpoint(
            ckpt_dir, parts, {"step": step, "train_seconds": train_seconds, "points": points}
        )

    def record() -> None:
        values = evaluate(model) if evaluate else {}
        points.append({"step": step, "train_seconds": round(train_seconds, 4), **values})
        if on_record is not None:
            on_record(step, model)
        checkpoint()

    if not points:
        record()
    bar = tqdm(
        total=max_steps, initial=step, desc=desc, unit="step", dynamic_ncols=True, leave=False
    )
    while step < max_steps:
        batch = batch_fn(step)
        t0 = time.perf_counter()
        arch.training_step(model, tstate, batch)
        train_seconds += time.perf_counter() - t0
        step += 1
        bar.update(1)
        if step % eval_every == 0 or step == max_steps or step in extra_evals:
            record()
            bar.set_postfix(
                {k: f"{v:.4f}" for k, v in points[-1].items() if k == "l1" and v is not None}
            )
        elif step % 200 == 0:
            checkpoint()
    bar.close()
    return points


# -- base model ------------------------------------------------------------------------------
def train_base(
    arch: TargetArchitecture,
    out: str | Path,
    *,
    concepts: Sequence[str],
    steps: int = 3000,
    batch_size: int = 8,
    pairs_per_concept: int = 32,
    eval_every: int = 250,
    seed: int = 0,
    photos_dir: str | Path | None = None,
    lr: float | None = None,
    identity_fraction: float = 0.125,
) -> Path:
    """Pretrain the full generator on a mixture of training concepts (E2GAN's base model).

    Each concept contributes ``pairs_per_concept`` pairs; batches mix concepts. A further
    ``identity_fraction`` of "no edit" pairs (a photo and itself) teaches the base to keep an
    image's content, so it is a general starting point for any concept. Output:
    ``generator.safetensors``, ``discriminator.safetensors``, ``base.json``, ``curve.json``.
    """
    from denoised_weights.plugins.image_translation.pairs import CataloguePairs

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if (out / BASE_CONFIG).is_file():
        return out  # finished earlier
    config = {
        "architecture": arch.name,
        "config": arch.config,
        "concepts": list(concepts),
        "steps": steps,
        "batch_size": batch_size,
        "pairs_per_concept": pairs_per_concept,
        "seed": seed,
        "lr": lr or DEFAULT_LR["full"],
        "identity_fraction": identity_fraction,
    }
    write_run_record(out, seed=seed, config=config)
    a_parts, b_parts = [], []
    for i, cid in enumerate(tqdm(concepts, desc="base: making pairs", leave=False)):
        a, b = CataloguePairs(cid, arch.image_size, photos_dir).pairs(
            pairs_per_concept, seed=seed * 7919 + i
        )
        a_parts.append(a)
        b_parts.append(b)
    n_identity = round(identity_fraction * len(concepts) * pairs_per_concept)
    if n_identity:
        from denoised_weights.plugins.image_translation.photos import sample_crops

        same = sample_crops(
            n_identity, arch.image_size, split="train", seed=seed + 4242, photos_dir=photos_dir
        )
        a_parts.append(same)
        b_parts.append(same)
    a_all, b_all = torch.cat(a_parts), torch.cat(b_parts)
    ea, eb = [], []
    for i, cid in enumerate(concepts[:: max(1, len(concepts) // 16)]):
        a, b = CataloguePairs(cid, arch.image_size, photos_dir).pairs(
            4, split="eval", seed=10_000 + i
        )
        ea.append(a)
        eb.append(b)
    evaluator = Evaluator(arch, torch.cat(ea), torch.cat(eb), build_metrics(["l1"]))
    model = arch.build(seed)
    tstate = arch.init_training(model, seed=seed, lr=config["lr"])
    points = train_loop(
        arch=arch,
        model=model,
        tstate=tstate,
        batch_fn=lambda step: sample_batch(a_all, b_all, batch_size, seed, step),
        max_steps=steps,
        eval_every=eval_every,
        evaluate=evaluator,
        ckpt_dir=out / "checkpoint",
        desc="base",
    )
    save_tensors(out / "generator.safetensors", model.state_dict(), {"architecture": arch.name})
    save_tensors(out / "discriminator.safetensors", tstate.discriminator.state_dict())
    write_json(
        out / "curve.json", {"init": "base", "prompt": "", "init_seconds": 0.0, "points": points}
    )
    write_json(out / BASE_CONFIG, {**config, "train_seconds": points[-1]["train_seconds"]})
    shutil.rmtree(out / "checkpoint", ignore_errors=True)
    return out


def load_base(path: str | Path, arch: TargetArchitecture) -> tuple[nn.Module, nn.Module]:
    """``(generator, discriminator)`` of a base directory made for ``arch``'s configuration."""
    path = Path(path)
    if not (path / BASE_CONFIG).is_file():
        raise DnwError(
            f"{path}: not a finished base model (no {BASE_CONFIG}); run 'dnw base --out {path}'"
        )
    info = read_json(path / BASE_CONFIG)
    stored = {k: v for k, v in info.get("config", {}).items() if k not in arch.lora_config_keys}
    if info.get("architecture") != arch.name or stored != arch.network_config:
        raise DnwError(
            f"{path}: base was trained for {info.get('architecture')} {stored}, "
            f"not {arch.name} {arch.network_config}; pass the matching --preset or another --base"
        )
    gen, _ = load_tensors(path / "generator.safetensors")
    disc, _ = load_tensors(path / "discriminator.safetensors")
    model = arch.build()
    model.load_state_dict(gen)
    discriminator = arch.build_discriminator()  # type: ignore[attr-defined]
    discriminator.load_state_dict(disc)
    return model, discriminator


# -- fine-tuning -----------------------------------------------------------------------------
def finetune(
    arch: TargetArchitecture,
    out: str | Path,
    *,
    train_pairs: tuple[torch.Tensor, torch.Tensor],
    eval_pairs: tuple[torch.Tensor, torch.Tensor],
    prompt: str,
    init: str = "standard",
    base: str | Path | None = None,
    initialiser: Any = None,
    init_seconds: float = 0.0,
    max_steps: int = 600,
    eval_every: int = 50,
    batch_size: int = 8,
    seed: int = 0,
    lr: float | None = None,
    metrics: Sequence[str] = DEFAULT_METRICS,
    fingerprint: str | None = None,
    eval_at: Sequence[int] = (),
    snapshot_at: Sequence[int] = (),
) -> dict[str, Any]:
    """Fine-tune a translator for one concept; returns the curve (also written to curve.json).

    ``init="scratch"``: the full generator from random weights (pix2pix, no base).
    Anything else: the base generator with LoRA, starting from peft's default init
    (``standard``, E2GAN) or from ``initialiser``'s state (generated or a baseline); the time
    the initialiser takes is counted in ``init_seconds`` and in every point's ``train_seconds``.
    ``snapshot_at``: evaluation steps at which the outputs for the first 8 eval images are kept
    (``snapshots/step_NNNNN.safetensors``), for grids that compare inits at equal steps.
    """
    out = Path(out)
    if max_steps < 1 or eval_every < 1 or batch_size < 1:
        raise DnwError("--max-steps, --eval-every and --batch-size must be positive")
    if (out / "curve.json").is_file() and not (out / "checkpoint").exists():
        return read_json(out / "curve.json")  # finished earlier
    out.mkdir(parents=True, exist_ok=True)
    full = init == "scratch"
    config = {
        "architecture": arch.name,
        "config": arch.config,
        "init": init,
        "prompt": prompt,
        "base": str(base) if base else None,
        "max_steps": max_steps,
        "eval_every": eval_every,
        "batch_size": batch_size,
        "lr": lr or DEFAULT_LR["full" if full else "lora"],
        "metrics": list(metrics),
        "eval_at": sorted(eval_at),
        "train_pairs": len(train_pairs[0]),
        "eval_pairs": len(eval_pairs[0]),
    }
    write_run_record(out, seed=seed, config=config)
    torch.manual_seed(seed)
    if full:
        model, disc = arch.build(seed), None
    else:
        if base is None:
            raise DnwError(f"--init {init} needs --base DIR (a base model from 'dnw base')")
        model, disc = load_base(base, arch)
        model = apply_lora(model, arch.lora_spec())
        if initialiser is not None:
            initialiser.check_fits(arch)
            t0 = time.perf_counter()
            a, b = train_pairs
            state = initialiser.initialise(
                prompt,
                arch=arch,
                model=model,
                pairs={"A": a, "B": b, "discriminator": disc},
                seed=seed,
            )
            load_lora_state(model, state)
            init_seconds += time.perf_counter() - t0
    tstate = arch.init_training(model, seed=seed, lr=config["lr"], discriminator=disc)
    evaluator = Evaluator(arch, *eval_pairs, build_metrics(metrics))
    a, b = train_pairs
    snap_steps = set(snapshot_at)

    def snapshot(step: int, net: nn.Module) -> None:
        if step in snap_steps:
            view = Evaluator(arch, eval_pairs[0][:8], eval_pairs[1][:8])
            save_tensors(
                out / "snapshots" / f"step_{step:05d}.safetensors", {"out": view.outputs(net)}
            )

    points = train_loop(
        arch=arch,
        model=model,
        tstate=tstate,
        batch_fn=lambda step: sample_batch(a, b, batch_size, seed, step),
        max_steps=max_steps,
        eval_every=eval_every,
        evaluate=evaluator,
        ckpt_dir=out / "checkpoint",
        desc=f"finetune {init}",
        extra_seconds=init_seconds,
        eval_at=tuple(eval_at) + tuple(snapshot_at),
        on_record=snapshot if snap_steps else None,
    )
    if full:
        save_tensors(
            out / "generator.safetensors",
            model.state_dict(),
            {"architecture": arch.name, "init": init},
        )
    else:
        save_adapter(
            out / "adapter",
            lora_state(model),
            arch.lora_spec(),
            fingerprint=fingerprint,
            metadata={"prompt": prompt},
        )
    from denoised_weights.plugins.image_translation.pairs import save_grid

    n = min(8, len(eval_pairs[0]))
    save_grid(
        out / "grid.png", [eval_pairs[0][:n], eval_pairs[1][:n], evaluator.outputs(model)[:n]]
    )
    curve = {
        "init": init,
        "prompt": prompt,
        "init_seconds": round(init_seconds, 4),
        "points": points,
    }
    write_json(out / "curve.json", curve)
    shutil.rmtree(out / "checkpoint", ignore_errors=True)
    return curve


def steps_to_reach(
    points: Sequence[dict[str, Any]], target: float, key: str = "l1", sustained: float = 0.0
) -> dict[str, Any] | None:
    """The first curve point whose ``key`` is at or below ``target`` (None if never).

    With ``sustained`` > 0: the first point from which every later point stays at or below
    ``target * (1 + sustained)``, so a single lucky dip of a noisy curve does not count.
    """
    values = [p.get(key) for p in points]
    for i, p in enumerate(points):
        if values[i] is None or values[i] > target:
            continue
        if sustained <= 0 or all(
            v is not None and v <= target * (1 + sustained) for v in values[i:]
        ):
            return p
    return None


def dense_schedule(max_steps: int, every: int) -> list[int]:
    """Evaluation steps dense early (where a good init shows) and every ``every`` later."""
    early = [s for s in (5, 10, 15, 20, 30, 40, 60, 80, 100, 130, 160, 200) if s < max_steps]
    return sorted(set(early) | set(range(every, max_steps + 1, every)) | {max_steps})

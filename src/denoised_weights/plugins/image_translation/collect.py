"""``dnw collect``: a LoRA per training concept from the base model, K checkpoints each.

Every concept starts from the same LoRA init (the spec's ``init_seed``), so the dataset lives
in one basin. Training runs until the eval L1 stops improving (no gain of ``tol`` over the last
``patience`` evaluations) or ``max_steps``; then K checkpoints are kept ``interval`` steps apart.

Crash safety: a concept's progress is checkpointed under ``.work/<concept>/`` at every
evaluation, with the batches fixed by (seed, step), so a killed run resumes where it was and
ends with the same entries. Finished concepts are skipped. Work is split by ``--shard i/n``,
then by torchrun rank, then by ``--workers`` processes; every concept is written by one process.
"""

from __future__ import annotations

import copy
import hashlib
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from denoised_weights.core.dataset import DATASET_CONFIG, WeightDataset, safe_name, write_concept
from denoised_weights.core.errors import DnwError
from denoised_weights.core.interfaces import TargetArchitecture
from denoised_weights.core.io import load_tensors, read_json, save_tensors, versions, write_json
from denoised_weights.core.lora import apply_lora, lora_state
from denoised_weights.core.workers import exit_with_parent, run_workers, threads_per_worker


@dataclass
class CollectOptions:
    checkpoints: int = 4
    max_steps: int = 400
    min_steps: int = 50
    eval_every: int = 25
    interval: int = 25
    patience: int = 3
    tol: float = 0.01
    n_train: int = 128
    n_eval: int = 32
    batch_size: int = 8
    lr: float = 1e-3
    seed: int = 0

    def __post_init__(self) -> None:
        for name in (
            "checkpoints",
            "max_steps",
            "eval_every",
            "interval",
            "patience",
            "n_train",
            "n_eval",
            "batch_size",
        ):
            if getattr(self, name) < 1:
                raise DnwError(
                    f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}"
                )


def concept_seed(seed: int, concept_id: str) -> int:
    """A per-concept seed that does not depend on which process collects the concept."""
    return seed * 1_000_003 + int(hashlib.sha256(concept_id.encode()).hexdigest()[:8], 16)


def parse_shard(text: str | None) -> tuple[int, int]:
    if not text:
        return 0, 1
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise DnwError(f"--shard takes i/n (e.g. 0/4), got {text!r}") from None
    if n < 1 or not 0 <= i < n:
        raise DnwError(f"--shard {text}: need 0 <= i < n")
    return i, n


def prepare_dataset(
    out: Path, arch: TargetArchitecture, base: Path, preset: str | None, opts: CollectOptions
) -> dict[str, Any]:
    """Create ``dataset.json`` or check that the folder holds a dataset of the same making."""
    from denoised_weights.api import build_lora_model, lora_fingerprint

    template = lora_state(build_lora_model(arch))
    config = {
        "architecture": arch.name,
        "preset": preset,
        "config": arch.config,
        "lora_spec": arch.lora_spec().to_dict(),
        "fingerprint": lora_fingerprint(arch),
        "lora_params": sum(v.numel() for v in template.values()),
        "tensor_shapes": {k: list(v.shape) for k, v in template.items()},
        "base": str(base),
        "base_sha256": _base_digest(base),
        "options": asdict(opts),
    }
    path = out / DATASET_CONFIG
    if path.is_file():
        old = read_json(path)
        for key in ("fingerprint", "base_sha256", "options"):
            if old.get(key) != config[key]:
                raise DnwError(
                    f"{out} holds a dataset made with another {key.replace('_', ' ')}; "
                    "use a new --out folder or the same options"
                )
        return old
    out.mkdir(parents=True, exist_ok=True)
    write_json(path, {**config, "versions": versions()})
    return config


def _base_digest(base: Path) -> str:
    from denoised_weights.core.dataset import sha256_file

    path = base / "generator.safetensors"
    if not path.is_file():
        raise DnwError(f"{base}: not a finished base model; run 'dnw base --out {base}'")
    return sha256_file(path)


def collect_concept(
    arch: TargetArchitecture,
    out: Path,
    concept_id: str,
    *,
    base_model: torch.nn.Module,
    base_disc: torch.nn.Module,
    fingerprint: str,
    opts: CollectOptions,
    photos_dir: str | Path | None = None,
    position: int = 0,
) -> None:
    """Train one concept's LoRA and store its K checkpoints (resumes from ``.work/``)."""
    from tqdm.auto import tqdm

    from denoised_weights.core.checkpoint import load_checkpoint, save_checkpoint
    from denoised_weights.plugins.image_translation.pairs import CataloguePairs
    from denoised_weights.plugins.image_translation.training import (
        Evaluator,
        build_metrics,
        sample_batch,
    )

    name = safe_name(concept_id)
    work = out / ".work" / name
    cseed = concept_seed(opts.seed, concept_id)
    source = CataloguePairs(concept_id, arch.image_size, photos_dir)
    a, b = source.pairs(opts.n_train, split="train", seed=cseed % (2**31))
    evaluate = Evaluator(
        arch,
        *source.pairs(opts.n_eval, split="eval", seed=(cseed + 1) % (2**31)),
        build_metrics(["l1", "psnr"]),
    )
    model = apply_lora(copy.deepcopy(base_model), arch.lora_spec())
    tstate = arch.init_training(
        model, seed=opts.seed, lr=opts.lr, discriminator=copy.deepcopy(base_disc)
    )
    parts = {
        "model": model,
        "discriminator": tstate.discriminator,
        "opt_g": tstate.opt_g,
        "opt_d": tstate.opt_d,
    }
    meta = load_checkpoint(work, parts) or {"step": 0, "evals": [], "keep_from": None, "kept": []}
    step, evals, keep_from, kept = meta["step"], meta["evals"], meta["keep_from"], meta["kept"]
    started = time.perf_counter() - meta.get("seconds", 0.0)  # wall time, resumes included
    total = opts.max_steps + opts.checkpoints * opts.interval
    bar = tqdm(
        total=total,
        initial=step,
        desc=concept_id[:28],
        position=position,
        leave=False,
        unit="step",
        mininterval=2,
    )
    while True:
        if keep_from is None and step % opts.eval_every == 0:
            evals.append(evaluate(model)["l1"])
            best_before = min(evals[: -opts.patience], default=float("inf"))
            plateau = len(evals) > opts.patience and min(evals[-opts.patience :]) > best_before * (
                1 - opts.tol
            )
            if (plateau and step >= opts.min_steps) or step >= opts.max_steps:
                keep_from = step
        if keep_from is not None and (step - keep_from) % opts.interval == 0:
            index = (step - keep_from) // opts.interval
            if index == len(kept):  # not kept yet (a resumed run may have kept it already)
                metrics = evaluate(model)
                save_tensors(work / f"keep_{index}.safetensors", lora_state(model))
                kept.append({"checkpoint": index, "step": step, "eval": metrics})
            if len(kept) == opts.checkpoints:
                break
        if step % opts.eval_every == 0 or (
            keep_from is not None and (step - keep_from) % opts.interval == 0
        ):
            save_checkpoint(
                work,
                parts,
                {
                    "step": step,
                    "evals": evals,
                    "keep_from": keep_from,
                    "kept": kept,
                    "seconds": time.perf_counter() - started,
                },
            )
        arch.training_step(
            model, tstate, sample_batch(a, b, opts.batch_size, cseed % (2**31), step)
        )
        step += 1
        bar.update(1)
    bar.close()
    states = [load_tensors(work / f"keep_{k['checkpoint']}.safetensors")[0] for k in kept]
    entries = [
        {
            **k,
            "prompts": list(source.prompts),
            "seed": opts.seed,
            "concept_seed": cseed,
            "lora_init_seed": arch.lora_spec().init_seed,
            "converged_step": keep_from,
            "fingerprint": fingerprint,
            "concept_seconds": round(time.perf_counter() - started, 2),
        }
        for k in kept
    ]
    write_concept(out, concept_id, states, entries)
    shutil.rmtree(work, ignore_errors=True)


def _load_base(arch: TargetArchitecture, base: Path) -> tuple[torch.nn.Module, torch.nn.Module]:
    from denoised_weights.plugins.image_translation.training import load_base

    return load_base(base, arch)


def collect_shard(
    arch_name: str,
    arch_config: dict[str, Any],
    out: str,
    base: str,
    concept_ids: Sequence[str],
    opts: CollectOptions,
    photos_dir: str | None,
    threads: int | None,
    position: int,
) -> None:
    """Collect ``concept_ids`` one after another (the body of one worker process)."""
    from tqdm.auto import tqdm

    if position > 0 or threads is not None:
        exit_with_parent()

    from denoised_weights.api import create_architecture, lora_fingerprint

    if threads:
        torch.set_num_threads(threads)
    arch = create_architecture(arch_name, **arch_config)
    out_path = Path(out)
    base_model, base_disc = _load_base(arch, Path(base))
    fingerprint = lora_fingerprint(arch)
    done = set(WeightDataset(out_path).concepts)
    todo = [c for c in concept_ids if c not in done]
    for cid in tqdm(
        todo,
        desc=f"worker {position}",
        position=position * 2,
        unit="concept",
        leave=False,
        mininterval=2,
    ):
        collect_concept(
            arch, out_path, cid, base_model=base_model, base_disc=base_disc, fingerprint=fingerprint,
            opts=opts, photos_dir=photos_dir, position=position * 2 + 1,
        )  # fmt: skip


def _distributed_rank() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return (int(os.environ.get("RANK", "0")), world) if world > 1 else (0, 1)


def collect(
    arch: TargetArchitecture,
    base: str | Path,
    out: str | Path,
    *,
    concept_ids: Sequence[str],
    opts: CollectOptions,
    preset: str | None = None,
    shard: tuple[int, int] = (0, 1),
    workers: int = 1,
    photos_dir: str | Path | None = None,
) -> WeightDataset:
    """Collect the dataset (the part of it this process is responsible for) and write its card."""
    out, base = Path(out), Path(base)
    if workers < 1:
        raise DnwError(f"--workers must be at least 1, got {workers}")
    _load_base(arch, base)  # a clear error before any work if the base does not fit
    rank, world = _distributed_rank()
    if world > 1:  # under torchrun: rank 0 creates the folder, the others check it
        import torch.distributed as dist

        dist.init_process_group("gloo")
        if rank == 0:
            prepare_dataset(out, arch, base, preset, opts)
        dist.barrier()
    prepare_dataset(out, arch, base, preset, opts)
    mine = list(concept_ids)[shard[0] :: shard[1]][rank::world]
    threads = threads_per_worker(workers, world)
    if workers == 1:
        collect_shard(
            arch.name,
            arch.config,
            str(out),
            str(base),
            mine,
            opts,
            photos_dir and str(photos_dir),
            threads if world > 1 else None,
            0,
        )
    else:
        photos = photos_dir and str(photos_dir)
        run_workers(
            collect_shard,
            [
                (
                    arch.name,
                    arch.config,
                    str(out),
                    str(base),
                    mine[w::workers],
                    opts,
                    photos,
                    threads,
                    w,
                )
                for w in range(workers)
            ],
            "collection",
        )
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()
    dataset = WeightDataset(out)
    if rank == 0:
        write_card(dataset)
    return dataset


def write_card(dataset: WeightDataset) -> Path:
    """The dataset card: counts, preset, options, versions and how it was made."""
    info = dataset.info()
    cfg = dataset.config
    entries = dataset.entries
    l1s = [e["eval"]["l1"] for e in entries if e.get("eval")]
    conv = [e["converged_step"] for e in entries if e.get("checkpoint") == 0]
    lines = [
        f"# Weight dataset ({cfg.get('architecture')}, preset {cfg.get('preset')})",
        "",
        "LoRA adapters of one base image-translation GAN, one per training concept, with K checkpoints",
        "each, collected by `dnw collect` (denoised-weights). Every adapter starts from the same LoRA",
        "init seed, so all of them live in one basin.",
        "",
        f"- concepts: {info['concepts']}; entries: {info['entries']}; checkpoints per concept: {info['checkpoints_per_concept']}",
        f"- LoRA parameters per adapter: {cfg.get('lora_params')}; fingerprint `{cfg.get('fingerprint')}`",
        f"- size on disk: {info['size_bytes'] / 1e6:.1f} MB",
        f"- base model: `{cfg.get('base')}` (generator SHA-256 {str(cfg.get('base_sha256'))[:16]}...)",
        f"- options: `{cfg.get('options')}`",
        f"- versions: `{cfg.get('versions')}`",
    ]
    if l1s:
        lines.append(
            f"- eval L1 at the kept checkpoints: median {sorted(l1s)[len(l1s) // 2]:.4f}, min {min(l1s):.4f}, max {max(l1s):.4f}"
        )
    if conv:
        lines.append(
            f"- step at which training was judged converged: median {sorted(conv)[len(conv) // 2]}, max {max(conv)}"
        )
    lines += [
        "",
        "Files: `shards/<concept>.safetensors` (each LoRA tensor stacked over the K checkpoints),",
        "`manifest/<concept>.json` (entries: concept, prompts, checkpoint, step, eval metrics, seeds,",
        "fingerprint; plus the shard's SHA-256). Read with `denoised_weights.core.dataset.WeightDataset`.",
    ]
    path = dataset.path / "README.md"
    path.write_text("\n".join(lines) + "\n")
    return path

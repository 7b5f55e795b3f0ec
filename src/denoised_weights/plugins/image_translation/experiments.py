"""Comparing initialisations on one concept: the same data, steps and evaluation for each."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from denoised_weights.core.interfaces import TargetArchitecture
from denoised_weights.core.io import write_json
from denoised_weights.plugins.image_translation.pairs import CataloguePairs, write_pairs
from denoised_weights.plugins.image_translation.training import (
    DEFAULT_METRICS,
    dense_schedule,
    finetune,
    steps_to_reach,
)


def compare_inits(
    arch: TargetArchitecture,
    workdir: str | Path,
    *,
    concept: str | None = None,
    pairs_dir: str | Path | None = None,
    base: str | Path,
    inits: Sequence[str] = ("scratch", "standard"),
    initialisers: dict[str, Any] | None = None,
    n_train: int = 256,
    n_eval: int = 64,
    max_steps: int = 600,
    eval_every: int = 50,
    batch_size: int = 8,
    seed: int = 0,
    metrics: Sequence[str] = DEFAULT_METRICS,
    photos_dir: str | Path | None = None,
    prompt: str | None = None,
    snapshot_at: Sequence[int] = (),
    progress: Any = None,
) -> dict[str, Any]:
    """Fine-tune one task from every init with the same data and schedule.

    The task is a catalogue ``concept`` (pairs from training photos, eval pairs from held-out
    photos) or a ``pairs_dir`` folder (a fixed 10% held out). The target is scratch's final
    L1. Returns ``{"concept", "prompt", "target_l1", "inits": {init: row}}`` where each row
    has the step and seconds at which the init first reaches the target (None if never), its
    step-0 and final L1, and speed-ups versus scratch. Each run resumes if its folder exists.
    """
    workdir = Path(workdir)
    if pairs_dir is not None:
        from denoised_weights.plugins.image_translation.pairs import FolderPairs

        folder = FolderPairs(pairs_dir, arch.image_size)
        train, held = folder.pairs(split="train"), folder.pairs(split="eval")
        label, prompt = str(pairs_dir), prompt or Path(pairs_dir).name
    elif concept is not None:
        source = CataloguePairs(concept, arch.image_size, photos_dir)
        label, prompt = source.concept.id, prompt or source.prompts[0]
        train = source.pairs(n_train, split="train", seed=seed)
        held = source.pairs(n_eval, split="eval", seed=seed + 1)
        if not (workdir / "pairs" / "train").is_dir():
            write_pairs(workdir / "pairs" / "train", *train, {"concept": label, "split": "train"})
            write_pairs(workdir / "pairs" / "eval", *held, {"concept": label, "split": "eval"})
    else:
        raise ValueError("compare_inits needs a concept or a pairs folder")
    schedule = dense_schedule(max_steps, eval_every)
    curves = {}
    for init in inits:
        if progress is not None:
            progress(init)
        curves[init] = finetune(
            arch,
            workdir / init,
            train_pairs=train,
            eval_pairs=held,
            prompt=prompt,
            init=init,
            base=None if init == "scratch" else base,
            initialiser=(initialisers or {}).get(init),
            max_steps=max_steps,
            eval_every=eval_every,
            batch_size=batch_size,
            seed=seed,
            metrics=metrics,
            eval_at=schedule,
            snapshot_at=snapshot_at,
        )
    reference = curves.get("scratch") or next(iter(curves.values()))
    target = reference["points"][-1]["l1"]
    ref_hit = steps_to_reach(reference["points"], target)
    rows = {}
    for init, curve in curves.items():
        hit = steps_to_reach(curve["points"], target)
        row = {
            "step0_l1": curve["points"][0]["l1"],
            "final_l1": curve["points"][-1]["l1"],
            "final_fid": curve["points"][-1].get("fid"),
            "init_seconds": curve.get("init_seconds", 0.0),
            "total_steps": curve["points"][-1]["step"],
            "total_seconds": curve["points"][-1]["train_seconds"],
            "steps_to_target": hit["step"] if hit else None,
            "seconds_to_target": hit["train_seconds"] if hit else None,
            "steps_to_target_sustained": (
                steps_to_reach(curve["points"], target, sustained=0.02) or {}
            ).get("step"),
        }
        if hit and ref_hit and hit["step"] > 0:
            row["speedup_steps"] = ref_hit["step"] / hit["step"]
            row["speedup_seconds"] = ref_hit["train_seconds"] / max(hit["train_seconds"], 1e-9)
        elif hit:
            row["speedup_steps"] = row["speedup_seconds"] = float("inf")
        else:
            row["speedup_steps"] = row["speedup_seconds"] = None
        rows[init] = row
    result = {
        "concept": label,
        "prompt": prompt,
        "target_l1": target,
        "max_steps": max_steps,
        "seed": seed,
        "inits": rows,
    }
    write_json(workdir / "comparison.json", result)
    return result


def format_table(results: Sequence[dict[str, Any]]) -> str:
    """A Markdown table: one row per (concept, init)."""
    lines = [
        "| concept | init | L1 at step 0 | final L1 | steps to scratch's final L1 | seconds | speed-up (steps) | steps until it stays within 2% |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for res in results:
        for init, row in res["inits"].items():
            steps = row["steps_to_target"]
            secs = row["seconds_to_target"]
            speed = row["speedup_steps"]
            lines.append(
                f"| {res['concept']} | {init} | {row['step0_l1']:.4f} | {row['final_l1']:.4f} | "
                f"{steps if steps is not None else 'never'} | {f'{secs:.1f}' if secs is not None else '-'} | "
                f"{f'{speed:.1f}x' if speed is not None else '-'} | "
                f"{row.get('steps_to_target_sustained') if row.get('steps_to_target_sustained') is not None else 'never'} |"
            )
    return "\n".join(lines)


def step0_quality(
    arch: TargetArchitecture,
    *,
    base: str | Path,
    concepts: Sequence[str],
    initialisers: dict[str, Any],
    n_train: int = 256,
    n_eval: int = 64,
    seed: int = 0,
    metrics: Sequence[str] = ("l1",),
    photos_dir: str | Path | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Eval quality of each init before any fine-tuning, on held-out catalogue concepts.

    The same pairs as :func:`compare_inits` (train crops for data-aware inits such as FINE,
    eval crops from held-out photos). ``initialisers`` maps init names to initialisers;
    ``None`` means peft's default LoRA init (``standard``, i.e. the base model itself).
    Returns one row per concept: ``{"concept", "prompt", "inits": {init: {metric: value}}}``.
    """
    import torch
    from tqdm.auto import tqdm

    from denoised_weights.core.lora import apply_lora, load_lora_state
    from denoised_weights.plugins.image_translation.training import (
        Evaluator,
        build_metrics,
        load_base,
    )

    base_model, disc = load_base(base, arch)
    base_state = {k: v.clone() for k, v in base_model.state_dict().items()}
    metric_objs = build_metrics(metrics)
    rows = []
    for concept in tqdm(concepts, desc="step-0", unit="concept", disable=not progress):
        source = CataloguePairs(concept, arch.image_size, photos_dir)
        prompt = source.prompts[0]
        train = source.pairs(n_train, split="train", seed=seed)
        held = source.pairs(n_eval, split="eval", seed=seed + 1)
        evaluator = Evaluator(arch, *held, metric_objs)
        row: dict[str, Any] = {"concept": source.concept.id, "prompt": prompt, "inits": {}}
        for name, initialiser in initialisers.items():
            model = arch.build()
            model.load_state_dict(base_state)
            torch.manual_seed(seed)
            model = apply_lora(model, arch.lora_spec())
            if initialiser is not None:
                initialiser.check_fits(arch)
                state = initialiser.initialise(
                    prompt,
                    arch=arch,
                    model=model,
                    pairs={"A": train[0], "B": train[1], "discriminator": disc},
                    seed=seed,
                )
                load_lora_state(model, state)
            row["inits"][name] = evaluator(model)
        rows.append(row)
    return rows

"""Comparing initialisations on one concept: the same data, steps and evaluation for each,
and the quality of every init before any fine-tuning (step 0)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from denoised_weights.core.interfaces import TargetArchitecture, Task, TaskData, WeightGenerator
from denoised_weights.core.io import write_json
from denoised_weights.core.lora import apply_lora, load_lora_state
from denoised_weights.core.outputs import claim_output
from denoised_weights.core.plugins import Registries
from denoised_weights.pipeline.context import build_metrics, metric_names, resolve_device
from denoised_weights.pipeline.finetune import (
    FinetuneOptions,
    call_initialiser,
    data_digest,
    finetune,
)
from denoised_weights.pipeline.loop import dense_schedule, steps_to_reach


def _ratio(reference: float | None, value: float | None) -> float | None:
    """reference / value; inf when value is 0 (reached at step 0), None if either is missing."""
    if reference is None or value is None:
        return None
    return float("inf") if value <= 0 else reference / value


def compare_inits(
    task: Task,
    arch: TargetArchitecture,
    workdir: str | Path,
    *,
    train: TaskData,
    eval: TaskData,
    label: str,
    prompt: str,
    base: str | Path,
    inits: Sequence[str] = ("scratch", "standard"),
    initialisers: Mapping[str, WeightGenerator | None] | None = None,
    options: FinetuneOptions | None = None,
    progress: Callable[[str], None] | None = None,
    device: str | torch.device | None = None,
    overwrite: bool = False,
    registries: Registries | None = None,
    target_init: str = "scratch",
) -> dict[str, Any]:
    """Fine-tune one concept from every init with the same data and schedule.

    The target is ``target_init``'s final value of the task's target metric (default
    scratch's; the first init's when that init is not run). Returns ``{"concept", "prompt",
    "metric", "target", "target_init", "inits": {init: row}}``; each row has the step and
    seconds at which the init first reaches the target (None if never), its step-0 and final
    value and the speed-up versus the reference. Each run resumes if its folder exists with
    the same settings.
    """
    workdir = Path(workdir)
    opts = options or FinetuneOptions()
    schedule = dense_schedule(opts.max_steps, opts.eval_every)
    run_opts = dataclasses.replace(opts, eval_at=tuple(schedule))
    key, higher = task.target_metric, task.higher_is_better
    settings = {
        "task": task.name,
        "concept": label,
        "train_data": data_digest(train),
        "eval_data": data_digest(eval),
    }
    claim_output(
        workdir,
        "compare",
        settings,
        overwrite=overwrite,
        owned=(*inits, "comparison.json"),
        option="--workdir",
    )
    curves = {}
    for init in inits:
        if progress is not None:
            progress(init)
        curves[init] = finetune(
            task,
            arch,
            workdir / init,
            train=train,
            eval=eval,
            prompt=prompt,
            init=init,
            base=None if init == "scratch" else base,
            initialiser=(initialisers or {}).get(init),
            options=run_opts,
            device=device,
            overwrite=overwrite,
            registries=registries,
        )
    reference = curves.get(target_init) or next(iter(curves.values()))
    target = reference["points"][-1][key]
    ref_hit = steps_to_reach(reference["points"], target, key, higher_is_better=higher)
    rows = {}
    for init, curve in curves.items():
        # an init's own fitting steps on the concept's data count as training steps
        shift = int(curve.get("init_steps", 0))
        pts = [{**p, "step": p["step"] + shift} for p in curve["points"]]
        hit = steps_to_reach(pts, target, key, higher_is_better=higher)
        sustained = steps_to_reach(pts, target, key, sustained=0.02, higher_is_better=higher)
        rows[init] = {
            "step0": pts[0][key],
            "final": pts[-1][key],
            "init_seconds": curve.get("init_seconds", 0.0),
            "total_steps": pts[-1]["step"],
            "total_seconds": pts[-1]["train_seconds"],
            "steps_to_target": hit["step"] if hit else None,
            "seconds_to_target": hit["train_seconds"] if hit else None,
            "steps_to_target_sustained": sustained["step"] if sustained else None,
            "speedup_steps": _ratio(ref_hit["step"], hit["step"]) if hit and ref_hit else None,
            "speedup_seconds": _ratio(ref_hit["train_seconds"], hit["train_seconds"])
            if hit and ref_hit
            else None,
        }
    result = {
        "concept": label,
        "prompt": prompt,
        "metric": key,
        "higher_is_better": higher,
        "target": target,
        "target_init": target_init if target_init in curves else next(iter(curves)),
        "max_steps": opts.max_steps,
        "seed": opts.seed,
        "inits": rows,
    }
    write_json(workdir / "comparison.json", result)
    return result


def format_table(results: Sequence[dict[str, Any]]) -> str:
    """A Markdown table: one row per (concept, init)."""
    metric = results[0].get("metric", "l1") if results else "l1"
    target = results[0].get("target_init", "scratch") if results else "scratch"
    lines = [
        f"| concept | init | {metric} at step 0 | final {metric} | steps to {target}'s "
        f"final {metric} | seconds | speed-up (steps) | steps until it stays within 2% |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def show(v: Any, fmt: str = "{}") -> str:
        return "never" if v is None else fmt.format(v)

    for res in results:
        for init, row in res["inits"].items():
            secs, speed = row["seconds_to_target"], row["speedup_steps"]
            lines.append(
                f"| {res['concept']} | {init} | {row['step0']:.4f} | {row['final']:.4f} | "
                f"{show(row['steps_to_target'])} | {'-' if secs is None else f'{secs:.1f}'} | "
                f"{'-' if speed is None else f'{speed:.1f}x'} | "
                f"{show(row.get('steps_to_target_sustained'))} |"
            )
    return "\n".join(lines)


def step0_quality(
    task: Task,
    arch: TargetArchitecture,
    *,
    base: str | Path,
    concepts: Sequence[str],
    initialisers: Mapping[str, WeightGenerator | None],
    n_train: int = 256,
    n_eval: int = 64,
    seed: int = 0,
    metrics: Sequence[str] | None = None,
    progress: bool = True,
    device: str | torch.device | None = None,
    registries: Registries | None = None,
) -> list[dict[str, Any]]:
    """Eval quality of each init before any fine-tuning, on the given concepts.

    The same data as a comparison (train examples for data-aware inits such as FINE, eval
    examples from held-out inputs). ``None`` as initialiser means peft's default LoRA init
    (``standard``, i.e. the base itself). Returns one row per concept:
    ``{"concept", "prompt", "inits": {init: {metric: value}}}``.
    """
    from tqdm.auto import tqdm

    from denoised_weights.pipeline.base import load_base

    dev = resolve_device(device)
    base_model, carry = load_base(base, arch)
    base_state = {k: v.clone() for k, v in base_model.state_dict().items()}
    metric_objs = build_metrics(metric_names(task, metrics or [task.target_metric]), registries)
    rows = []
    for cid in tqdm(concepts, desc="step-0", unit="concept", disable=not progress):
        concept = task.get_concept(cid)
        train = task.make_data(concept, arch=arch, split="train", n=n_train, seed=seed)
        held = task.make_data(concept, arch=arch, split="eval", n=n_eval, seed=seed + 1)
        row: dict[str, Any] = {
            "concept": concept.id,
            "prompt": concept.prompt,
            "family": concept.family,
            "holdout": concept.holdout,
            "inits": {},
        }
        for name, initialiser in initialisers.items():
            model = arch.build()
            model.load_state_dict(base_state)
            torch.manual_seed(seed)
            model = apply_lora(model.to(dev), arch.lora_spec())
            if initialiser is not None:
                initialiser.check_fits(arch)
                state = call_initialiser(
                    initialiser,
                    concept.prompt,
                    arch=arch,
                    model=model,
                    task=task,
                    data=train,
                    carry=carry,
                    seed=seed,
                )
                load_lora_state(model, state)
            row["inits"][name] = task.evaluate(arch, model, held, metric_objs)
        rows.append(row)
    return rows

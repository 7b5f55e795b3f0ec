"""``dnw benchmark``: the headline experiment, for any task.

For each held-out concept and seed, one model is fine-tuned from every init under the same
data, step budget and (dense early) evaluation schedule. The target is scratch's final value
of the task's target metric, as in the paper (a task preset may name another init as
``target_init``: digits takes the standard LoRA fine-tune's, since its base already scores
above scratch's final value); reached means at least as good, in the metric's direction. For
every init we record the steps and seconds (init time included) to reach it, its step-0 and
final values, and speed-ups versus scratch and versus standard. The summary takes medians over
concepts (each concept's figure is first averaged over its seeds, geometrically for ratios).

Also recorded: step-0 quality of every init on all held-out concepts; a memorization audit
(distances on B·A from the generated LoRA to the concept's own trained LoRA and to the closest
training LoRA); cost accounting (collection and fit time, and when they pay off).

Everything that exists in the output folder is reused, so a killed benchmark resumes.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from denoised_weights.core.errors import DnwError
from denoised_weights.core.interfaces import TargetArchitecture, Task, TaskPreset
from denoised_weights.core.io import read_json, write_json
from denoised_weights.core.outputs import claim_output
from denoised_weights.core.plugins import Registries
from denoised_weights.pipeline.compare import _ratio
from denoised_weights.pipeline.context import check_seed, resolve_architecture
from denoised_weights.pipeline.options import BENCHMARK_INITS, BenchmarkSpec
from denoised_weights.pipeline.significance import median_iqr as _median_iqr

INITS = BENCHMARK_INITS
#: inits that need the weight dataset
DATA_INITS = ("mean", "nearest", "noisy-nearest", "fine", "nearest-param", "interpolate")
RESULTS_VERSION = 2
OWNED = (
    "base",
    "dataset",
    "generator",
    "runs",
    "step0.json",
    "inputs.json",
    "results.json",
    "report.md",
    "plots",
    "grids",
)


def spread(items: Sequence[str], n: int) -> list[str]:
    """A fixed, evenly spread choice of ``n`` items."""
    step = max(1, len(items) // max(n, 1))
    return list(items)[::step][:n]


def held_out_concepts(task: Task, n: int) -> list[str]:
    return spread([c.id for c in task.concepts("held-out")], n)


def check_concepts(task: Task, ids: Sequence[str]) -> list[str]:
    """Ids of held-out concepts (a training concept would not measure generalisation)."""
    out = []
    for cid in ids:
        concept = task.get_concept(cid)
        if concept.split != "held-out":
            raise DnwError(
                f"concept {concept.id!r} is a training concept; the benchmark measures unseen ones "
                f"(see 'dnw list concepts --task {task.name} --split held-out')"
            )
        out.append(concept.id)
    return out


def preset_of(task: Task, name: str) -> TaskPreset:
    presets = task.presets
    if name not in presets:
        known = ", ".join(presets) or "none"
        raise DnwError(f"task {task.name!r} has no benchmark preset {name!r} (presets: {known})")
    return presets[name]


# -- building what is not given --------------------------------------------------------------
def build_inputs(
    task: Task, spec: BenchmarkSpec, echo: Callable[[str], None], registries: Registries | None
) -> tuple[TargetArchitecture, Path, Path | None, Path, dict[str, Any]]:
    """``(arch, base, data, generator, timings)``: the given folders or ones built under out/
    (``data`` is None when nothing needs the weight dataset)."""
    from denoised_weights.core.dataset import WeightDataset
    from denoised_weights.generators.diffusion import GENERATOR_CONFIG
    from denoised_weights.pipeline.base import BASE_CONFIG, BaseOptions, train_base
    from denoised_weights.pipeline.collect import CollectOptions, collect
    from denoised_weights.pipeline.fit import FitConfig, fit

    p = preset_of(task, spec.preset)
    arch = resolve_architecture(task, None, p.arch, registries)
    base = spec.base or spec.out / "base"
    data = spec.data or spec.out / "dataset"
    generator = spec.generator or spec.out / "generator"
    timings: dict[str, Any] = {}
    if spec.base is None and not (base / BASE_CONFIG).is_file():
        echo(f"[build] base model ({p.arch}) in {base}")
        train_base(
            task,
            arch,
            base,
            options=BaseOptions(**{**p.base, "seed": spec.seed}),
            device=spec.device,
            registries=registries,
        )
    timings["base_seconds"] = (
        read_json(base / BASE_CONFIG).get("train_seconds")
        if (base / BASE_CONFIG).is_file()
        else None
    )

    needs_data = spec.generator is None or any(i in DATA_INITS for i in spec.inits)
    if spec.data is None and needs_data:  # collect resumes: stored concepts are skipped
        pick = {k: p.collect.get(k) for k in ("concepts", "max_parts")}
        opts = {k: v for k, v in p.collect.items() if k not in pick}
        ids = [
            c.id
            for c in task.select_concepts("train", n=pick["concepts"], max_parts=pick["max_parts"])
        ]
        echo(f"[build] weight dataset ({len(ids)} training concepts) in {data}")
        collect(
            task,
            arch,
            base,
            data,
            concept_ids=ids,
            opts=CollectOptions(**{**opts, "seed": spec.seed}),
            preset=p.arch,
            workers=spec.workers,
            device=spec.device,
            echo=echo,
            registries=registries,
        )
    if needs_data or spec.data is not None:
        info = WeightDataset(data).info()
        timings.update(
            collection_seconds=info.get("collection_seconds"),
            dataset_concepts=info["concepts"],
            dataset_entries=info["entries"],
        )
    else:
        data = None
    if spec.generator is None and not (generator / GENERATOR_CONFIG).is_file():
        echo(f"[build] generator (dnw fit) in {generator}")
        config = FitConfig(
            **{"preset": p.arch, "text_encoder": p.text_encoder, "seed": spec.seed, **p.fit}
        )
        fit(data, generator, config, device=spec.device, registries=registries)
    timings["fit_seconds"] = read_json(generator / GENERATOR_CONFIG).get("train_seconds")
    return arch, base, data, generator, timings


# -- the experiment --------------------------------------------------------------------------
def run_benchmark(
    task: Task,
    spec: BenchmarkSpec,
    echo: Callable[[str], None] = print,
    registries: Registries | None = None,
) -> dict[str, Any]:
    """Build what is missing, fine-tune every (concept, seed, init), write the outputs."""
    from denoised_weights.pipeline import report
    from denoised_weights.pipeline.finetune import make_initialiser

    p = preset_of(task, spec.preset)
    check_seed(spec.seed)
    from denoised_weights.pipeline.context import registries_or_default

    known = {"scratch", "standard", *registries_or_default(registries).generators.list()}
    unknown = [i for i in spec.inits if i not in known]
    lora_inits = [i for i in spec.inits if i != "scratch"]
    needed = ["scratch", p.target_init]  # scratch: the paper's reference; the target's init
    if unknown or not (lora_inits if spec.step0_only else set(needed) <= set(spec.inits)):
        need = (
            "a LoRA init"
            if spec.step0_only
            else f"{' and '.join(dict.fromkeys(needed))} (the target is {p.target_init}'s "
            "final value)"
        )
        raise DnwError(
            f"--inits must include {need} and be among "
            f"{', '.join(sorted(known))}; got {', '.join(spec.inits)}"
        )
    concept_ids = (
        check_concepts(task, spec.concepts)
        if spec.concepts
        else held_out_concepts(task, p.concepts)
    )
    seeds = spec.seeds or p.seeds
    max_steps = spec.max_steps or p.max_steps
    out = spec.out
    settings = {"task": task.name, "preset": spec.preset, "seed": spec.seed}
    claim_output(
        out,
        "benchmark",
        settings,
        overwrite=spec.overwrite,
        owned=OWNED,
        seed=spec.seed,
        config={**settings, "bench": asdict(p)},
    )
    arch, base, data, generator, timings = build_inputs(task, spec, echo, registries)
    config = {
        "task": task.name,
        "preset": spec.preset,
        "bench": asdict(p),
        "base": str(base),
        "data": str(data),
        "generator": str(generator),
        "concepts": concept_ids,
        "seeds": seeds,
        "inits": list(spec.inits),
        "max_steps": max_steps,
        "metric": task.target_metric,
        "higher_is_better": task.higher_is_better,
        "target_init": p.target_init,
    }
    check_inputs(out, base, data, generator)
    initialisers = {
        n: make_initialiser(n, generator=generator, data=data, registries=registries)
        for n in spec.inits
    }
    if spec.step0_only:  # every init on every held-out concept, no fine-tuning
        step0 = step0_all_held_out(task, arch, base, initialisers, spec, p, out, echo, registries)
        return {"config": config, "step0": step0}
    jobs = [(cid, spec.seed + s) for s in range(seeds) for cid in concept_ids]
    if spec.workers > 1:  # fill the run folders in parallel; the loop below then reads them back
        run_jobs_in_workers(task, spec, arch, base, data, generator, jobs, max_steps)
    comparisons = [
        compare_job(
            task,
            spec,
            arch,
            base,
            initialisers,
            cid,
            seed,
            max_steps,
            registries,
            progress=lambda init, k=k, cid=cid: echo(f"[{k}/{len(jobs)}] {cid}: {init}"),
        )
        for k, (cid, seed) in enumerate(jobs, start=1)
    ]
    step0 = (
        step0_all_held_out(task, arch, base, initialisers, spec, p, out, echo, registries)
        if p.step0_all
        else None
    )
    audit = (
        memorization_audit(task, out, concept_ids, spec.seed, initialisers.get("generated"), data)
        if data is not None and "generated" in initialisers and "standard" in spec.inits
        else None
    )
    results = summarise(
        comparisons, spec.inits, timings, audit, step0, higher_is_better=task.higher_is_better
    )
    results["config"] = config
    results["step0"] = {k: v for k, v in step0.items() if k != "rows"} if step0 else None
    write_json(out / "results.json", results)
    report.write_report(out, results)
    report.plot_curves(out, results)
    report.plot_speedups(out, results)
    report.image_grids(task, arch, out, concept_ids, spec.seed, spec.inits, p)
    return results


def compare_job(
    task, spec, arch, base, initialisers, cid, seed, max_steps, registries=None, progress=None
):
    """Every init fine-tuned on one (concept, seed); resumes, so a finished job is only read."""
    from denoised_weights.pipeline.compare import compare_inits
    from denoised_weights.pipeline.finetune import FinetuneOptions

    p = preset_of(task, spec.preset)
    concept = task.get_concept(cid)
    train = task.make_data(concept, arch=arch, split="train", n=p.n_train, seed=seed)
    held = task.make_data(concept, arch=arch, split="eval", n=p.n_eval, seed=seed + 1)
    options = FinetuneOptions(
        max_steps=max_steps,
        eval_every=p.eval_every,
        batch_size=p.batch_size,
        metrics=tuple(p.metrics) or None,
        seed=seed,
        snapshot_at=tuple(t for t in p.snapshot_at if t <= max_steps),
    )
    return compare_inits(
        task,
        arch,
        spec.out / "runs" / cid / f"seed{seed}",
        train=train,
        eval=held,
        label=concept.id,
        prompt=concept.prompt,
        base=base,
        inits=spec.inits,
        initialisers=initialisers,
        options=options,
        progress=progress,
        device=spec.device,
        registries=registries,
        target_init=p.target_init,
    )


@dataclass
class BenchJob:
    """One fine-tuning worker's share of a benchmark (``--workers``): what it needs to rebuild
    the task, the architecture and the initialisers in its own process, and its jobs."""

    task: str
    task_options: dict[str, Any]
    spec: BenchmarkSpec
    architecture: str
    arch_config: dict[str, Any]
    base: Path
    data: Path | None
    generator: Path
    jobs: list[tuple[str, int]]
    max_steps: int
    threads: int
    position: int = 0


def _job_worker(job: BenchJob) -> None:
    """The body of one fine-tuning worker process: its share of the (concept, seed) jobs."""
    import torch

    from denoised_weights.core.components import create_architecture
    from denoised_weights.pipeline.context import resolve_task
    from denoised_weights.pipeline.finetune import make_initialiser

    torch.set_num_threads(job.threads)
    task = resolve_task(job.task, **job.task_options)
    arch = create_architecture(job.architecture, **job.arch_config)
    spec = job.spec
    initialisers = {
        n: make_initialiser(n, generator=job.generator, data=job.data) for n in spec.inits
    }
    for cid, seed in job.jobs:
        compare_job(task, spec, arch, job.base, initialisers, cid, seed, job.max_steps)
        print(f"[worker {job.position}] {cid} seed {seed}: done", flush=True)


def run_jobs_in_workers(task, spec, arch, base, data, generator, jobs, max_steps) -> None:
    """Run the (concept, seed) jobs in ``spec.workers`` processes of cores/W threads each.

    Every init of one job runs in the same process, one after another, so the seconds of the
    inits a speed-up compares were measured under the same load.
    """
    from denoised_weights.core.workers import run_workers, threads_per_worker

    workers = min(spec.workers, len(jobs))
    job = BenchJob(
        task=task.name,
        task_options=dict(getattr(task, "options", {}) or {}),
        spec=spec,
        architecture=arch.name,
        arch_config=arch.config,
        base=base,
        data=data,
        generator=generator,
        jobs=[],
        max_steps=max_steps,
        threads=threads_per_worker(workers),
    )
    run_workers(
        _job_worker,
        [(replace(job, jobs=jobs[w::workers], position=w),) for w in range(workers)],
        "benchmark",
    )


def _digest(path: Path) -> str | None:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path.is_file() else None


def check_inputs(out: Path, base: Path, data: Path | None, generator: Path) -> None:
    """A benchmark folder belongs to one base, dataset and generator: its finished runs are
    reused, so running it again with other inputs would mix results. Refuse that."""
    from denoised_weights.generators.diffusion import GENERATOR_CONFIG
    from denoised_weights.pipeline.base import BASE_CONFIG

    current = {
        "base": _digest(base / BASE_CONFIG),
        "generator": _digest(generator / GENERATOR_CONFIG),
        "dataset": None
        if data is None
        else {
            "concepts": len(list((data / "manifest").glob("*.json"))),
            "card": _digest(data / "dataset.json"),
        },
    }
    path = out / "inputs.json"
    if path.is_file():
        before = read_json(path)
        changed = [k for k in current if before.get(k) is not None and before.get(k) != current[k]]
        if changed:
            raise DnwError(
                f"{out} holds runs made with another {' and '.join(changed)}; "
                "use a new --out (or move that folder away)"
            )
        current = {k: current[k] if current[k] is not None else before.get(k) for k in current}
    write_json(path, current)


def step0_all_held_out(
    task, arch, base, initialisers, spec, p, out, echo, registries=None
) -> dict[str, Any]:
    """Step-0 value of every LoRA init on every held-out concept (cached in step0.json)."""
    from denoised_weights.pipeline.compare import step0_quality

    path = out / "step0.json"
    inits = {n: i for n, i in initialisers.items() if n != "scratch"}
    if path.is_file():
        cached = read_json(path)
        if list(cached["summary"]) == list(inits) and (
            not spec.concepts or [r["concept"] for r in cached["rows"]] == list(spec.concepts)
        ):
            return cached
    echo("[step-0] every init on every held-out concept, before fine-tuning")
    ids = (
        check_concepts(task, spec.concepts)
        if spec.concepts
        else [c.id for c in task.concepts("held-out")]
    )
    rows = step0_quality(
        task,
        arch,
        base=base,
        concepts=ids,
        initialisers=inits,
        n_train=p.n_train,
        n_eval=p.n_eval,
        seed=spec.seed,
        device=spec.device,
        registries=registries,
    )
    key, sign = task.target_metric, (-1 if task.higher_is_better else 1)
    summary: dict[str, Any] = {}
    for name in inits:
        summary[name] = {"value": _median_iqr([r["inits"][name][key] for r in rows])}
        if "generated" in inits and name != "generated":
            wins = sum(
                sign * r["inits"]["generated"][key] < sign * r["inits"][name][key] for r in rows
            )
            summary[name]["generated_better"] = wins
    from denoised_weights.pipeline.significance import by_split

    splits = by_split(rows, list(inits), key, higher_is_better=task.higher_is_better)
    result = {
        "concepts": len(rows),
        "metric": key,
        "higher_is_better": task.higher_is_better,
        "summary": summary,
        "splits": splits,
        "rows": rows,
    }
    write_json(path, result)
    from denoised_weights.pipeline.report import plot_step0_distance

    plot_step0_distance(out, result, initialisers)
    return result


def memorization_audit(task, out, concept_ids, seed, generated, data) -> list[dict[str, Any]]:
    """Per concept: is the generated LoRA close to the concept's own, or to a training LoRA?"""
    from denoised_weights.core.dataset import WeightDataset
    from denoised_weights.core.lora import load_adapter, lora_distance

    train = list(WeightDataset(data).iter_states())
    zero = {k: v * 0 for k, v in train[0][1].items()}
    rows = []
    for cid in concept_ids:
        own_dir = out / "runs" / cid / f"seed{seed}" / "standard" / "adapter"
        if not own_dir.is_dir():
            continue
        own = load_adapter(own_dir)[0]
        gen = generated.generate(task.get_concept(cid).prompt, seed=seed)
        closest = min((lora_distance(gen, s), e["concept"]) for e, s in train)
        own_closest = min((lora_distance(own, s), e["concept"]) for e, s in train)
        rows.append(
            {
                "concept": cid,
                "generated_to_own": lora_distance(gen, own),
                "generated_to_closest_training": closest[0],
                "closest_training_concept": closest[1],
                "own_to_closest_training": own_closest[0],
                "own_closest_training_concept": own_closest[1],
                "own_norm": lora_distance(own, zero),
                "generated_norm": lora_distance(gen, zero),
            }
        )
    return rows


# -- summary ---------------------------------------------------------------------------------
_SPEEDUPS = (
    "speedup_vs_scratch_steps",
    "speedup_vs_scratch_seconds",
    "speedup_vs_standard_steps",
    "speedup_vs_standard_seconds",
)


def _row(comp: dict[str, Any], init: str) -> dict[str, Any]:
    ref, std, r = comp["inits"]["scratch"], comp["inits"].get("standard"), comp["inits"][init]
    return {
        "concept": comp["concept"],
        "seed": comp["seed"],
        "init": init,
        "target": comp["target"],
        "step0": r["step0"],
        "final": r["final"],
        "init_seconds": r.get("init_seconds", 0.0),
        "steps_to_target": r["steps_to_target"],
        "seconds_to_target": r["seconds_to_target"],
        "speedup_vs_scratch_steps": _ratio(ref["steps_to_target"], r["steps_to_target"]),
        "speedup_vs_scratch_seconds": _ratio(ref["seconds_to_target"], r["seconds_to_target"]),
        "speedup_vs_standard_steps": _ratio(std["steps_to_target"], r["steps_to_target"])
        if std
        else None,
        "speedup_vs_standard_seconds": _ratio(std["seconds_to_target"], r["seconds_to_target"])
        if std
        else None,
        "final_vs_scratch": r["final"] - ref["final"],
    }


def _geo_mean(values: Sequence[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    if any(math.isinf(v) for v in vals):
        return math.inf
    return math.exp(sum(math.log(max(v, 1e-12)) for v in vals) / len(vals))


def _mean_or_none(values: Sequence[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.fmean(vals) if len(vals) == len(values) and vals else None


def _per_concept(rs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "reached": sum(r["steps_to_target"] is not None for r in rs) / len(rs),
        "steps_to_target": _mean_or_none([r["steps_to_target"] for r in rs]),
        "seconds_to_target": _mean_or_none([r["seconds_to_target"] for r in rs]),
        "step0": statistics.fmean(r["step0"] for r in rs),
        "final": statistics.fmean(r["final"] for r in rs),
        "final_vs_scratch": statistics.fmean(r["final_vs_scratch"] for r in rs),
        **{k: _geo_mean([r[k] for r in rs]) for k in _SPEEDUPS},
    }


def summarise(
    comparisons: Sequence[dict[str, Any]],
    inits: Sequence[str],
    timings: dict[str, Any],
    audit: list[dict[str, Any]] | None,
    step0: dict[str, Any] | None,
    *,
    higher_is_better: bool = False,
) -> dict[str, Any]:
    """Per (concept, seed) rows and per-init medians over concepts."""
    rows = [_row(comp, init) for comp in comparisons for init in inits]
    concepts = sorted({r["concept"] for r in rows})
    sign = -1 if higher_is_better else 1
    per_init: dict[str, Any] = {}
    for init in inits:
        by_concept = {
            c: _per_concept([r for r in rows if r["init"] == init and r["concept"] == c])
            for c in concepts
        }
        per_init[init] = {
            "reached_fraction": statistics.fmean(c["reached"] for c in by_concept.values()),
            **{
                k: _median_iqr([c[k] for c in by_concept.values()])
                for k in (
                    "steps_to_target",
                    "seconds_to_target",
                    "step0",
                    "final",
                    "final_vs_scratch",
                    *_SPEEDUPS,
                )
            },
            "final_no_worse_than_scratch": sum(
                sign * c["final_vs_scratch"] <= 0 for c in by_concept.values()
            ),
            "concepts": by_concept,
        }
    summary: dict[str, Any] = {"concepts": len(concepts), "seeds": len({r["seed"] for r in rows})}
    gen, near = per_init.get("generated"), per_init.get("nearest")
    if gen:
        summary["generated"] = {k: gen[k]["median"] for k in (*_SPEEDUPS, "final_vs_scratch")}
        if near:
            ratios = [
                _ratio(
                    near["concepts"][c]["steps_to_target"], gen["concepts"][c]["steps_to_target"]
                )
                for c in concepts
            ]
            summary["generated"]["speedup_vs_nearest_steps"] = _median_iqr(ratios)["median"]
    summary["costs"] = cost_accounting(per_init, timings)
    if audit:
        summary["memorization"] = {
            "closer_to_a_training_lora": sum(
                a["generated_to_closest_training"] < a["generated_to_own"] for a in audit
            ),
            "concepts": len(audit),
            "median_generated_to_own": statistics.median(a["generated_to_own"] for a in audit),
            "median_generated_to_closest_training": statistics.median(
                a["generated_to_closest_training"] for a in audit
            ),
        }
    if step0:
        summary["step0_all_held_out"] = step0["summary"]
    return {
        "version": RESULTS_VERSION,
        "summary": summary,
        "inits": per_init,
        "rows": rows,
        "memorization": audit,
        "timings": timings,
    }


def cost_accounting(per_init: dict[str, Any], timings: dict[str, Any]) -> dict[str, Any]:
    """What collection + fit cost, and after how many new concepts the saved time repays it."""
    fixed = [timings.get("collection_seconds"), timings.get("fit_seconds")]
    out: dict[str, Any] = {
        k: timings.get(k) for k in ("collection_seconds", "fit_seconds", "base_seconds")
    }
    gen = per_init.get("generated")
    if gen is None or None in fixed:
        return out
    cost = sum(fixed)
    out["overhead_seconds"] = cost
    for ref in ("scratch", "standard"):
        if ref not in per_init:
            continue
        saved = [
            per_init[ref]["concepts"][c]["seconds_to_target"] - g["seconds_to_target"]
            for c, g in gen["concepts"].items()
            if g["seconds_to_target"] is not None
            and per_init[ref]["concepts"][c]["seconds_to_target"] is not None
        ]
        med = statistics.median(saved) if saved else None
        out[f"saved_seconds_per_concept_vs_{ref}"] = med
        out[f"break_even_concepts_vs_{ref}"] = math.ceil(cost / med) if med and med > 0 else None
    return out

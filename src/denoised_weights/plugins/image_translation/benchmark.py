"""``dnw benchmark``: the headline experiment.

For each held-out concept and seed, one translator is fine-tuned from every init under the same
data, step budget and (dense early) evaluation schedule. The target quality is scratch's final
eval L1 (pix2pix trained for the whole budget); for every init we record the steps and seconds
(init time included) to reach it, its step-0 and final quality, and speed-ups versus scratch
and versus standard. The summary takes medians over concepts (each concept's figure is first
averaged over its seeds, geometrically for ratios).

Also recorded:

- step-0 quality of every init on all held-out concepts (no fine-tuning at all);
- a memorization audit: for each concept, the distance on B·A from the generated LoRA to that
  concept's own trained LoRA (the standard run's result) and to the closest training LoRA;
- cost accounting: collection and fit time, and after how many new concepts they pay off.

Everything that exists in the output folder is reused, so a killed benchmark resumes.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from denoised_weights.core.errors import DnwError
from denoised_weights.core.io import read_json, write_json, write_run_record

INITS = ("scratch", "standard", "generated", "mean", "nearest", "noisy-nearest", "fine")
#: inits that need the weight dataset
DATA_INITS = ("mean", "nearest", "noisy-nearest", "fine")
RESULTS_VERSION = 1


@dataclass(frozen=True)
class BenchPreset:
    """What ``dnw benchmark --preset`` builds and runs."""

    arch: str
    base_steps: int
    collect: dict[str, Any]
    fit: dict[str, Any]
    concepts: int
    seeds: int
    max_steps: int
    eval_every: int
    n_train: int = 256
    n_eval: int = 64
    metrics: tuple[str, ...] = ("l1", "psnr", "ssim")
    snapshot_at: tuple[int, ...] = (0, 20, 100)
    step0_all: bool = True
    text_encoder: str = "minilm"


BENCH_PRESETS: dict[str, BenchPreset] = {
    # the whole pipeline at toy size: minutes, for tests and CI
    "smoke": BenchPreset(
        arch="tiny",
        base_steps=120,
        collect={
            "concepts": 6,
            "checkpoints": 2,
            "max_steps": 40,
            "eval_every": 20,
            "interval": 10,
            "n_train": 32,
            "n_eval": 16,
        },
        fit={"max_steps": 200, "batch_size": 64, "val_every": 100},
        concepts=2,
        seeds=1,
        max_steps=40,
        eval_every=20,
        n_train=32,
        n_eval=16,
        metrics=("l1",),
        snapshot_at=(0, 20),
        step0_all=False,
    ),
    # dnw demo --from-scratch: the whole pipeline in minutes on a 2-core CPU (a weak generator)
    "demo": BenchPreset(
        arch="small",
        base_steps=1500,
        collect={
            "concepts": 16,
            "checkpoints": 2,
            "max_steps": 100,
            "eval_every": 25,
            "interval": 20,
        },
        fit={"max_minutes": 3.0},
        concepts=1,
        seeds=1,
        max_steps=150,
        eval_every=50,
        snapshot_at=(0, 20, 100),
        step0_all=False,
    ),
    # the README's table on a 2-core CPU
    "small": BenchPreset(
        arch="small",
        base_steps=2500,
        collect={  # every single-edit training concept (191): 80 steps, then 3 checkpoints
            "concepts": None,
            "max_primitives": 1,
            "checkpoints": 3,
            "max_steps": 80,
            "eval_every": 20,
            "interval": 10,
        },
        # fit's small default length (7,500 steps, about 27 minutes here) with clean-sample
        # prediction, read in one step at t = 999 (the README's measurements)
        fit={"prediction_type": "sample"},
        concepts=8,
        seeds=2,
        max_steps=400,
        eval_every=50,
    ),
    # the paper's scale, for a GPU
    "paper": BenchPreset(
        arch="paper",
        base_steps=20000,
        collect={
            "concepts": None,
            "checkpoints": 5,
            "max_steps": 1500,
            "eval_every": 100,
            "interval": 50,
        },
        fit={"max_steps": 100000},
        concepts=16,
        seeds=3,
        max_steps=2000,
        eval_every=100,
        metrics=("l1", "psnr", "ssim", "lpips", "fid"),
        snapshot_at=(0, 100, 500),
    ),
}


@dataclass
class BenchmarkSpec:
    preset: str
    out: Path
    base: Path | None = None
    data: Path | None = None
    generator: Path | None = None
    concepts: list[str] | None = None
    seeds: int | None = None
    inits: tuple[str, ...] = INITS
    max_steps: int | None = None
    workers: int = 1
    seed: int = 0
    photos_dir: Path | None = None
    step0_only: bool = False


def _median_iqr(values: Sequence[float]) -> dict[str, float | None]:
    vals = sorted(v for v in values if v is not None and not math.isnan(v))
    if not vals:
        return {"median": None, "q1": None, "q3": None, "n": 0}
    if len(vals) == 1:
        return {"median": vals[0], "q1": vals[0], "q3": vals[0], "n": 1}
    q = statistics.quantiles(vals, n=4, method="inclusive")
    return {"median": statistics.median(vals), "q1": q[0], "q3": q[2], "n": len(vals)}


def _geo_mean(values: Sequence[float]) -> float | None:
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    if any(math.isinf(v) for v in vals):
        return math.inf
    return math.exp(sum(math.log(max(v, 1e-12)) for v in vals) / len(vals))


def _ratio(reference: float | None, value: float | None) -> float | None:
    """reference / value; inf when value is 0 (reached at step 0), None if either is missing."""
    if reference is None or value is None:
        return None
    return math.inf if value <= 0 else reference / value


# -- building what is not given --------------------------------------------------------------
def build_inputs(
    spec: BenchmarkSpec, echo: Callable[[str], None] = print
) -> tuple[Any, Path, Path | None, Path, dict[str, Any]]:
    """``(arch, base, data, generator, timings)``: the given folders or ones built under out/
    (``data`` is None when nothing needs the weight dataset)."""
    from denoised_weights.api import create_architecture
    from denoised_weights.core.dataset import WeightDataset
    from denoised_weights.generators.diffusion import GENERATOR_CONFIG, fit
    from denoised_weights.plugins.image_translation.collect import CollectOptions, collect
    from denoised_weights.plugins.image_translation.commands import training_concepts
    from denoised_weights.plugins.image_translation.concepts import concepts
    from denoised_weights.plugins.image_translation.training import BASE_CONFIG, train_base

    p = BENCH_PRESETS[spec.preset]
    arch = create_architecture("e2gan", p.arch)
    base = spec.base or spec.out / "base"
    data = spec.data or spec.out / "dataset"
    generator = spec.generator or spec.out / "generator"
    timings: dict[str, Any] = {}

    if spec.base is None and not (base / BASE_CONFIG).is_file():
        echo(f"[build] base model ({p.arch}, {p.base_steps} steps) in {base}")
        train_base(
            arch,
            base,
            concepts=[c.id for c in concepts("train")],
            steps=p.base_steps,
            seed=spec.seed,
        )
    timings["base_seconds"] = (
        read_json(base / BASE_CONFIG).get("train_seconds")
        if (base / BASE_CONFIG).is_file()
        else None
    )

    needs_data = spec.generator is None or any(i in DATA_INITS for i in spec.inits)
    if spec.data is None and needs_data:  # collect resumes: stored concepts are skipped
        opts = {k: v for k, v in p.collect.items() if k not in ("concepts", "max_primitives")}
        ids = training_concepts(p.collect["concepts"], p.collect.get("max_primitives"))
        echo(f"[build] weight dataset ({len(ids)} training concepts) in {data}")
        collect(
            arch, base, data, concept_ids=ids,
            opts=CollectOptions(seed=spec.seed, **opts), preset=p.arch, workers=spec.workers,
            photos_dir=spec.photos_dir,
        )  # fmt: skip
    if needs_data or spec.data is not None:
        info = WeightDataset(data).info()
        timings["collection_seconds"] = info.get("collection_seconds")
        timings["dataset_concepts"] = info["concepts"]
        timings["dataset_entries"] = info["entries"]
    else:
        data = None

    if spec.generator is None and not (generator / GENERATOR_CONFIG).is_file():
        echo(f"[build] generator (dnw fit) in {generator}")
        fit(data, generator, preset=p.arch, text_encoder=p.text_encoder, seed=spec.seed, **p.fit)
    timings["fit_seconds"] = read_json(generator / GENERATOR_CONFIG).get("train_seconds")
    return arch, base, data, generator, timings


# -- the experiment --------------------------------------------------------------------------
def held_out_concepts(n: int) -> list[str]:
    from denoised_weights.plugins.image_translation.commands import demo_concepts

    return demo_concepts(n)


def check_concepts(ids: Sequence[str]) -> list[str]:
    """Catalogue ids of held-out concepts (a training concept would not measure generalisation)."""
    from denoised_weights.plugins.image_translation.concepts import get_concept

    out = []
    for cid in ids:
        concept = get_concept(cid)
        if concept.split != "held-out":
            raise DnwError(
                f"concept {concept.id!r} is a training concept; the benchmark measures unseen ones "
                "(see 'dnw list concepts --split held-out')"
            )
        out.append(concept.id)
    return out


def run_benchmark(spec: BenchmarkSpec, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Build what is missing, fine-tune every (concept, seed, init), write the outputs."""
    from denoised_weights.plugins.image_translation.commands import make_initialiser

    if spec.preset not in BENCH_PRESETS:
        raise DnwError(
            f"unknown benchmark preset {spec.preset!r} (known: {', '.join(BENCH_PRESETS)})"
        )
    p = BENCH_PRESETS[spec.preset]
    unknown = [i for i in spec.inits if i not in INITS]
    if unknown or "scratch" not in spec.inits:
        raise DnwError(
            f"--inits must include scratch and be among {', '.join(INITS)}; got {', '.join(spec.inits)}"
        )
    concept_ids = check_concepts(spec.concepts) if spec.concepts else held_out_concepts(p.concepts)
    seeds = spec.seeds or p.seeds
    max_steps = spec.max_steps or p.max_steps
    out = spec.out
    out.mkdir(parents=True, exist_ok=True)
    arch, base, data, generator, timings = build_inputs(spec, echo)
    config = {
        "preset": spec.preset,
        "bench": asdict(p),
        "base": str(base),
        "data": str(data),
        "generator": str(generator),
        "concepts": concept_ids,
        "seeds": seeds,
        "inits": list(spec.inits),
        "max_steps": max_steps,
    }
    check_inputs(out, base, data, generator)
    write_run_record(out, seed=spec.seed, config=config)
    initialisers = {n: make_initialiser(n, generator=generator, data=data) for n in spec.inits}
    if spec.step0_only:  # every init on every held-out concept, no fine-tuning
        return {
            "config": config,
            "step0": step0_all_held_out(arch, base, initialisers, spec, p, out, echo),
        }
    jobs = [(cid, spec.seed + s) for s in range(seeds) for cid in concept_ids]
    if spec.workers > 1:  # fill the run folders in parallel; the loop below then reads them back
        run_jobs_in_workers(spec, arch, base, data, generator, jobs, max_steps)
    comparisons = [
        compare_job(spec, arch, base, initialisers, cid, seed, max_steps,
                    progress=lambda init, k=k, cid=cid: echo(f"[{k}/{len(jobs)}] {cid}: {init}"))
        for k, (cid, seed) in enumerate(jobs, start=1)
    ]  # fmt: skip
    step0 = None
    if p.step0_all:
        step0 = step0_all_held_out(arch, base, initialisers, spec, p, out, echo)
    audit = (
        memorization_audit(out, concept_ids, spec.seed, initialisers.get("generated"), data, arch)
        if data is not None and "generated" in initialisers and "standard" in spec.inits
        else None
    )
    results = summarise(comparisons, spec.inits, timings, audit, step0)
    results["config"] = config
    results["step0"] = {k: v for k, v in step0.items() if k != "rows"} if step0 else None
    write_json(out / "results.json", results)
    write_report(out, results)
    plot_curves(out, results)
    plot_speedups(out, results)
    image_grids(out, concept_ids, spec.seed, spec.inits, arch, p, spec.photos_dir)
    return results


def compare_job(spec, arch, base, initialisers, cid, seed, max_steps, progress=None):
    """Every init fine-tuned on one (concept, seed); resumes, so a finished job is only read."""
    from denoised_weights.plugins.image_translation.experiments import compare_inits

    p = BENCH_PRESETS[spec.preset]
    return compare_inits(
        arch, spec.out / "runs" / cid / f"seed{seed}", concept=cid, base=base, inits=spec.inits,
        initialisers=initialisers, n_train=p.n_train, n_eval=p.n_eval, max_steps=max_steps,
        eval_every=p.eval_every, seed=seed, metrics=p.metrics, photos_dir=spec.photos_dir,
        snapshot_at=[t for t in p.snapshot_at if t <= max_steps], progress=progress,
    )  # fmt: skip


def _job_worker(spec, arch_name, arch_config, base, data, generator, jobs, max_steps, threads, position):  # fmt: skip
    """The body of one fine-tuning worker process (``--workers``): its share of the jobs."""
    import torch

    from denoised_weights.api import create_architecture
    from denoised_weights.core.workers import exit_with_parent
    from denoised_weights.plugins.image_translation.commands import make_initialiser

    exit_with_parent()
    torch.set_num_threads(threads)
    arch = create_architecture(arch_name, **arch_config)
    initialisers = {n: make_initialiser(n, generator=generator, data=data) for n in spec.inits}
    for cid, seed in jobs:
        compare_job(spec, arch, base, initialisers, cid, seed, max_steps)
        print(f"[worker {position}] {cid} seed {seed}: done", flush=True)


def run_jobs_in_workers(spec, arch, base, data, generator, jobs, max_steps) -> None:
    """Run the (concept, seed) jobs in ``spec.workers`` processes of cores/W threads each.

    Every init of one job runs in the same process, one after another, so the seconds of the
    inits a speed-up compares were measured under the same load.
    """
    from denoised_weights.core.workers import run_workers, threads_per_worker

    workers = min(spec.workers, len(jobs))
    threads = threads_per_worker(workers)
    run_workers(
        _job_worker,
        [
            (
                spec,
                arch.name,
                arch.config,
                base,
                data,
                generator,
                jobs[w::workers],
                max_steps,
                threads,
                w,
            )
            for w in range(workers)
        ],
        "benchmark",
    )


def _digest(path: Path) -> str | None:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path.is_file() else None


def check_inputs(out: Path, base: Path, data: Path | None, generator: Path) -> None:
    """A benchmark folder belongs to one base, dataset and generator: its finished runs are
    reused, so running it again with other inputs would mix results. Refuse that."""
    from denoised_weights.generators.diffusion import GENERATOR_CONFIG
    from denoised_weights.plugins.image_translation.training import BASE_CONFIG

    current = {
        "base": _digest(base / BASE_CONFIG),
        "generator": _digest(generator / GENERATOR_CONFIG),
        "dataset": (
            None
            if data is None
            else {
                "concepts": len(list((data / "manifest").glob("*.json"))),
                "card": _digest(data / "dataset.json"),
            }
        ),
    }
    path = out / "inputs.json"
    if path.is_file():
        before = read_json(path)
        changed = [k for k in current if before.get(k) is not None and before.get(k) != current[k]]
        if changed:
            raise DnwError(
                f"{out} holds runs made with another {' and '.join(changed)}; "
                "use a new --out (or delete that folder)"
            )
        current = {k: current[k] if current[k] is not None else before.get(k) for k in current}
    write_json(path, current)


def step0_all_held_out(arch, base, initialisers, spec, p, out, echo) -> dict[str, Any]:
    """Step-0 eval L1 of every LoRA init on every held-out concept (cached in step0.json)."""
    from denoised_weights.plugins.image_translation.concepts import concepts
    from denoised_weights.plugins.image_translation.experiments import step0_quality

    path = out / "step0.json"
    inits = {n: i for n, i in initialisers.items() if n != "scratch"}
    if path.is_file():
        cached = read_json(path)
        if list(cached["summary"]) == list(inits) and (
            not spec.concepts or [r["concept"] for r in cached["rows"]] == list(spec.concepts)
        ):
            return cached
    echo("[step-0] every init on every held-out concept, before fine-tuning")
    ids = check_concepts(spec.concepts) if spec.concepts else [c.id for c in concepts("held-out")]
    rows = step0_quality(
        arch,
        base=base,
        concepts=ids,
        initialisers=inits,
        n_train=p.n_train,
        n_eval=p.n_eval,
        seed=spec.seed,
        photos_dir=spec.photos_dir,
    )
    summary: dict[str, Any] = {}
    for name in inits:
        vals = [r["inits"][name]["l1"] for r in rows]
        summary[name] = {"l1": _median_iqr(vals)}
        if "generated" in inits and name != "generated":
            wins = sum(r["inits"]["generated"]["l1"] < r["inits"][name]["l1"] for r in rows)
            summary[name]["generated_better"] = wins
    result = {"concepts": len(rows), "summary": summary, "rows": rows}
    write_json(path, result)
    return result


def memorization_audit(out, concept_ids, seed, generated, data, arch) -> list[dict[str, Any]]:
    """Per concept: is the generated LoRA close to the concept's own, or to a training LoRA?"""
    from denoised_weights.core.dataset import WeightDataset
    from denoised_weights.core.lora import load_adapter, lora_distance
    from denoised_weights.plugins.image_translation.concepts import get_concept

    train = list(WeightDataset(data).iter_states())
    zero = {k: v * 0 for k, v in train[0][1].items()}
    rows = []
    for cid in concept_ids:
        own_dir = out / "runs" / cid / f"seed{seed}" / "standard" / "adapter"
        if not own_dir.is_dir():
            continue
        own = load_adapter(own_dir)[0]
        gen = generated.generate(get_concept(cid).prompts[0], seed=seed)
        to_train = [(lora_distance(gen, s), e["concept"]) for e, s in train]
        own_to_train = [(lora_distance(own, s), e["concept"]) for e, s in train]
        closest = min(to_train)
        own_closest = min(own_to_train)
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
def summarise(
    comparisons: Sequence[dict[str, Any]],
    inits: Sequence[str],
    timings: dict[str, Any],
    audit: list[dict[str, Any]] | None,
    step0: dict[str, Any] | None,
) -> dict[str, Any]:
    """Per (concept, seed) rows and per-init medians over concepts."""
    rows = []
    for comp in comparisons:
        ref = comp["inits"]["scratch"]
        std = comp["inits"].get("standard")
        for init in inits:
            r = comp["inits"][init]
            rows.append(
                {
                    "concept": comp["concept"],
                    "seed": comp["seed"],
                    "init": init,
                    "target_l1": comp["target_l1"],
                    "step0_l1": r["step0_l1"],
                    "final_l1": r["final_l1"],
                    "init_seconds": r.get("init_seconds", 0.0),
                    "steps_to_target": r["steps_to_target"],
                    "seconds_to_target": r["seconds_to_target"],
                    "speedup_vs_scratch_steps": _ratio(
                        ref["steps_to_target"], r["steps_to_target"]
                    ),
                    "speedup_vs_scratch_seconds": _ratio(
                        ref["seconds_to_target"], r["seconds_to_target"]
                    ),
                    "speedup_vs_standard_steps": _ratio(
                        std["steps_to_target"], r["steps_to_target"]
                    )
                    if std
                    else None,
                    "speedup_vs_standard_seconds": _ratio(
                        std["seconds_to_target"], r["seconds_to_target"]
                    )
                    if std
                    else None,
                    "final_vs_scratch": r["final_l1"] - ref["final_l1"],
                }
            )
    concepts = sorted({r["concept"] for r in rows})
    per_init: dict[str, Any] = {}
    for init in inits:
        mine = [r for r in rows if r["init"] == init]
        by_concept: dict[str, dict[str, Any]] = {}
        for cid in concepts:
            rs = [r for r in mine if r["concept"] == cid]
            by_concept[cid] = {
                "reached": sum(r["steps_to_target"] is not None for r in rs) / len(rs),
                "steps_to_target": _mean_or_none([r["steps_to_target"] for r in rs]),
                "seconds_to_target": _mean_or_none([r["seconds_to_target"] for r in rs]),
                "step0_l1": statistics.fmean(r["step0_l1"] for r in rs),
                "final_l1": statistics.fmean(r["final_l1"] for r in rs),
                "final_vs_scratch": statistics.fmean(r["final_vs_scratch"] for r in rs),
                **{
                    k: _geo_mean([r[k] for r in rs])
                    for k in (
                        "speedup_vs_scratch_steps",
                        "speedup_vs_scratch_seconds",
                        "speedup_vs_standard_steps",
                        "speedup_vs_standard_seconds",
                    )
                },
            }
        per_init[init] = {
            "reached_fraction": statistics.fmean(c["reached"] for c in by_concept.values()),
            **{
                k: _median_iqr([c[k] for c in by_concept.values()])
                for k in (
                    "steps_to_target",
                    "seconds_to_target",
                    "step0_l1",
                    "final_l1",
                    "final_vs_scratch",
                    "speedup_vs_scratch_steps",
                    "speedup_vs_scratch_seconds",
                    "speedup_vs_standard_steps",
                    "speedup_vs_standard_seconds",
                )
            },
            "final_no_worse_than_scratch": sum(
                c["final_vs_scratch"] <= 0 for c in by_concept.values()
            ),
            "concepts": by_concept,
        }
    summary: dict[str, Any] = {"concepts": len(concepts), "seeds": len({r["seed"] for r in rows})}
    gen, near = per_init.get("generated"), per_init.get("nearest")
    if gen:
        summary["generated"] = {
            "speedup_vs_scratch_steps": gen["speedup_vs_scratch_steps"]["median"],
            "speedup_vs_scratch_seconds": gen["speedup_vs_scratch_seconds"]["median"],
            "speedup_vs_standard_steps": gen["speedup_vs_standard_steps"]["median"],
            "speedup_vs_standard_seconds": gen["speedup_vs_standard_seconds"]["median"],
            "final_vs_scratch": gen["final_vs_scratch"]["median"],
        }
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


def _mean_or_none(values: Sequence[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.fmean(vals) if len(vals) == len(values) and vals else None


def cost_accounting(per_init: dict[str, Any], timings: dict[str, Any]) -> dict[str, Any]:
    """What collection + fit cost, and after how many new concepts the saved time repays it."""
    fixed = [timings.get("collection_seconds"), timings.get("fit_seconds")]
    out: dict[str, Any] = {
        "collection_seconds": timings.get("collection_seconds"),
        "fit_seconds": timings.get("fit_seconds"),
        "base_seconds": timings.get("base_seconds"),
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


# -- outputs ---------------------------------------------------------------------------------
def _fmt(v: Any, digits: int = 1, suffix: str = "") -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and math.isinf(v):
        return "∞"
    if isinstance(v, float):
        return f"{v:.{digits}f}{suffix}"
    return f"{v}{suffix}"


def _cell(stat: dict[str, Any], digits: int = 1, suffix: str = "") -> str:
    if stat["median"] is None:
        return "-"
    return f"{_fmt(stat['median'], digits, suffix)} [{_fmt(stat['q1'], digits)}, {_fmt(stat['q3'], digits)}]"


def step0_table(step0: dict[str, Any]) -> str:
    """Markdown: each init's median step-0 L1 and where the generated init beats it."""
    n = step0["concepts"]
    lines = [
        f"| init | median L1 at step 0 over {n} held-out concepts [IQR] | generated is better on |",
        "|---|---|---|",
    ]
    for name, v in step0["summary"].items():
        better = v.get("generated_better")
        wins = "-" if better is None else f"{better} / {n}"
        lines.append(f"| {name} | {_cell(v['l1'], 4)} | {wins} |")
    return "\n".join(lines)


def headline_table(results: dict[str, Any]) -> str:
    """Markdown: one row per init, medians over concepts [IQR]."""
    lines = [
        "| init | reached target | steps to target | seconds to target | speed-up vs scratch (steps) | (seconds) | speed-up vs standard (steps) | (seconds) | L1 at step 0 | final L1 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for init, r in results["inits"].items():
        lines.append(
            f"| {init} | {r['reached_fraction']:.0%} | {_cell(r['steps_to_target'], 0)} | {_cell(r['seconds_to_target'])} | "
            f"{_cell(r['speedup_vs_scratch_steps'], 1, 'x')} | {_cell(r['speedup_vs_scratch_seconds'], 1, 'x')} | "
            f"{_cell(r['speedup_vs_standard_steps'], 1, 'x')} | {_cell(r['speedup_vs_standard_seconds'], 1, 'x')} | "
            f"{_cell(r['step0_l1'], 4)} | {_cell(r['final_l1'], 4)} |"
        )
    return "\n".join(lines)


def write_report(out: Path, results: dict[str, Any]) -> Path:
    from denoised_weights.plugins.image_translation.experiments import format_table

    s = results["summary"]
    cfg = results.get("config", {})
    parts = [
        "# dnw benchmark",
        "",
        f"Preset `{cfg.get('preset')}`: {s['concepts']} held-out concepts x {s['seeds']} seed(s), "
        f"{cfg.get('max_steps')} steps each. Target: scratch's final eval L1. Medians over "
        "concepts, [interquartile range]; a concept's figure is first averaged over its seeds. "
        "Seconds are training time plus init time (generation for `generated`), evaluation excluded.",
        "",
        headline_table(results),
        "",
    ]
    g = s.get("generated")
    if g:
        parts += [
            "Generated init, medians: "
            f"speed-up {_fmt(g['speedup_vs_scratch_steps'], 1, 'x')} vs scratch in steps "
            f"({_fmt(g['speedup_vs_scratch_seconds'], 1, 'x')} in seconds), "
            f"{_fmt(g['speedup_vs_standard_steps'], 1, 'x')} vs standard "
            f"({_fmt(g['speedup_vs_standard_seconds'], 1, 'x')} in seconds), "
            f"{_fmt(g.get('speedup_vs_nearest_steps'), 1, 'x')} vs nearest (steps); "
            f"final L1 minus scratch's: {_fmt(g['final_vs_scratch'], 4)}.",
            "",
            "Paper (Gong et al. 2024, FID, mean over test concepts): 15.2x faster than pix2pix, "
            "4.6x faster than E2GAN, with better FID.",
            "",
        ]
    c = s.get("costs", {})
    parts += [
        "## Cost accounting",
        "",
        f"- base: {_fmt(c.get('base_seconds'))} s (shared by every init except scratch)",
        f"- collection: {_fmt(c.get('collection_seconds'))} worker-seconds; fit: {_fmt(c.get('fit_seconds'))} s",
        f"- saved per new concept vs standard: {_fmt(c.get('saved_seconds_per_concept_vs_standard'))} s "
        f"-> collection + fit pay off after {_fmt(c.get('break_even_concepts_vs_standard'))} concepts",
        f"- saved per new concept vs scratch: {_fmt(c.get('saved_seconds_per_concept_vs_scratch'))} s "
        f"-> after {_fmt(c.get('break_even_concepts_vs_scratch'))} concepts",
        "",
    ]
    if results.get("memorization"):
        m = s["memorization"]
        parts += [
            "## Memorization audit (distances on B·A over all layers)",
            "",
            f"The generated LoRA is closer to some training LoRA than to the concept's own trained "
            f"LoRA for {m['closer_to_a_training_lora']} of {m['concepts']} concepts.",
            "",
            "| concept | generated to own | generated to closest training | closest training concept | own to closest training | own norm |",
            "|---|---|---|---|---|---|",
        ]
        for a in results["memorization"]:
            parts.append(
                f"| {a['concept']} | {a['generated_to_own']:.3f} | {a['generated_to_closest_training']:.3f} | "
                f"{a['closest_training_concept']} | {a['own_to_closest_training']:.3f} | {a['own_norm']:.3f} |"
            )
        parts.append("")
    if results.get("step0"):
        parts += [
            "## Step 0 on every held-out concept (no fine-tuning)",
            "",
            step0_table(results["step0"]),
            "",
        ]

    parts += ["## Per concept and seed", ""]
    by_key: dict[tuple[str, int], dict[str, Any]] = {}
    for r in results["rows"]:
        entry = by_key.setdefault(
            (r["concept"], r["seed"]),
            {"concept": f"{r['concept']} (seed {r['seed']})", "inits": {}},
        )
        entry["inits"][r["init"]] = {
            "step0_l1": r["step0_l1"],
            "final_l1": r["final_l1"],
            "steps_to_target": r["steps_to_target"],
            "seconds_to_target": r["seconds_to_target"],
            "speedup_steps": r["speedup_vs_scratch_steps"],
            "steps_to_target_sustained": None,
        }
    parts += [
        format_table(list(by_key.values()))
        .replace(" | steps until it stays within 2% |", " |")
        .replace("|---|---|---|---|---|---|---|---|", "|---|---|---|---|---|---|---|")
        .replace(" | never |\n", " |\n"),
        "",
    ]
    parts += ["Plots: `plots/`; image grids (rows: input, target, then each init): `grids/`.", ""]
    path = out / "report.md"
    path.write_text("\n".join(parts))
    return path


def plot_curves(out: Path, results: dict[str, Any]) -> list[Path]:
    """Eval L1 vs seconds, one line per init, one figure per concept (first seed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg = results["config"]
    seed = min(r["seed"] for r in results["rows"])
    paths = []
    for cid in cfg["concepts"]:
        fig, ax = plt.subplots(figsize=(6, 4))
        target = None
        for init in cfg["inits"]:
            curve_path = out / "runs" / cid / f"seed{seed}" / init / "curve.json"
            if not curve_path.is_file():
                continue
            pts = read_json(curve_path)["points"]
            ax.plot(
                [p["train_seconds"] for p in pts], [p["l1"] for p in pts], marker=".", label=init
            )
            if init == "scratch":
                target = pts[-1]["l1"]
        if target is not None:
            ax.axhline(target, color="grey", linestyle="--", linewidth=0.8, label="target")
        ax.set_xscale("symlog", linthresh=1.0)
        ax.set_xlabel("seconds (training + init)")
        ax.set_ylabel("eval L1")
        ax.set_title(cid)
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = out / "plots" / f"curve_{cid}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths


def plot_speedups(out: Path, results: dict[str, Any]) -> Path:
    """Median speed-ups (steps and seconds) vs scratch and vs standard, IQR as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    inits = [i for i in results["inits"] if i != "scratch"]
    keys = [
        ("speedup_vs_scratch_steps", "vs scratch (steps)"),
        ("speedup_vs_scratch_seconds", "vs scratch (seconds)"),
        ("speedup_vs_standard_steps", "vs standard (steps)"),
        ("speedup_vs_standard_seconds", "vs standard (seconds)"),
    ]
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / len(keys)
    cap = 1.0
    for r in results["inits"].values():
        for k, _ in keys:
            for v in (r[k]["median"], r[k]["q3"]):
                if v is not None and math.isfinite(v):
                    cap = max(cap, v)
    cap *= 1.5  # infinite (reached at step 0) is drawn at the top, hatched
    for j, (k, label) in enumerate(keys):
        xs, hs, lo, hi, inf = [], [], [], [], []
        for i, init in enumerate(inits):
            st = results["inits"][init][k]
            if st["median"] is None:
                continue
            med = min(st["median"], cap)
            xs.append(i + (j - 1.5) * width)
            hs.append(med)
            lo.append(med - min(st["q1"], cap))
            hi.append(min(st["q3"], cap) - med)
            inf.append(math.isinf(st["median"]))
        bars = ax.bar(xs, hs, width, yerr=[lo, hi], capsize=2, label=label)
        for bar, is_inf in zip(bars, inf, strict=True):
            if is_inf:
                bar.set_hatch("//")
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(inits)), inits)
    ax.set_yscale("log")
    ax.set_ylabel("speed-up to scratch's final L1 (median)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = out / "plots" / "speedups.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def image_grids(out, concept_ids, seed, inits, arch, p, photos_dir) -> list[Path]:
    """Per concept and snapshot step: input, target, then each init's outputs (labelled)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from denoised_weights.core.io import load_tensors
    from denoised_weights.plugins.image_translation.pairs import CataloguePairs

    paths = []
    for cid in concept_ids:
        held = CataloguePairs(cid, arch.image_size, photos_dir).pairs(
            p.n_eval, split="eval", seed=seed + 1
        )
        a, b = held[0][:8], held[1][:8]
        for step in p.snapshot_at:
            rows, labels = [a, b], ["input", "target"]
            for init in inits:
                f = (
                    out
                    / "runs"
                    / cid
                    / f"seed{seed}"
                    / init
                    / "snapshots"
                    / f"step_{step:05d}.safetensors"
                )
                if f.is_file():
                    rows.append(load_tensors(f)[0]["out"])
                    labels.append(init)
            if len(rows) == 2:
                continue
            fig, axes = plt.subplots(len(rows), 1, figsize=(8, 1.1 * len(rows)))
            for ax, imgs, label in zip(axes, rows, labels, strict=True):
                strip = torch.cat(list(imgs.clamp(0, 1)), dim=2).permute(1, 2, 0).numpy()
                ax.imshow(strip)
                ax.set_xticks([])
                ax.set_yticks([])
                ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
            fig.suptitle(f"{cid}, step {step}", fontsize=9)
            fig.tight_layout()
            fig.subplots_adjust(left=0.16)
            path = out / "grids" / f"{cid}_step{step}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            fig.savefig(path, dpi=100)
            plt.close(fig)
            paths.append(path)
    return paths

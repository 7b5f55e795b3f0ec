"""What a benchmark writes besides ``results.json``: tables, ``report.md``, plots, pictures."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from denoised_weights.core.interfaces import TargetArchitecture, Task, TaskPreset, subset
from denoised_weights.core.io import load_tensors, read_json


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
    return (
        f"{_fmt(stat['median'], digits, suffix)} "
        f"[{_fmt(stat['q1'], digits)}, {_fmt(stat['q3'], digits)}]"
    )


def _metric(results: dict[str, Any]) -> str:
    return results.get("config", {}).get("metric", "l1")


def step0_table(step0: dict[str, Any]) -> str:
    """Markdown: each init's median step-0 value and where the generated init beats it."""
    n, metric = step0["concepts"], step0.get("metric", "l1")
    lines = [
        f"| init | median {metric} at step 0 over {n} "
        "held-out concepts [IQR] | generated is better on |",
        "|---|---|---|",
    ]
    for name, v in step0["summary"].items():
        better = v.get("generated_better")
        wins = "-" if better is None else f"{better} / {n}"
        lines.append(f"| {name} | {_cell(v['value'], 4)} | {wins} |")
    return "\n".join(lines)


def step0_split_table(step0: dict[str, Any], candidate: str = "generated") -> str:
    """Markdown: per hold-out kind, each init's median step-0 value and how ``candidate``
    compares with it (wins, median advantage with its 95% bootstrap interval, Wilcoxon p)."""
    from denoised_weights.pipeline.significance import fmt_p

    metric = step0.get("metric", "l1")
    lines = [
        f"| split | concepts | init | median {metric} at step 0 [IQR] | {candidate} "
        f"better on | median advantage of {candidate} [95% CI] | Wilcoxon p |",
        "|---|---|---|---|---|---|---|",
    ]
    for split, entry in (step0.get("splits") or {}).items():
        for name, stat in entry["inits"].items():
            vs = stat.get(f"{candidate}_vs")
            if vs:
                ci = vs["ci95"]
                wins = f"{vs['wins']} / {vs['n']} ({vs['win_rate']:.0%})"
                adv = f"{vs['median_advantage']:+.4f} [{ci[0]:+.4f}, {ci[1]:+.4f}]"
                p = fmt_p(vs["p_wilcoxon"])
            else:
                wins, adv, p = "-", "-", "-"
            lines.append(
                f"| {split} | {entry['concepts']} | {name} | "
                f"{_cell(stat['value'], 4)} | {wins} | {adv} | {p} |"
            )
    return "\n".join(lines)


def plot_step0_distance(
    out: Path, step0: dict[str, Any], initialisers: dict[str, Any]
) -> Path | None:
    """Step-0 value of each init against the concept's distance to the nearest training
    prompt (1 - cosine of the text embeddings, what retrieval ranks by), coloured by split."""
    nearest = initialisers.get("nearest")
    if nearest is None or not hasattr(nearest, "nearest_concept"):
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = step0.get("metric", "l1")
    rows = step0["rows"]
    dist = [1 - nearest.nearest_concept(r["prompt"])[1] for r in rows]
    for r, d in zip(rows, dist, strict=True):
        r["prompt_distance"] = d
    shown = [n for n in ("generated", "nearest", "mean", "standard") if n in rows[0]["inits"]]
    fig, axes = plt.subplots(
        1, len(shown), figsize=(4 * len(shown), 3.6), sharey=True, squeeze=False
    )
    markers = {"interpolation": "o", "extrapolation": "^", "composition": "s", "family": "D"}
    for ax, name in zip(axes[0], shown, strict=True):
        for split, marker in markers.items():
            pts = [
                (d, r["inits"][name][metric])
                for r, d in zip(rows, dist, strict=True)
                if r.get("holdout") == split
            ]
            if pts:
                ax.scatter(*zip(*pts, strict=True), marker=marker, s=14, label=split, alpha=0.7)
        ax.set_title(name)
        ax.set_xlabel("distance to the nearest training prompt")
    axes[0][0].set_ylabel(f"{metric} at step 0")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    path = out / "plots" / "step0_vs_distance.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def headline_table(results: dict[str, Any]) -> str:
    """Markdown: one row per init, medians over concepts [IQR]."""
    m = _metric(results)
    lines = [
        "| init | reached target | steps to target | seconds to target "
        "| speed-up vs scratch (steps) | (seconds) | speed-up vs "
        f"standard (steps) | (seconds) | {m} at step 0 | final {m} |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for init, r in results["inits"].items():
        lines.append(
            f"| {init} | {r['reached_fraction']:.0%} | "
            f"{_cell(r['steps_to_target'], 0)} | {_cell(r['seconds_to_target'])} | "
            f"{_cell(r['speedup_vs_scratch_steps'], 1, 'x')} | "
            f"{_cell(r['speedup_vs_scratch_seconds'], 1, 'x')} | "
            f"{_cell(r['speedup_vs_standard_steps'], 1, 'x')} | "
            f"{_cell(r['speedup_vs_standard_seconds'], 1, 'x')} | "
            f"{_cell(r['step0'], 4)} | {_cell(r['final'], 4)} |"
        )
    return "\n".join(lines)


def _per_run_table(results: dict[str, Any]) -> str:
    m = _metric(results)
    lines = [
        f"| concept | init | {m} at step 0 | final {m} | steps "
        "to target | seconds | speed-up vs scratch (steps) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results["rows"]:
        steps = "never" if r["steps_to_target"] is None else r["steps_to_target"]
        lines.append(
            f"| {r['concept']} (seed {r['seed']}) | {r['init']} "
            f"| {r['step0']:.4f} | {r['final']:.4f} | "
            f"{steps} | {_fmt(r['seconds_to_target'])} | "
            f"{_fmt(r['speedup_vs_scratch_steps'], 1, 'x')} |"
        )
    return "\n".join(lines)


def write_report(out: Path, results: dict[str, Any]) -> Path:
    s, cfg, m = results["summary"], results.get("config", {}), _metric(results)
    direction = "higher" if cfg.get("higher_is_better") else "lower"
    parts = [
        "# dnw benchmark",
        "",
        f"Task `{cfg.get('task')}`, preset `{cfg.get('preset')}`: "
        f"{s['concepts']} held-out concepts x "
        f"{s['seeds']} seed(s), {cfg.get('max_steps')} "
        f"steps each. Target: {cfg.get('target_init', 'scratch')}'s final eval {m} "
        f"({direction} is better; reached means at least as good). Medians over concepts, "
        "[interquartile range]; a concept's figure is first averaged over its seeds. Seconds are "
        "training time plus init time (generation for `generated`), evaluation excluded.",
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
            f"final {m} minus scratch's: {_fmt(g['final_vs_scratch'], 4)}.",
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
        f"- collection: {_fmt(c.get('collection_seconds'))} "
        f"worker-seconds; fit: {_fmt(c.get('fit_seconds'))} s",
        "- saved per new concept vs standard: "
        f"{_fmt(c.get('saved_seconds_per_concept_vs_standard'))} s "
        "-> collection + fit pay off after "
        f"{_fmt(c.get('break_even_concepts_vs_standard'))} concepts",
        "- saved per new concept vs scratch: "
        f"{_fmt(c.get('saved_seconds_per_concept_vs_scratch'))} s "
        f"-> after {_fmt(c.get('break_even_concepts_vs_scratch'))} concepts",
        "",
    ]
    if results.get("memorization"):
        mem = s["memorization"]
        parts += [
            "## Memorization audit (distances on B·A over all layers)",
            "",
            f"The generated LoRA is closer to some training LoRA than to the concept's own trained "
            f"LoRA for {mem['closer_to_a_training_lora']} of {mem['concepts']} concepts.",
            "",
            "| concept | generated to own | generated to closest training | "
            "closest training concept | own to closest training | own norm |",
            "|---|---|---|---|---|---|",
        ]
        for a in results["memorization"]:
            parts.append(
                f"| {a['concept']} | {a['generated_to_own']:.3f} "
                f"| {a['generated_to_closest_training']:.3f} | "
                f"{a['closest_training_concept']} | "
                f"{a['own_to_closest_training']:.3f} | {a['own_norm']:.3f} |"
            )
        parts.append("")
    if results.get("step0"):
        parts += [
            "## Step 0 on every held-out concept (no fine-tuning)",
            "",
            step0_table(results["step0"]),
            "",
        ]
        if results["step0"].get("splits"):
            parts += ["### By hold-out kind", "", step0_split_table(results["step0"]), ""]
    parts += ["## Per concept and seed", "", _per_run_table(results), ""]
    parts += [
        "Plots: `plots/`; pictures (rows: input, target, then "
        "each init), when the task draws them: `grids/`.",
        "",
    ]
    path = out / "report.md"
    path.write_text("\n".join(parts))
    return path


def plot_curves(out: Path, results: dict[str, Any]) -> list[Path]:
    """Eval target metric vs seconds, one line per init, one figure per concept (first seed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg, m = results["config"], _metric(results)
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
            ax.plot([p["train_seconds"] for p in pts], [p[m] for p in pts], marker=".", label=init)
            if init == cfg.get("target_init", "scratch"):
                target = pts[-1][m]
        if target is not None:
            ax.axhline(target, color="grey", linestyle="--", linewidth=0.8, label="target")
        ax.set_xscale("symlog", linthresh=1.0)
        ax.set_xlabel("seconds (training + init)")
        ax.set_ylabel(f"eval {m}")
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
    target = results["config"].get("target_init", "scratch")
    ax.set_ylabel(f"speed-up to {target}'s final {_metric(results)} (median)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = out / "plots" / "speedups.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def image_grids(
    task: Task,
    arch: TargetArchitecture,
    out: Path,
    concept_ids: list[str],
    seed: int,
    inits: tuple[str, ...],
    p: TaskPreset,
) -> list[Path]:
    """Per concept and snapshot step: the task's picture of every init's outputs."""
    paths = []
    for cid in concept_ids:
        held = task.make_data(
            task.get_concept(cid), arch=arch, split="eval", n=p.n_eval, seed=seed + 1
        )
        view = subset(held, slice(0, 8))
        for step in p.snapshot_at:
            outputs = {}
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
                    outputs[init] = load_tensors(f)[0]["out"]
            if outputs:
                path = task.preview(
                    view,
                    outputs,
                    out / "grids" / f"{cid}_step{step}.png",
                    title=f"{cid}, step {step}",
                )
                if path is not None:
                    paths.append(Path(path))
    return paths

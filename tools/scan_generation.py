"""Scan one-step generation settings (timestep, start) by step-0 eval L1 on tuning concepts.

The tuning concepts are held-out concepts that neither the README's step-0 table (the first 5
of ``demo_concepts``) nor ``dnw benchmark --preset small`` (the first 8) reports, so the chosen
default is not fitted to the reported numbers. Prints a table (median and per-concept L1) and
writes it as JSON.

    python tools/scan_generation.py --generator runs/gen --base runs/base --data runs/dataset \
        --timesteps 100,300,500,700,900 --out runs/scan.json
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path


def tuning_concepts(n: int) -> list[str]:
    import denoised_weights as dnw
    from denoised_weights.pipeline.benchmark import held_out_concepts
    from denoised_weights.plugins.image_translation.concepts import concepts

    task = dnw.create_task("image-translation")
    reported = set(held_out_concepts(task, 5)) | set(held_out_concepts(task, 8))
    held = [c.id for c in concepts("held-out") if c.id not in reported]
    step = max(1, len(held) // n)
    return held[3::step][:n]


class Setting:
    """A generator with fixed generation options, as an initialiser."""

    def __init__(self, generator, **options) -> None:
        self.generator, self.options = generator, options

    def check_fits(self, arch) -> None:
        self.generator.check_fits(arch)

    def initialise(self, prompt, *, seed=0, **_):
        return self.generator.generate(prompt, seed=seed, **self.options)


def main() -> None:
    import denoised_weights as dnw
    from denoised_weights.generators.baselines import MeanInit, NearestInit
    from denoised_weights.generators.diffusion import DiffusionGenerator
    from denoised_weights.pipeline.compare import step0_quality

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--generator", required=True, type=Path)
    ap.add_argument("--base", required=True, type=Path)
    ap.add_argument("--data", type=Path, default=None, help="adds the mean and nearest baselines")
    ap.add_argument("--timesteps", default="100,300,500,700,900")
    ap.add_argument("--starts", default="mean,noise")
    ap.add_argument("--concepts", type=int, default=10)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    gen = DiffusionGenerator(args.generator)
    arch = dnw.create_architecture(gen.info["architecture"], **gen.info["config"])
    inits: dict = {"standard": None}
    if args.data:
        inits["mean"] = MeanInit(args.data)
        inits["nearest"] = NearestInit(args.data)
    for start in args.starts.split(","):
        for t in (int(x) for x in args.timesteps.split(",")):
            inits[f"{start}@{t}"] = Setting(gen, timestep=t, start=start)
    ids = tuning_concepts(args.concepts)
    rows = step0_quality(
        dnw.create_task("image-translation"), arch, base=args.base, concepts=ids, initialisers=inits
    )
    print(f"step-0 eval L1 on {len(ids)} tuning concepts: {', '.join(ids)}")
    print("| init | median | mean |")
    print("|---|---|---|")
    summary = {}
    for name in inits:
        vals = [r["inits"][name]["l1"] for r in rows]
        summary[name] = {"median": statistics.median(vals), "mean": statistics.fmean(vals)}
        print(f"| {name} | {summary[name]['median']:.4f} | {summary[name]['mean']:.4f} |")
    if args.out:
        args.out.write_text(
            json.dumps({"concepts": ids, "summary": summary, "rows": rows}, indent=1)
        )


if __name__ == "__main__":
    main()

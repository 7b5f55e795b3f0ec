"""Can anything built from the generator or the dataset beat ``nearest`` at step 0?

Evaluates, before any fine-tuning, the eval L1 of several initialisers on the tuning concepts of
``tools/scan_generation.py`` (held-out concepts that neither the README's step-0 table nor the
small benchmark reports), and with ``--reported`` also on the README's 5:

``nearest``, ``mean``              the baselines
``generated``                      one-step generation with the generator's defaults
``ddim-K``                         multi-step DDIM (trailing) with K steps (``--ddim``)
``guided-G``                       one step with ``guidance`` G: mean + G·(generated − mean)
                                   (``--guidance``)
``knn-K``                          the average of the K nearest training concepts' adapters
                                   (by prompt embedding), softmax-weighted by similarity / 0.02
``nearest@T``                      retrieval start: the nearest adapter, noised to timestep T
                                   and denoised in one step by the generator (SDEdit) (``--at``)

Prints the median L1 per initialiser and how many concepts each beats ``nearest`` and ``mean`` on.

    python tools/step0_alternatives.py --generator runs/gen --base runs/base --data runs/dataset \
        --ddim 2,5,10,25 --guidance 1.15,1.5,2 --knn 2,3 --at 50,150,300,500
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path


def main() -> None:
    import torch

    import denoised_weights as dnw
    from denoised_weights.generators.baselines import MeanInit, NearestInit
    from denoised_weights.generators.diffusion import DiffusionGenerator, one_step
    from denoised_weights.pipeline.benchmark import held_out_concepts
    from denoised_weights.pipeline.compare import step0_quality

    sys.path.insert(0, str(Path(__file__).parent))
    from scan_generation import Setting, tuning_concepts

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--generator", required=True, type=Path)
    ap.add_argument("--base", required=True, type=Path)
    ap.add_argument("--data", required=True, type=Path)
    ap.add_argument("--ddim", default="", help="DDIM step counts, comma-separated")
    ap.add_argument("--guidance", default="", help="guidance scales, comma-separated")
    ap.add_argument("--knn", default="", help="neighbour counts, comma-separated")
    ap.add_argument("--at", default="", help="retrieval-start timesteps, comma-separated")
    ap.add_argument("--reported", action="store_true", help="also the README's 5 concepts")
    args = ap.parse_args()
    ints = lambda s: [int(x) for x in s.split(",") if x]  # noqa: E731

    gen = DiffusionGenerator(args.generator)
    near = NearestInit(args.data)

    def neighbours(prompt: str, k: int) -> dict[str, float]:
        encoder, vectors, owners = near._bank
        query = torch.nn.functional.normalize(encoder.pooled([prompt]), dim=-1)[0]
        sims = vectors @ query
        best: dict[str, float] = {}
        for i in sims.argsort(descending=True).tolist():
            best.setdefault(owners[i], float(sims[i]))
            if len(best) == k:
                break
        return best

    class Blend:
        def __init__(self, k: int) -> None:
            self.k = k

        def check_fits(self, arch) -> None:
            near.check_fits(arch)

        def initialise(self, prompt, *, seed=0, **_):
            best = neighbours(prompt, self.k)
            w = torch.softmax(torch.tensor(list(best.values())) / 0.02, 0)
            states = [near.dataset.load_concept(c)[-1] for c in best]
            return {
                key: sum(wi * s[key] for wi, s in zip(w, states, strict=True)) for key in states[0]
            }

    class RetrievalStart:
        def __init__(self, t: int) -> None:
            self.t = t

        def check_fits(self, arch) -> None:
            gen.check_fits(arch)

        def initialise(self, prompt, *, seed=0, **_):
            start = (gen.blocker.to_blocks(near.generate(prompt)) - gen.offset) / gen.scale
            n, b = start.shape
            tokens, mask = gen.encoder.encode([prompt])
            noise = torch.randn(n, b, generator=torch.Generator().manual_seed(seed))
            with torch.no_grad():
                x0 = one_step(
                    gen.model,
                    gen.scheduler.alphas_cumprod,
                    gen.info["prediction_type"],
                    start,
                    noise,
                    self.t,
                    torch.arange(n),
                    tokens.expand(n, -1, -1),
                    mask.expand(n, -1),
                )
            return gen.blocker.from_blocks(gen.offset + gen.scale * x0)

    inits = {"nearest": near, "mean": MeanInit(args.data), "generated": gen}
    inits.update({f"ddim-{k}": Setting(gen, steps=k) for k in ints(args.ddim)})
    floats = [float(x) for x in args.guidance.split(",") if x]
    inits.update({f"guided-{g:g}": Setting(gen, guidance=g) for g in floats})
    inits.update({f"knn-{k}": Blend(k) for k in ints(args.knn)})
    inits.update({f"nearest@{t}": RetrievalStart(t) for t in ints(args.at)})
    arch = dnw.create_architecture(gen.info["architecture"], **gen.info["config"])
    sets = [("tuning", tuning_concepts(10))] + (
        [("reported", held_out_concepts(dnw.create_task("image-translation"), 5))]
        if args.reported
        else []
    )
    for label, ids in sets:
        rows = step0_quality(
            dnw.create_task("image-translation"),
            arch,
            base=args.base,
            concepts=ids,
            initialisers=inits,
            progress=False,
        )
        print(f"\n{label}: {len(ids)} concepts ({', '.join(ids)})")
        print("| init | median L1 | beats nearest | beats mean |")
        print("|---|---|---|---|")
        for name in inits:
            l1 = [r["inits"][name]["l1"] for r in rows]
            wins = [
                sum(r["inits"][name]["l1"] < r["inits"][ref]["l1"] for r in rows)
                for ref in ("nearest", "mean")
            ]
            print(
                f"| {name} | {statistics.median(l1):.4f} | "
                f"{wins[0]}/{len(ids)} | {wins[1]}/{len(ids)} |"
            )


if __name__ == "__main__":
    main()

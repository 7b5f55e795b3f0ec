"""What a fitted generator has learned, and whether its dataset is learnable from its prompts.

Prints, in the generator's model space (blocks minus the dataset mean, scaled per group):

1. cosine between the one-step generated LoRA and the concept's own trained LoRA, for a few
   *training* concepts (a generator that fits its data scores well above 0 here);
2. cosine between two checkpoints of one concept, between neighbouring values of one edit, and
   between unrelated edits (is the weight dataset itself structured?);
3. the text encoder's pooled cosine between paraphrases of one concept, and between the same
   template at two values of one edit (can the prompt tell the values apart?);
4. how many principal components carry 50/80/90/95% of the concepts' deviations.

    python tools/probe_generator.py --generator runs/gen --data runs/dataset
"""

from __future__ import annotations

import argparse
from pathlib import Path

TRAIN = ["gamma-2.5", "sepia-1", "pixelate-8", "invert-1", "blur-3", "tint-120-0.6"]
NEIGHBOURS = [("gamma-1.8", "gamma-2.5"), ("sepia-0.8", "sepia-1"), ("blur-2", "blur-3")]
UNRELATED = [("gamma-2.5", "pixelate-8"), ("sepia-1", "invert-1")]


def main() -> None:
    import torch
    import torch.nn.functional as F

    from denoised_weights.core.dataset import WeightDataset
    from denoised_weights.generators.diffusion import DiffusionGenerator

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--generator", required=True, type=Path)
    ap.add_argument("--data", required=True, type=Path)
    ap.add_argument("--timesteps", default="300,700,999")
    args = ap.parse_args()

    gen = DiffusionGenerator(args.generator)
    ds = WeightDataset(args.data)
    have = set(ds.concepts)

    def space(state):
        return ((gen.blocker.to_blocks(state) - gen.offset) / gen.scale).flatten()

    def cos(a, b):
        return round(float(F.cosine_similarity(a, b, 0)), 3)

    prompts = {e["concept"]: e["prompts"] for e in ds.entries}
    train = [c for c in TRAIN if c in have]
    own = {c: space(ds.load_concept(c)[0]) for c in train}
    print("1. cos(generated, own LoRA) on training concepts", ", ".join(train))
    for t in (int(x) for x in args.timesteps.split(",")):
        sims = [cos(space(gen.generate(prompts[c][0], timestep=t)), own[c]) for c in train]
        print(f"   t={t}: {sims}")

    print("2. the dataset: cos between LoRAs")
    for c in train[:3]:
        states = ds.load_concept(c)
        print(f"   {c}: first vs last checkpoint {cos(space(states[0]), space(states[-1]))}")
    for a, b in NEIGHBOURS + UNRELATED:
        if {a, b} <= have:
            print(
                f"   {a} vs {b}: "
                f"{cos(space(ds.load_concept(a)[-1]), space(ds.load_concept(b)[-1]))}"
            )

    print("3. the text encoder: pooled cos")
    enc = gen.encoder
    for a, b in NEIGHBOURS[:1]:
        if {a, b} <= have:
            pa, pb = enc.pooled(prompts[a]), enc.pooled(prompts[b])
            print(
                f"   {a}: paraphrase 0 vs 1 {cos(pa[0], pa[1])}; "
                f"{a} vs {b}, same template {cos(pa[0], pb[0])}"
            )

    deviations = torch.stack([space(s) for _, s in ds.iter_states()])
    deviations = deviations - deviations.mean(0)
    energy = torch.linalg.svdvals(deviations) ** 2
    cum = energy.cumsum(0) / energy.sum()
    counts = [int((cum < f).sum()) + 1 for f in (0.5, 0.8, 0.9, 0.95)]
    print(f"4. principal components for 50/80/90/95% of the deviations: {counts} of {len(energy)}")


if __name__ == "__main__":
    main()

"""Would a more faithful prompt → weights regression beat ``nearest`` at step 0?

Trains only a regression head (no UNet body, no noise: a few milliseconds a step) from the
prompt's pooled embedding to the centred blocks of the weight dataset, holding 20 training
concepts out, and prints the cosine to the last checkpoint of 20 fitted and of the 20 held-out
concepts as it trains. Then it loads the head's output as a LoRA and reports the step-0 eval L1
on the tuning concepts of ``tools/scan_generation.py`` next to ``nearest``, ``mean`` and the
generator's own one-step output.

``add``     the UNet's direct head alone: index and prompt embeddings summed, then an MLP
``basis``   a per-block-index basis times a prompt code from a 3-layer MLP (block_n = W_n·f(p))

    python tools/head_probe.py --head basis --steps 3000 --generator runs/gen --data runs/dataset \
        --base runs/base
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path


def main() -> None:
    import torch
    import torch.nn.functional as F
    from diffusers.models.embeddings import TimestepEmbedding, Timesteps
    from torch import nn

    import denoised_weights as dnw
    from denoised_weights.core.interfaces import masked_mean
    from denoised_weights.generators.baselines import MeanInit, NearestInit
    from denoised_weights.pipeline.compare import step0_quality

    sys.path.insert(0, str(Path(__file__).parent))
    import probe_data
    from scan_generation import tuning_concepts

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--head", choices=["add", "basis"], default="basis")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--generator", required=True, type=Path, help="centring statistics, encoder")
    ap.add_argument("--data", required=True, type=Path)
    ap.add_argument("--base", required=True, type=Path)
    args = ap.parse_args()

    rng = random.Random(0)
    d = probe_data.load(args.generator, args.data)
    gen, entries, x, prompts, bank, train = d.gen, d.entries, d.x, d.prompts, d.bank, d.train
    _, n_blocks, size = x.shape
    pooled = masked_mean(bank.tokens, bank.mask)
    dim = pooled.shape[1]

    class AddHead(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.index = nn.Sequential(Timesteps(64, True, 0), TimestepEmbedding(64, 256))
            self.text = TimestepEmbedding(dim, 256)
            self.out = nn.Sequential(
                nn.SiLU(), nn.Linear(256, 1024), nn.SiLU(), nn.Linear(1024, size)
            )

        def forward(self, n, p):
            return self.out(self.index(n) + self.text(p))

    class BasisHead(nn.Module):
        def __init__(self, k: int = 64, hidden: int = 1024) -> None:
            super().__init__()
            self.code = nn.Sequential(
                nn.Linear(dim, hidden),
                nn.SiLU(),
                nn.Linear(hidden, hidden),
                nn.SiLU(),
                nn.Linear(hidden, k),
            )
            self.basis = nn.Parameter(torch.randn(n_blocks, size, k) * 0.02)
            self.bias = nn.Parameter(torch.zeros(n_blocks, size))

        def forward(self, n, p):
            return torch.einsum("nbk,nk->nb", self.basis[n], self.code(p)) + self.bias[n]

    model = {"add": AddHead, "basis": BasisHead}[args.head]()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)

    @torch.no_grad()
    def predict(prompt: str) -> torch.Tensor:
        tokens, mask = gen.encoder.encode([prompt])
        return model(torch.arange(n_blocks), masked_mean(tokens, mask).expand(n_blocks, -1))

    def cosine(cs: list[str]) -> float:
        sims = []
        for c in cs:
            i = d.last_entry(c)
            sims.append(
                float(F.cosine_similarity(predict(prompts[c][0]).flatten(), x[i].flatten(), 0))
            )
        return statistics.fmean(sims)

    fitted = [c for c in d.concepts if c not in d.held][:20]
    t0 = time.perf_counter()
    for step in range(args.steps + 1):
        ie = torch.tensor(rng.choices(train, k=256))
        n = torch.randint(n_blocks, (256,))
        pidx = torch.tensor(
            [bank.index[rng.choice(prompts[entries[i]["concept"]])] for i in ie.tolist()]
        )
        loss = F.mse_loss(model(n, pooled[pidx]), x[ie, n])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 1000 == 0:
            print(
                f"step {step}: loss {loss.item():.4f}, cosine fitted {cosine(fitted):.3f}, "
                f"held out {cosine(d.held):.3f} ({time.perf_counter() - t0:.0f} s)",
                flush=True,
            )

    class Head:
        def check_fits(self, arch) -> None:
            gen.check_fits(arch)

        def initialise(self, prompt, *, seed=0, **_):
            return gen.blocker.from_blocks(gen.offset + gen.scale * predict(prompt))

    inits = {
        "nearest": NearestInit(args.data),
        "mean": MeanInit(args.data),
        "generated": gen,
        f"head-{args.head}": Head(),
    }
    arch = dnw.create_architecture(gen.info["architecture"], **gen.info["config"])
    ids = tuning_concepts(10)
    rows = step0_quality(
        dnw.create_task("image-translation"),
        arch,
        base=args.base,
        concepts=ids,
        initialisers=inits,
        progress=False,
    )
    print(f"step-0 eval L1 on {len(ids)} tuning concepts: median (beats nearest)")
    for name in inits:
        l1 = [r["inits"][name]["l1"] for r in rows]
        wins = sum(r["inits"][name]["l1"] < r["inits"]["nearest"]["l1"] for r in rows)
        print(f"  {name}: {statistics.median(l1):.4f} ({wins}/{len(ids)})")


if __name__ == "__main__":
    main()

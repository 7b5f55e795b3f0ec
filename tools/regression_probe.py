"""How fast a UNet configuration learns the prompt → block mapping, as plain regression.

Trains a fresh ``WeightUNet1D`` to predict a concept's centred block from pure noise at
t = 999 (clean-sample target), holding 20 training concepts out, and every 500 steps prints
the one-step cosine to the last checkpoint of 20 fitted concepts and of the 20 left out.
This is the ablation behind the README's "How the generator came to learn the prompt" table
(its regression rows); a generator folder supplies the centring statistics.

    python tools/regression_probe.py --data runs/dataset --generator runs/gen \
        --lr 1e-3 --steps 1500 --options '{"pooled_text": true, "emb_head": true}'
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path


def main() -> None:
    import torch

    from denoised_weights.generators.unet1d import WeightUNet1D

    sys.path.insert(0, str(Path(__file__).parent))
    import probe_data

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, type=Path)
    ap.add_argument("--generator", required=True, type=Path, help="for the centring statistics")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--options", default="{}", help="WeightUNet1D options as JSON")
    args = ap.parse_args()

    rng = random.Random(0)
    d = probe_data.load(args.generator, args.data)
    entries, x, prompts, bank, train = d.entries, d.x, d.prompts, d.bank, d.train
    _, n_blocks, size = x.shape
    model = WeightUNet1D(
        block_size=size, text_dim=d.gen.encoder.dim, max_blocks=n_blocks, **json.loads(args.options)
    )
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    t999 = torch.full((256,), 999)

    @torch.no_grad()
    def cosine(cs: list[str]) -> float:
        model.eval()
        sims = []
        for c in cs:
            i = d.last_entry(c)
            tokens, mask = bank.get(torch.full((n_blocks,), bank.index[prompts[c][0]]))
            noise = torch.randn(n_blocks, size, generator=torch.Generator().manual_seed(0))
            out = model(noise, torch.full((n_blocks,), 999), torch.arange(n_blocks), tokens, mask)
            sims.append(
                float(torch.nn.functional.cosine_similarity(out.flatten(), x[i].flatten(), 0))
            )
        model.train()
        return round(sum(sims) / len(sims), 3)

    fitted = [c for c in d.concepts if c not in d.held][:20]
    t0 = time.perf_counter()
    for step in range(args.steps + 1):
        ie = torch.tensor(rng.choices(train, k=256))
        n = torch.randint(n_blocks, (256,))
        pidx = torch.tensor(
            [bank.index[rng.choice(prompts[entries[i]["concept"]])] for i in ie.tolist()]
        )
        tokens, mask = bank.get(pidx)
        loss = torch.nn.functional.mse_loss(
            model(torch.randn(256, size), t999, n, tokens, mask), x[ie, n]
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 500 == 0:
            print(
                f"step {step}: loss {loss.item():.4f}, cosine fitted {cosine(fitted)}, "
                f"left out {cosine(d.held)} ({time.perf_counter() - t0:.0f} s)",
                flush=True,
            )


if __name__ == "__main__":
    main()

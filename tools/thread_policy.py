"""Measure thread policies for a training step, alone and beside another CPU-heavy process.

The workload is one collection step of the small preset (E2GAN small, LoRA rank 4, batch 8,
the pix2pix GAN loss), timed over ``--steps`` steps after a warm-up, in a fresh process per
policy. Each policy runs alone, then beside a competitor: another PyTorch training loop with
torch's defaults (``torch``), or a plain one-core busy loop (``spin``). Prints the median
seconds per step and each figure's ratio to the default policy alone.

    python tools/thread_policy.py [--steps 30] [--competitors torch,spin] [--json out.json]

Run it on an otherwise idle machine: it starts its own competitors.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

POLICIES = {
    "torch default (2 threads, active wait)": {"env": {}, "threads": None},
    "passive wait, 2 threads": {"env": {"OMP_WAIT_POLICY": "PASSIVE"}, "threads": None},
    "1 thread": {"env": {}, "threads": 1},
    "1 thread, passive wait": {"env": {"OMP_WAIT_POLICY": "PASSIVE"}, "threads": 1},
    # libgomp's middle ground: spin this many iterations, then sleep
    "2 threads, spin 10k then sleep": {"env": {"GOMP_SPINCOUNT": "10000"}, "threads": None},
    "2 threads, spin 100k then sleep": {"env": {"GOMP_SPINCOUNT": "100000"}, "threads": None},
}

WORKLOAD = r"""
import json, os, statistics, sys, time
import torch
threads = int(sys.argv[2])
if threads:
    torch.set_num_threads(threads)
import denoised_weights as dnw
from denoised_weights.core.lora import apply_lora
arch = dnw.create_architecture("e2gan", "small")
model = apply_lora(arch.build(0), arch.lora_spec())
state = arch.init_training(model, seed=0, lr=1e-3)
g = torch.Generator().manual_seed(0)
batch = {"A": torch.rand(8, 3, 64, 64, generator=g), "B": torch.rand(8, 3, 64, 64, generator=g)}
for _ in range(5):
    arch.training_step(model, state, batch)
times = []
for _ in range(int(sys.argv[1])):
    t0 = time.perf_counter()
    arch.training_step(model, state, batch)
    times.append(time.perf_counter() - t0)
print(json.dumps({"median": statistics.median(times), "threads": torch.get_num_threads()}))
"""

COMPETITORS = {
    # another PyTorch job with torch's defaults: a conv training loop that never ends
    "torch": r"""
import torch
net = torch.nn.Sequential(*[torch.nn.Conv2d(32, 32, 3, padding=1) for _ in range(4)])
opt = torch.optim.SGD(net.parameters(), lr=1e-3)
x = torch.randn(16, 32, 64, 64)
while True:
    opt.zero_grad(); net(x).square().mean().backward(); opt.step()
""",
    # one core busy in plain Python
    "spin": "while True:\n    pass\n",
}


def run_policy(policy: dict, steps: int) -> dict:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "GOMP_SPINCOUNT")
    }
    env.update(policy["env"])
    out = subprocess.run(
        [sys.executable, "-c", WORKLOAD, str(steps), str(policy["threads"] or 0)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--competitors", default="torch,spin")
    parser.add_argument("--json", default=None)
    parser.add_argument(
        "--policies", default=None, help="semicolon-separated subset (names as printed)"
    )
    args = parser.parse_args()
    rows = []
    for competitor in [None, *[c for c in args.competitors.split(",") if c]]:
        proc = None
        if competitor:
            env = {
                k: v
                for k, v in os.environ.items()
                if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")
            }
            proc = subprocess.Popen([sys.executable, "-c", COMPETITORS[competitor]], env=env)
            time.sleep(3)  # let it reach its loop
        try:
            chosen = args.policies.split(";") if args.policies else list(POLICIES)
            for name, policy in ((n, POLICIES[n]) for n in chosen):
                result = run_policy(policy, args.steps)
                rows.append({"competitor": competitor or "none", "policy": name, **result})
                print(
                    f"{competitor or 'alone':>6} | {name:<40} | {result['median']:.3f} s/step",
                    flush=True,
                )
        finally:
            if proc is not None:
                proc.kill()
                proc.wait()
    base = next(
        r["median"]
        for r in rows
        if r["competitor"] == "none" and r["policy"].startswith("torch default")
    )
    print("\n| beside | policy | s/step | vs default alone |\n|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['competitor']} | {r['policy']} | {r['median']:.3f} | {r['median'] / base:.2f}x |"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()

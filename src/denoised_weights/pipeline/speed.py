"""``dnw speed``: what training costs on this machine, as ratios measured in one run.

Every figure is also given as a fraction of the machine's fp32 matmul rate (a 2048x2048 matmul),
so runs on different machines compare. Steps of different kinds are interleaved round by round
and reported as medians, so a busy machine slows all of them alike.

Rows: the matmul rate; a full training step (scratch); a LoRA step through peft's own layers;
the engine's LoRA step (merged layers, :mod:`denoised_weights.core.fastlora`); the generator's
task-loss fit step (concepts per second, with peft's layers and with the engine's); one-step
generation of every block; and, with ``collect_concepts``, collection in concepts per hour.
The options (:class:`~denoised_weights.pipeline.options.SpeedOptions`) are those of ``dnw speed``.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from denoised_weights.core.engine import architecture_step
from denoised_weights.core.errors import DnwError
from denoised_weights.core.interfaces import TargetArchitecture, Task
from denoised_weights.core.lora import apply_lora
from denoised_weights.pipeline.options import SpeedOptions


def matmul_rate(n: int = 2048, reps: int = 5) -> float:
    """GFLOPS of an ``n x n`` fp32 matmul (median of ``reps``)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / statistics.median(times) / 1e9


def gflop_of(fn: Callable[[], Any]) -> float:
    """GFLOP of one call of ``fn`` (torch's flop counter: matmuls and convolutions)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops() / 1e9


def _interleaved(
    fns: dict[str, Callable[[], Any]], rounds: int, warmup: int = 2
) -> dict[str, float]:
    """Median seconds per call of each function, called round by round."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for r in range(rounds + warmup):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            if r >= warmup:
                times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def _steps(
    task: Task, arch: TargetArchitecture, base: Path, batch_size: int
) -> dict[str, Callable[[], Any]]:
    """One training step each: full network (scratch), LoRA through peft, LoRA on the engine."""
    from denoised_weights.pipeline.base import load_base

    batch = arch.dummy_batch(batch_size)
    out: dict[str, Callable[[], Any]] = {}
    full = arch.build(0)
    out["full step (scratch)"] = architecture_step(
        arch, full, arch.init_training(full, lr=arch.learning_rates["full"])
    )
    for name, fast in (("LoRA step, peft's layers", False), ("LoRA step, engine", True)):
        model = apply_lora(load_base(base, arch)[0], arch.lora_spec(), fast=fast)
        out[name] = architecture_step(
            arch, model, arch.init_training(model, lr=arch.learning_rates["lora"])
        )
    return {k: (lambda f=f: f(batch)) for k, f in out.items()}


def _task_fit_steps(
    task: Task, arch: TargetArchitecture, base: Path, generator: Path, concepts: int, batch: int
) -> dict[str, Callable[[], Any]]:
    """One step of the generator's task-loss fit (``dnw fit --objective task``), on the
    fitted ``generator``: draw ``concepts`` concepts, make their data, generate their LoRAs in
    one batched estimate, apply each to the frozen base, back-propagate the task loss."""
    from denoised_weights.generators.diffusion import DEFAULT_START, DiffusionGenerator
    from denoised_weights.pipeline.task_objective import TaskObjective

    gen = DiffusionGenerator(generator)
    gen.model.train().requires_grad_(True)
    kind = gen.info["prediction_type"]
    centred = bool(gen.info.get("centered", False))
    start = None
    if DEFAULT_START[kind] == "mean":
        start = (0 if centred else gen.mean_blocks) + torch.zeros_like(gen.mean_blocks)
    fit = SimpleNamespace(
        bd=SimpleNamespace(
            n_blocks=gen.blocker.n_blocks,
            block_size=gen.mean_blocks.shape[1],
            encoder=gen.encoder,
            blocker=gen.blocker,
            mean_blocks=gen.mean_blocks,
            scale_blocks=gen.scale,
        ),
        config=SimpleNamespace(
            center=centred, prediction_type=kind, task_concepts=concepts, task_batch=batch, seed=0
        ),
        device=torch.device("cpu"),
        gen_start=start,
        alphas=gen.scheduler.alphas_cumprod,
        train_model=gen.model,
        world=1,
        rank=0,
        conditioner=None,
    )
    opt = torch.optim.AdamW(gen.model.parameters(), lr=1e-5)
    out = {}
    for name, fast in (("task-loss fit, peft's layers", False), ("task-loss fit, engine", True)):
        objective = TaskObjective(task, arch, base, fit, fast=fast)
        counter = iter(range(10**9))

        def step(objective: TaskObjective = objective, counter: Any = counter) -> None:
            loss = objective.loss(next(counter))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        out[name] = step
    return out


def measure_speed(
    task: Task,
    arch: TargetArchitecture,
    options: SpeedOptions,
    *,
    threads: int,
    batch_size: int = 8,
    task_concepts: int = 4,
    task_batch: int = 8,
    echo: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """The speed table's rows on this machine with ``threads`` compute threads (one of
    ``options.threads``): steps on ``options.base`` (a folder; the API fills in the pack's),
    task-loss fit and generation rows when ``options.generator`` is given, collection rows
    when ``options.collect_concepts`` is."""
    if options.base is None:
        raise DnwError("--base DIR is needed (a base model from 'dnw base')")
    base, generator, rounds = Path(options.base), options.generator, options.rounds
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    rate = matmul_rate()
    rows: list[dict[str, Any]] = [
        {"what": "fp32 matmul 2048x2048", "threads": threads, "gflops": rate, "of_matmul": 1.0}
    ]
    echo(f"[{threads} thread(s)] training steps, {rounds} interleaved rounds ...")
    steps = _steps(task, arch, base, batch_size)
    flops = {k: gflop_of(fn) for k, fn in steps.items()}
    seconds = _interleaved(steps, rounds)
    full = seconds["full step (scratch)"]
    for name, sec in seconds.items():
        rows.append(
            {
                "what": name,
                "threads": threads,
                "ms": sec * 1e3,
                "gflop": flops[name],
                "gflops": flops[name] / sec,
                "of_matmul": flops[name] / sec / rate,
                "vs_full": sec / full,
            }
        )
    if generator is not None:
        echo(f"[{threads} thread(s)] task-loss fit steps ...")
        fits = _task_fit_steps(task, arch, base, generator, task_concepts, task_batch)
        fit_flops = {k: gflop_of(fn) for k, fn in fits.items()}
        fit_sec = _interleaved(fits, max(3, rounds // 4), warmup=1)
        peft = fit_sec["task-loss fit, peft's layers"]
        for name, sec in fit_sec.items():
            rows.append(
                {
                    "what": name,
                    "threads": threads,
                    "ms": sec * 1e3,
                    "gflop": fit_flops[name],
                    "gflops": fit_flops[name] / sec,
                    "of_matmul": fit_flops[name] / sec / rate,
                    "concepts_per_s": task_concepts / sec,
                    "vs_peft": peft / sec,
                }
            )
        rows.append(_generation_row(generator, threads, rate, rounds))
    if options.collect_concepts:
        rows.append(
            _collection_row(
                task, arch, base, options.collect_concepts, options.collect_workers, threads, echo
            )
        )
    return rows


def _generation_row(generator: Path, threads: int, rate: float, rounds: int) -> dict[str, Any]:
    from denoised_weights.generators.diffusion import DiffusionGenerator

    gen = DiffusionGenerator(generator)
    prompt = "a photo in warm sepia tones"
    gen.generate(prompt)
    flop = gflop_of(lambda: gen.generate(prompt))
    sec = _interleaved({"g": lambda: gen.generate(prompt)}, max(3, rounds // 2), warmup=1)["g"]
    return {
        "what": f"one-step generation ({gen.blocker.n_blocks} blocks)",
        "threads": threads,
        "ms": sec * 1e3,
        "gflop": flop,
        "gflops": flop / sec,
        "of_matmul": flop / sec / rate,
    }


def _collection_row(
    task: Task,
    arch: TargetArchitecture,
    base: Path,
    n: int,
    workers: int,
    threads: int,
    echo: Callable[[str], None],
) -> dict[str, Any]:
    """The README recipe (80 steps, evaluation every 20, 3 checkpoints 10 apart) on ``n``
    single-edit training concepts with ``workers`` processes, into a temporary folder."""
    from denoised_weights.pipeline.collect import CollectOptions, collect

    concepts = [c.id for c in task.concepts("train") if "+" not in c.id][:n]
    opts = CollectOptions(
        checkpoints=3, max_steps=80, eval_every=20, interval=10, lr=arch.learning_rates["lora"]
    )
    echo(f"collection: {len(concepts)} concepts, {workers} worker(s) ...")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        collect(
            task,
            arch,
            base,
            Path(tmp) / "dataset",
            concept_ids=concepts,
            opts=opts,
            workers=workers,
        )
        sec = time.perf_counter() - t0
    return {
        "what": f"collection ({len(concepts)} concepts, {workers} workers)",
        "threads": threads,
        "seconds": sec,
        "concepts_per_hour": len(concepts) / sec * 3600,
    }


def format_table(rows: list[dict[str, Any]]) -> str:
    """The rows as a Markdown table."""

    def cell(row: dict[str, Any], key: str, fmt: str) -> str:
        return format(row[key], fmt) if row.get(key) is not None else ""

    lines = [
        "| what | threads | time | GFLOP | GFLOPS | of matmul rate | ratio | throughput |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        time_cell = (
            f"{r['ms']:.1f} ms" if "ms" in r else f"{r['seconds']:.1f} s" if "seconds" in r else ""
        )
        ratio = (
            f"{r['vs_full']:.2f}x full step"
            if "vs_full" in r
            else f"{r['vs_peft']:.2f}x peft's speed"
            if "vs_peft" in r
            else ""
        )
        through = (
            f"{r['concepts_per_s']:.2f} concepts/s"
            if "concepts_per_s" in r
            else f"{r['concepts_per_hour']:.0f} concepts/h"
            if "concepts_per_hour" in r
            else ""
        )
        lines.append(
            f"| {r['what']} | {r['threads']} | {time_cell} | {cell(r, 'gflop', '.2f')} | "
            f"{cell(r, 'gflops', '.1f')} | {cell(r, 'of_matmul', '.0%')} | {ratio} | {through} |"
        )
    return "\n".join(lines)

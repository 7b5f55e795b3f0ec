"""Fine-tuning one concept from any init: scratch, standard, or a registered initialiser.

``scratch`` trains the full network from random weights (pix2pix for the GAN task). Every other
init trains only a LoRA on the base model: ``standard`` from peft's default init (E2GAN), the
rest from the state a registered initialiser makes (``generated``, ``mean``, ``nearest``, ...),
whose time counts as training time. The run folder is claimed for its settings (data digests
included), so a rerun resumes or reuses it and a rerun with other settings is refused.

Output folder: ``curve.json`` (step, train_seconds and every metric at step 0 and at each
evaluation), ``adapter/`` (a PEFT adapter) or ``model.safetensors`` (scratch), ``grid.png``
when the task draws pictures, ``snapshots/`` (outputs at chosen steps), ``run.json``.
"""

from __future__ import annotations

import hashlib
import inspect
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from denoised_weights.core.errors import DnwError
from denoised_weights.core.interfaces import (
    TargetArchitecture,
    Task,
    TaskData,
    WeightGenerator,
    subset,
)
from denoised_weights.core.io import read_json, save_tensors, write_json
from denoised_weights.core.lora import apply_lora, load_lora_state, lora_state, save_adapter
from denoised_weights.core.outputs import claim_output
from denoised_weights.core.plugins import Registries
from denoised_weights.pipeline.context import (
    build_metrics,
    metric_names,
    registries_or_default,
    resolve_device,
)
from denoised_weights.pipeline.loop import evaluation_cost, train_loop
from denoised_weights.pipeline.options import FinetuneOptions

BUILTIN_INITS = ("scratch", "standard")
OWNED = ("curve.json", "adapter", "model.safetensors", "grid.png", "snapshots", "checkpoint")
PREVIEW_ITEMS = 8


def data_digest(data: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 prefix of a task's data (keys, shapes, values): which data a run trained on."""
    h = hashlib.sha256()
    for key in sorted(data):
        value = data[key].detach().cpu().contiguous()
        h.update(f"{key}{tuple(value.shape)}{value.dtype}".encode())
        h.update(value.numpy().tobytes())
    return h.hexdigest()[:16]


def make_initialiser(
    init: str,
    *,
    generator: str | Path | None = None,
    data: str | Path | None = None,
    registries: Registries | None = None,
) -> WeightGenerator | None:
    """The registered initialiser behind ``--init`` (None for scratch and standard)."""
    if init in BUILTIN_INITS:
        return None
    registry = registries_or_default(registries).generators
    entry = registry.get(init)  # unknown: a one-line error listing what exists
    params = inspect.signature(entry.load()).parameters
    kwargs: dict[str, Any] = {"registries": registries} if "registries" in params else {}
    if "path" in params:
        if generator is None:
            raise DnwError(f"--init {init} needs --generator DIR (made by 'dnw fit')")
        kwargs["path"] = generator
    if "data" in params:
        if data is None:
            raise DnwError(
                f"--init {init} needs --data DIR (a weight dataset made by 'dnw collect')"
            )
        kwargs["data"] = data
    return registry.create(init, **kwargs)


def initialiser_identity(initialiser: WeightGenerator | None) -> Any:
    """What identifies an initialiser in a run's settings (its class and source folder)."""
    if initialiser is None:
        return None
    source = getattr(initialiser, "path", None) or getattr(
        getattr(initialiser, "dataset", None), "path", None
    )
    ident: dict[str, Any] = {"class": type(initialiser).__name__}
    if source is not None:
        ident["source"] = str(Path(source).resolve())
        for name in ("generator.json", "dataset.json"):
            if (Path(source) / name).is_file():
                ident["digest"] = hashlib.sha256((Path(source) / name).read_bytes()).hexdigest()[
                    :16
                ]
    return ident


def call_initialiser(
    initialiser: WeightGenerator,
    prompt: str,
    *,
    arch: TargetArchitecture,
    model: nn.Module,
    task: Task,
    data: TaskData,
    carry: Mapping[str, torch.Tensor],
    seed: int,
) -> dict[str, torch.Tensor]:
    """``initialiser.initialise`` with the keyword arguments its signature takes (plugins
    written against older versions take fewer)."""
    offered = {
        "arch": arch,
        "model": model,
        "task": task,
        "data": data,
        "carry": carry,
        "seed": seed,
    }
    params = inspect.signature(initialiser.initialise).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        kwargs = offered
    else:
        kwargs = {k: v for k, v in offered.items() if k in params}
        if "pairs" in params:  # the pre-task signature: the data as "pairs"
            kwargs["pairs"] = dict(data)
    return initialiser.initialise(prompt, **kwargs)


def start_model(
    task: Task,
    arch: TargetArchitecture,
    init: str,
    *,
    base: str | Path | None,
    initialiser: WeightGenerator | None,
    prompt: str,
    train: TaskData,
    seed: int,
    device: torch.device,
) -> tuple[nn.Module, dict[str, torch.Tensor], float]:
    """``(model, base training carry, init seconds)``: scratch's network, or the base with LoRA
    loaded from the initialiser."""
    from denoised_weights.pipeline.base import load_base

    torch.manual_seed(seed)
    if init == "scratch":
        return arch.build(seed).to(device), {}, 0.0
    if base is None:
        raise DnwError(f"--init {init} needs --base DIR (a base model from 'dnw base')")
    model, carry = load_base(base, arch, device=device)
    model = apply_lora(model, arch.lora_spec())
    if initialiser is None:
        return model, carry, 0.0
    initialiser.check_fits(arch)
    t0 = time.perf_counter()
    state = call_initialiser(
        initialiser, prompt, arch=arch, model=model, task=task, data=train, carry=carry, seed=seed
    )
    load_lora_state(model, state)
    return model, carry, time.perf_counter() - t0


def finetune(
    task: Task,
    arch: TargetArchitecture,
    out: str | Path,
    *,
    train: TaskData,
    eval: TaskData,
    prompt: str,
    init: str = "standard",
    base: str | Path | None = None,
    initialiser: WeightGenerator | None = None,
    options: FinetuneOptions | None = None,
    fingerprint: str | None = None,
    device: str | torch.device | None = None,
    overwrite: bool = False,
    registries: Registries | None = None,
) -> dict[str, Any]:
    """Fine-tune one concept from ``init``; returns the curve (also written to curve.json)."""
    opts = options or FinetuneOptions()
    out = Path(out)
    if not prompt or not prompt.strip():
        raise DnwError("the prompt is empty; say what the concept is (--prompt TEXT)")
    if init not in BUILTIN_INITS and initialiser is None:
        raise DnwError(f"--init {init} needs its initialiser")
    names = metric_names(task, opts.metrics)
    full = init == "scratch"
    lr = opts.lr or arch.learning_rates["full" if full else "lora"]
    settings = {
        "task": task.name,
        "architecture": arch.name,
        "config": arch.config,
        "init": init,
        "initialiser": initialiser_identity(initialiser),
        "prompt": prompt,
        "base": None if full else str(Path(base).resolve()) if base else None,
        **opts.to_dict(),
        "metrics": names,
        "lr": lr,
        "train_data": data_digest(train),
        "eval_data": data_digest(eval),
    }
    state = claim_output(
        out, "finetune", settings, overwrite=overwrite, owned=OWNED, seed=opts.seed
    )
    if state == "resume" and (out / "curve.json").is_file() and not (out / "checkpoint").exists():
        return read_json(out / "curve.json")  # finished earlier with the same settings
    dev = resolve_device(device)
    model, carry, init_seconds = start_model(
        task,
        arch,
        init,
        base=base,
        initialiser=initialiser,
        prompt=prompt,
        train=train,
        seed=opts.seed,
        device=dev,
    )
    tstate = arch.init_training(model, seed=opts.seed, lr=lr)
    if carry:
        arch.load_training_carry(tstate, carry)
    metrics = build_metrics(names, registries)
    view = subset(eval, slice(0, PREVIEW_ITEMS))
    snap_steps = set(opts.snapshot_at)

    def snapshot(step: int, net: nn.Module) -> None:
        if step in snap_steps:
            outputs = task.predict(arch, net, view)
            save_tensors(out / "snapshots" / f"step_{step:05d}.safetensors", {"out": outputs})

    points, trainer = train_loop(
        arch=arch,
        model=model,
        tstate=tstate,
        batch_fn=lambda step: task.batch(
            train, batch_size=opts.batch_size, seed=opts.seed, step=step
        ),
        max_steps=opts.max_steps,
        eval_every=opts.eval_every,
        evaluate=lambda m: task.evaluate(arch, m, eval, metrics),
        ckpt_dir=out / "checkpoint",
        desc=f"finetune {init}",
        device=dev,
        extra_seconds=init_seconds,
        eval_at=tuple(opts.eval_at) + tuple(opts.snapshot_at),
        on_record=snapshot if snap_steps else None,
        show=task.target_metric,
    )
    write_outputs(
        task,
        arch,
        out,
        model,
        full=full,
        prompt=prompt,
        init=init,
        view=view,
        fingerprint=fingerprint,
    )
    curve = {
        "init": init,
        "prompt": prompt,
        "metric": task.target_metric,
        "init_steps": int(getattr(initialiser, "training_steps", 0) or 0),
        "higher_is_better": task.higher_is_better,
        "init_seconds": round(init_seconds, 4),
        **evaluation_cost(trainer),
        "points": points,
    }
    write_json(out / "curve.json", curve)
    shutil.rmtree(out / "checkpoint", ignore_errors=True)
    return curve


def write_outputs(
    task: Task,
    arch: TargetArchitecture,
    out: Path,
    model: nn.Module,
    *,
    full: bool,
    prompt: str,
    init: str,
    view: TaskData,
    fingerprint: str | None,
) -> None:
    """The trained network (scratch) or its adapter, and the task's preview picture."""
    if full:
        save_tensors(
            out / "model.safetensors", model.state_dict(), {"architecture": arch.name, "init": init}
        )
    else:
        save_adapter(
            out / "adapter",
            lora_state(model),
            arch.lora_spec(),
            fingerprint=fingerprint,
            metadata={"prompt": prompt, "task": task.name},
        )
    task.preview(view, {"output": task.predict(arch, model, view)}, out / "grid.png", title=prompt)


def finetune_concept(
    task: Task,
    arch: TargetArchitecture,
    out: str | Path,
    concept: str,
    *,
    n_train: int = 256,
    n_eval: int = 64,
    data_seed: int = 0,
    **kwargs: Any,
) -> dict[str, Any]:
    """:func:`finetune` on data the task makes for one of its concepts (train examples from
    train inputs, eval examples from held-out inputs)."""
    c = task.get_concept(concept)
    train = task.make_data(c, arch=arch, split="train", n=n_train, seed=data_seed)
    held = task.make_data(c, arch=arch, split="eval", n=n_eval, seed=data_seed + 1)
    kwargs.setdefault("prompt", c.prompt)
    return finetune(task, arch, out, train=train, eval=held, **kwargs)


def final_value(curve: Mapping[str, Any], key: str) -> float | None:
    return curve["points"][-1].get(key)


def summarise_curve(curve: Mapping[str, Any], key: str) -> str:
    first, last = curve["points"][0], curve["points"][-1]
    fmt = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
    return (
        f"{key} {fmt(first.get(key))} -> {fmt(last.get(key))} "
        f"in {last['step']} steps ({last['train_seconds']:.1f} s)"
    )


__all__ = [
    "FinetuneOptions",
    "data_digest",
    "finetune",
    "finetune_concept",
    "make_initialiser",
]

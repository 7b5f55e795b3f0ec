"""The base model: the full network pretrained on a mixture of training concepts (E2GAN's base).

Output folder::

    model.safetensors      the network's state dict
    training.safetensors   what the architecture hands to fine-tunes besides the network
                           (a GAN: its discriminator), see ``TargetArchitecture.training_carry``
    base.json              task, architecture, configuration, concepts, steps, seconds, and the
                           SHA-256 of both tensor files (checked when the base is loaded)
    curve.json, run.json

Resumable: a rerun of the same command continues from ``checkpoint/``.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from denoised_weights.core.dataset import sha256_file
from denoised_weights.core.errors import DnwError
from denoised_weights.core.interfaces import TargetArchitecture, Task
from denoised_weights.core.io import (
    load_tensors,
    read_json_object,
    save_tensors,
    write_json,
)
from denoised_weights.core.outputs import claim_output
from denoised_weights.core.plugins import Registries
from denoised_weights.pipeline.context import build_metrics, resolve_device
from denoised_weights.pipeline.loop import evaluation_cost, train_loop
from denoised_weights.pipeline.options import DEFAULT_BASE_STEPS, BaseOptions

BASE_CONFIG = "base.json"
MODEL_FILE = "model.safetensors"
CARRY_FILE = "training.safetensors"
OWNED = (BASE_CONFIG, MODEL_FILE, CARRY_FILE, "curve.json", "checkpoint")


def train_base(
    task: Task,
    arch: TargetArchitecture,
    out: str | Path,
    *,
    concepts: Sequence[str] | None = None,
    options: BaseOptions | None = None,
    device: str | torch.device | None = None,
    overwrite: bool = False,
    registries: Registries | None = None,
) -> Path:
    """Pretrain the full network on a mixture of ``concepts`` (default: every training concept);
    ``options.steps`` None: :data:`DEFAULT_BASE_STEPS`."""
    opts = options or BaseOptions()
    if opts.steps is None:
        opts = replace(opts, steps=DEFAULT_BASE_STEPS)
    out = Path(out)
    ids = list(concepts) if concepts is not None else [c.id for c in task.concepts("train")]
    if not ids:
        raise DnwError(f"task {task.name!r} has no training concepts to pretrain on")
    picked = [task.get_concept(c) for c in ids]
    lr = opts.lr or arch.learning_rates["full"]
    settings = {
        "task": task.name,
        "task_options": getattr(task, "options", {}),
        "architecture": arch.name,
        "config": arch.config,
        "concepts": [c.id for c in picked],
        **opts.to_dict(),
        "lr": lr,
    }
    state = claim_output(out, "base", settings, overwrite=overwrite, owned=OWNED, seed=opts.seed)
    if state == "resume" and (out / BASE_CONFIG).is_file():
        return out  # finished earlier with the same settings
    dev = resolve_device(device)
    data = task.base_data(arch, picked, n_per_concept=opts.pairs_per_concept, seed=opts.seed)
    eval_data = task.base_eval_data(arch, picked, seed=opts.seed)
    metrics = build_metrics([task.target_metric], registries)
    model = arch.build(opts.seed).to(dev)
    tstate = arch.init_training(model, seed=opts.seed, lr=lr)
    points, trainer = train_loop(
        arch=arch,
        model=model,
        tstate=tstate,
        batch_fn=lambda step: task.batch(
            data, batch_size=opts.batch_size, seed=opts.seed, step=step
        ),
        max_steps=opts.steps,
        eval_every=opts.eval_every,
        evaluate=lambda m: task.evaluate(arch, m, eval_data, metrics),
        ckpt_dir=out / "checkpoint",
        desc="base",
        device=dev,
        show=task.target_metric,
    )
    save_tensors(out / MODEL_FILE, model.state_dict(), {"architecture": arch.name})
    save_tensors(out / CARRY_FILE, arch.training_carry(tstate))
    write_json(
        out / "curve.json",
        {
            "init": "base",
            "prompt": "",
            "init_seconds": 0.0,
            **evaluation_cost(trainer),
            "points": points,
        },
    )
    write_json(
        out / BASE_CONFIG,
        {
            **settings,
            "train_seconds": points[-1]["train_seconds"],
            "sha256": {name: sha256_file(out / name) for name in (MODEL_FILE, CARRY_FILE)},
        },
    )
    shutil.rmtree(out / "checkpoint", ignore_errors=True)
    return out


def base_info(path: str | Path) -> dict[str, Any]:
    """``base.json`` of a finished base (a one-line error when the folder is not one)."""
    path = Path(path)
    if not (path / BASE_CONFIG).is_file():
        raise DnwError(
            f"{path}: not a finished base model (no {BASE_CONFIG}); make one with 'dnw base'"
        )
    return read_json_object(
        path / BASE_CONFIG, "base model description", ("architecture", "config")
    )


def load_base(
    path: str | Path, arch: TargetArchitecture, *, device: str | torch.device | None = None
) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """``(network, training carry)`` of a base made for ``arch``'s network, checked: the
    files match their recorded checksums, every key and shape fits, every value is finite."""
    path = Path(path)
    info = base_info(path)
    stored = {k: v for k, v in info.get("config", {}).items() if k not in arch.lora_config_keys}
    if info.get("architecture") != arch.name or stored != arch.network_config:
        raise DnwError(
            f"{path}: base was trained for {info.get('architecture')} {stored}, "
            f"not {arch.name} {arch.network_config}; pass the matching --preset or another --base"
        )
    if not (path / MODEL_FILE).is_file():
        raise DnwError(
            f"{path}: no {MODEL_FILE} (a base made by an older version or damaged); "
            "make it again with 'dnw base'"
        )
    for name, digest in (info.get("sha256") or {}).items():
        if (path / name).is_file() and sha256_file(path / name) != digest:
            raise DnwError(
                f"{path / name} does not match the checksum in {BASE_CONFIG}: the file is "
                "damaged; restore it or make the base again with 'dnw base'"
            )
    weights, _ = load_tensors(path / MODEL_FILE, finite=True)
    carry = load_tensors(path / CARRY_FILE, finite=True)[0] if (path / CARRY_FILE).is_file() else {}
    model = arch.build()
    expected = model.state_dict()
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    wrong = [k for k in expected if k in weights and weights[k].shape != expected[k].shape]
    if missing or unexpected or wrong:
        what = (
            f"missing {', '.join(missing[:3])}"
            if missing
            else f"unexpected {', '.join(unexpected[:3])}"
            if unexpected
            else f"{wrong[0]} has shape {tuple(weights[wrong[0]].shape)}, "
            f"the network {tuple(expected[wrong[0]].shape)}"
        )
        raise DnwError(
            f"{path / MODEL_FILE} does not fit {arch.name} ({what}); the base is damaged"
        )
    model.load_state_dict(weights)
    return model.to(resolve_device(device)), carry

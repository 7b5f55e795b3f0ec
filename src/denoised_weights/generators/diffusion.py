"""The text-conditioned diffusion model over weight blocks: ``fit`` and one-step generation.

Training (``fit``): every LoRA of the weight dataset goes through the layerwise blocker (its
statistics fitted on the training entries and saved with the model); a sample is a block index
n, the normalised block w_n and one of the concept's prompt paraphrases; the loss is
‖ε − ε̂(α_t·w_n + σ_t·ε, t, n, τ(prompt))‖² with diffusers' DDPM schedule (``clip_sample`` off).

Centring (``center=True``, the default): the model sees w_n − w̄_n divided by each layer
group's spread around the dataset mean w̄, not the blocker's blocks themselves. Every LoRA
starts from the same init, so most of a block is shared by all concepts; centring gives the
concept-specific part unit scale, and the one-step estimate then carries the prompt's
information instead of mostly restating the mean.

Generation: all N blocks are denoised in one batched forward from a noise-biased timestep
t, starting at w_t = α_t·w̄ + σ_t·ε (w̄: the dataset's mean blocks, ``start="mean"``; zero
once centred) or at pure noise (``start="noise"``), and recovered directly as
ŵ0 = (w_t − σ_t·ε̂)/α_t, then un-centred. Multi-step DDIM with trailing timestep spacing is
available as an option.

Output folder::

    model/            diffusers save_pretrained (config.json + safetensors)
    scheduler/        scheduler_config.json
    blocker.json      the block layout and normalisation statistics
    mean_blocks.safetensors   the dataset's mean blocks and (centred) per-position scales
    generator.json    text encoder, fingerprints, architecture, defaults
    val_loss.json, val_loss.png, run.json
"""

from __future__ import annotations

import math
import shutil
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from denoised_weights.core.errors import DnwError, FingerprintMismatchError
from denoised_weights.core.interfaces import WeightGenerator
from denoised_weights.core.io import (
    load_tensors,
    read_json,
    save_tensors,
    write_json,
    write_run_record,
)

GENERATOR_CONFIG = "generator.json"
#: one-step generation defaults per prediction type, chosen by measurement on the small preset
#: (see the README): ε needs α_t well above 0 to divide by; sample and v predictions read the
#: prompt's estimate at the noisiest timestep, where the input carries no information.
DEFAULT_TIMESTEP = {"epsilon": 300, "sample": 999, "v_prediction": 999}
DEFAULT_START = {"epsilon": "mean", "sample": "noise", "v_prediction": "noise"}


#: share of each training batch drawn from the noisiest 10% of timesteps: sample and v
#: predictions are read at t=999, where the estimate is the prompt's alone, so they train there
#: more (measured, README); ε is read at t=300 and trains on uniform timesteps as in the paper
NOISY_SHARE = {"epsilon": 0.0, "sample": 0.5, "v_prediction": 0.5}


def one_step(
    model: Any,
    alphas: torch.Tensor,
    kind: str,
    start: torch.Tensor | None,
    noise: torch.Tensor,
    t: int,
    index: torch.Tensor,
    tokens: torch.Tensor,
    mask: torch.Tensor,
) -> torch.Tensor:
    """The direct estimate ŵ0 of clean blocks from one forward at timestep ``t``, starting
    at w_t = α_t·start + σ_t·noise, or at w_t = noise when ``start`` is None (model space)."""
    a, s = alphas[t].sqrt(), (1 - alphas[t]).sqrt()
    wt = noise if start is None else a * start + s * noise
    pred = model(wt, torch.full((wt.shape[0],), t, device=wt.device), index, tokens, mask)
    if kind == "epsilon":
        return (wt - s * pred) / a
    if kind == "sample":
        return pred
    return a * wt - s * pred  # v-prediction


def _scheduler(prediction_type: str = "epsilon"):
    from diffusers import DDPMScheduler

    return DDPMScheduler(
        num_train_timesteps=1000,
        beta_schedule="squaredcos_cap_v2",
        clip_sample=False,
        prediction_type=prediction_type,
    )


def create_text_encoder(name: str, path: str | None = None):
    from denoised_weights.core.plugins import default_registries

    opts = {"path": path} if path else {}
    return default_registries().text_encoders.create(name, **opts)


class PromptBank:
    """Token embeddings of a fixed list of prompts, computed once (the encoder is frozen)."""

    def __init__(self, encoder: Any, prompts: list[str]) -> None:
        self.prompts = prompts
        self.index = {p: i for i, p in enumerate(prompts)}
        chunks = [encoder.encode(prompts[i : i + 64]) for i in range(0, len(prompts), 64)]
        length = max(t.shape[1] for t, _ in chunks)
        self.tokens = torch.cat([F.pad(t, (0, 0, 0, length - t.shape[1])) for t, _ in chunks])
        self.mask = torch.cat([F.pad(m, (0, length - m.shape[1])) for _, m in chunks])

    def get(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.tokens[idx], self.mask[idx]


def sample_range_of(blocks: torch.Tensor) -> float:
    """The largest |value| of the normalised training blocks: multi-step DDIM clips its
    predicted clean blocks to it (at the last timesteps ᾱ is ~0, and an unclipped estimate
    (w_t − σ·ε̂)/α blows up)."""
    return float(blocks.abs().max())


#: default training steps per preset (small: about 27 minutes on 2 CPU cores)
FIT_STEPS = {"tiny": 500, "small": 7500, "paper": 20000}


def _model_size(preset: str | None) -> dict[str, Any]:
    # pooled_text + emb_head: the prompt also reaches the embedding, and the embedding has a
    # direct path to the output block; measured on the small dataset, the one-step estimate
    # then picks up the prompt within hundreds of steps instead of thousands (README)
    extra = {"pooled_text": True, "emb_head": True}
    return {"tiny": {"channels": (16, 32), "heads": 2, "patch": 16, **extra}}.get(
        preset or "", {"channels": (64, 128), "heads": 4, "patch": 16, **extra}
    )


def fit(
    data: str | Path,
    out: str | Path,
    *,
    text_encoder: str = "minilm",
    text_encoder_path: str | None = None,
    preset: str | None = None,
    block_size: int | None = None,
    batch_size: int = 256,
    lr: float = 1e-3,
    max_steps: int | None = None,
    max_minutes: float | None = None,
    val_every: int = 250,
    prediction_type: str = "epsilon",
    seed: int = 0,
    center: bool = True,
    noisy_share: float | None = None,
    lr_schedule: str = "constant",
    warmup_steps: int = 100,
    model_options: dict[str, Any] | None = None,
) -> Path:
    """Train the block diffusion model on a weight dataset (resumable; DDP under torchrun)."""
    import os

    from diffusers.optimization import get_scheduler
    from tqdm.auto import tqdm

    from denoised_weights.api import (
        bind_blocker,
        create_architecture,
        create_blocker,
        lora_fingerprint,
    )
    from denoised_weights.core.checkpoint import load_checkpoint, save_checkpoint
    from denoised_weights.core.dataset import WeightDataset
    from denoised_weights.generators.unet1d import WeightUNet1D

    if prediction_type not in ("epsilon", "sample", "v_prediction"):
        raise DnwError(
            f"unknown prediction type {prediction_type!r}: epsilon, sample or v_prediction"
        )
    if noisy_share is None:  # where one-step generation reads the model (DEFAULT_TIMESTEP)
        noisy_share = NOISY_SHARE[prediction_type]
    if not 0 <= noisy_share <= 1:
        raise DnwError(f"--noisy-share must be in [0, 1], got {noisy_share}")
    out = Path(out)
    dataset = WeightDataset(data)
    if len(dataset) == 0:
        raise DnwError(f"{data}: the weight dataset has no entries yet; run 'dnw collect' first")
    cfg = dataset.config
    preset = preset or cfg.get("preset")
    arch = create_architecture(cfg["architecture"], **cfg["config"])
    blocker_opts = {"block_size": block_size} if block_size else {}
    blocker = bind_blocker(arch, create_blocker("layerwise", preset, **blocker_opts))
    if lora_fingerprint(arch) != dataset.fingerprint:
        raise FingerprintMismatchError(
            f"{data}: dataset fingerprint does not match its own architecture"
        )

    # training entries vs held-out checkpoints (the last one of each concept) for validation
    entries, states = zip(*dataset.iter_states(), strict=True)
    k_max = max(e["checkpoint"] for e in entries)
    is_val = [k_max > 0 and e["checkpoint"] == k_max for e in entries]
    train_states = [s for s, v in zip(states, is_val, strict=True) if not v]
    blocker.fit(train_states)
    blocks = torch.stack([blocker.to_blocks(s) for s in states])  # [E, N, b]
    encoder = create_text_encoder(text_encoder, text_encoder_path)
    prompts = sorted({p for e in entries for p in e["prompts"]})
    bank = PromptBank(encoder, prompts)
    entry_prompts = [[bank.index[p] for p in e["prompts"]] for e in entries]
    train_idx = [i for i, v in enumerate(is_val) if not v]
    val_idx = [i for i, v in enumerate(is_val) if v] or train_idx[:1]
    n_blocks, b = blocks.shape[1], blocks.shape[2]
    mean_blocks = blocks[train_idx].mean(0)
    if center:
        scale_blocks = deviation_scales(blocks[train_idx] - mean_blocks, blocker.groups)
        blocks = (blocks - mean_blocks) / scale_blocks  # what the model sees
    else:
        scale_blocks = torch.ones_like(mean_blocks)
    sample_range = sample_range_of(blocks[train_idx])

    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        import torch.distributed as dist

        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    device = torch.device(
        f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available() else "cpu"
    )
    options = {**_model_size(preset), **(model_options or {})}
    max_steps = max_steps or FIT_STEPS.get(preset or "", FIT_STEPS["paper"])
    torch.manual_seed(seed)
    model = WeightUNet1D(block_size=b, text_dim=encoder.dim, max_blocks=n_blocks, **options).to(
        device
    )
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    # diffusers' schedules, over max_steps (a --max-minutes stop ends before the decay does)
    lr_sched = get_scheduler(
        lr_schedule,
        opt,
        num_warmup_steps=min(warmup_steps, max_steps),
        num_training_steps=max_steps,
    )
    scheduler = _scheduler(prediction_type)
    alphas = scheduler.alphas_cumprod.to(device)
    train_model = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        train_model = DistributedDataParallel(model)

    def loss_on(idx_e: torch.Tensor, idx_n: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, prompt_idx: torch.Tensor, net) -> torch.Tensor:  # fmt: skip
        w0 = blocks[idx_e, idx_n].to(device)
        a = alphas[t].sqrt()[:, None]
        s = (1 - alphas[t]).sqrt()[:, None]
        wt = a * w0 + s * noise
        tokens, mask = bank.get(prompt_idx)
        pred = net(wt, t, idx_n.to(device), tokens.to(device), mask.to(device))
        target = {"epsilon": noise, "sample": w0, "v_prediction": a * noise - s * w0}[
            prediction_type
        ]
        return F.mse_loss(pred, target)

    # a fixed validation set: held-out checkpoints, fixed blocks, timesteps, noise, prompts
    g = torch.Generator().manual_seed(12345)
    nv = min(1024, len(val_idx) * n_blocks)
    val = {
        "e": torch.tensor(val_idx)[torch.randint(len(val_idx), (nv,), generator=g)],
        "n": torch.randint(n_blocks, (nv,), generator=g),
        "t": torch.randint(1000, (nv,), generator=g),
        "noise": torch.randn(nv, b, generator=g),
    }
    val["p"] = torch.tensor([entry_prompts[e][0] for e in val["e"].tolist()])

    # the prompt-specific signal: one-step generations for a few held-out checkpoints, as
    # cosine to those checkpoints in model space (0 = the model only restates the mean)
    cos_entries = val_idx[:: max(1, len(val_idx) // 8)][:8]
    cos_noise = torch.randn(n_blocks, b, generator=g).to(device)
    cos_index = torch.arange(n_blocks, device=device)
    gen_t = DEFAULT_TIMESTEP[prediction_type]
    origin = 0 if center else mean_blocks  # the dataset mean in model space
    gen_start = None  # pure noise, or the dataset mean plus noise:
    if DEFAULT_START[prediction_type] == "mean":
        gen_start = (origin + torch.zeros(n_blocks, b)).to(device)

    @torch.no_grad()
    def validate() -> dict[str, float]:
        model.eval()
        total = 0.0
        for i in range(0, nv, 512):
            sl = slice(i, i + 512)
            total += loss_on(val["e"][sl], val["n"][sl], val["t"][sl].to(device), val["noise"][sl].to(device), val["p"][sl], model).item() * len(val["e"][sl])  # fmt: skip
        cosines = []
        for e in cos_entries:
            tokens, mask = bank.get(torch.full((n_blocks,), entry_prompts[e][0]))
            x0 = one_step(model, alphas, prediction_type, gen_start, cos_noise, gen_t, cos_index, tokens.to(device), mask.to(device))  # fmt: skip
            deviation = x0.cpu() - origin
            cosines.append(float(F.cosine_similarity(deviation.flatten(), (blocks[e] - origin).flatten(), 0)))  # fmt: skip
        model.train()
        return {"val_loss": total / nv, "val_cos": sum(cosines) / len(cosines)}

    ckpt_dir = out / "checkpoint"
    out.mkdir(parents=True, exist_ok=True)
    meta = (
        load_checkpoint(ckpt_dir, {"model": model, "opt": opt}) if rank == 0 or world == 1 else None
    )
    if world > 1:  # every rank resumes from rank 0's checkpoint
        import torch.distributed as dist

        box = [meta]
        dist.broadcast_object_list(box, src=0)
        meta = box[0]
        for p in model.parameters():
            dist.broadcast(p.data, src=0)
    making = {"center": center, "prediction_type": prediction_type, "noisy_share": noisy_share,
              "lr_schedule": lr_schedule}  # fmt: skip
    if lr_schedule in ("cosine", "linear"):  # laid out over max_steps: extending changes it
        making["max_steps"] = max_steps
    if meta and any(meta.get(k, v) != v for k, v in making.items()):
        raise DnwError(
            f"{ckpt_dir} is an unfinished fit with other options "
            f"({', '.join(f'{k}={meta.get(k)}' for k in making)}); rerun with those or use a new --out"
        )
    if meta and "lr_sched" in meta:
        lr_sched.load_state_dict(meta["lr_sched"])
    step = meta["step"] if meta else 0
    seconds = meta["seconds"] if meta else 0.0
    history: list[dict[str, Any]] = meta["history"] if meta else []
    config = {
        "data": str(data), "text_encoder": text_encoder, "preset": preset, "batch_size": batch_size, "lr": lr,
        "max_steps": max_steps, "max_minutes": max_minutes, "prediction_type": prediction_type, "model": options,
        "block_size": b, "n_blocks": n_blocks, "train_entries": len(train_idx), "val_entries": len(val_idx),
        "world_size": world, "center": center, "noisy_share": noisy_share,
        "lr_schedule": lr_schedule, "warmup_steps": warmup_steps,
    }  # fmt: skip
    if rank == 0:
        write_run_record(out, seed=seed, config=config)
    bar = tqdm(
        total=max_steps, initial=step, desc="fit", unit="step", mininterval=2, disable=rank != 0
    )
    if not history and rank == 0:
        history.append({"step": 0, "seconds": 0.0, **validate(), "train_loss": None})
    start = time.perf_counter() - seconds
    running: list[float] = []

    def record(seconds: float) -> None:
        """Validate and append this step's history entry (train loss since the last one)."""
        history.append({"step": step, "seconds": round(seconds, 2), **validate(), "train_loss": sum(running) / max(1, len(running)), "lr": lr_sched.get_last_lr()[0]})  # fmt: skip
        running.clear()

    while step < max_steps:
        if max_minutes is not None and (time.perf_counter() - start) / 60 >= max_minutes:
            break
        gen = torch.Generator().manual_seed(seed * 1_000_003 + step * world + rank)
        ie = torch.tensor(train_idx)[torch.randint(len(train_idx), (batch_size,), generator=gen)]
        n = torch.randint(n_blocks, (batch_size,), generator=gen)
        t = torch.randint(1000, (batch_size,), generator=gen)
        if noisy_share > 0:  # noise-biased: this share of the batch at the noisiest 10%
            noisy = torch.rand(batch_size, generator=gen) < noisy_share
            t = torch.where(noisy, torch.randint(900, 1000, (batch_size,), generator=gen), t)
        t = t.to(device)
        noise = torch.randn(batch_size, b, generator=gen).to(device)
        # a paraphrase per sample from the step's own generator: a resumed fit draws what an
        # unbroken one would have
        pick = torch.rand(batch_size, generator=gen).tolist()
        prompt_idx = torch.tensor([entry_prompts[e][int(u * len(entry_prompts[e]))] for e, u in zip(ie.tolist(), pick, strict=True)])  # fmt: skip
        loss = loss_on(ie, n, t, noise, prompt_idx, train_model)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        lr_sched.step()
        running.append(loss.item())
        step += 1
        bar.update(1)
        if (step % val_every == 0 or step == max_steps) and rank == 0:
            seconds = time.perf_counter() - start
            record(seconds)
            bar.set_postfix(
                val=f"{history[-1]['val_loss']:.4f}", cos=f"{history[-1]['val_cos']:.3f}"
            )
            save_checkpoint(
                ckpt_dir,
                {"model": model, "opt": opt},
                {
                    "step": step,
                    "seconds": seconds,
                    "history": history,
                    "lr_sched": lr_sched.state_dict(),
                    **making,
                },
            )
    bar.close()
    seconds = time.perf_counter() - start
    if rank == 0:
        if history[-1]["step"] != step:
            record(seconds)
        model.save_pretrained(str(out / "model"), safe_serialization=True)
        scheduler.save_pretrained(str(out / "scheduler"))
        write_json(out / "blocker.json", blocker.layout())
        save_tensors(out / "mean_blocks.safetensors", {"mean": mean_blocks, "scale": scale_blocks})
        write_json(
            out / GENERATOR_CONFIG,
            {
                "architecture": arch.name,
                "preset": preset,
                "config": arch.config,
                "lora_spec": arch.lora_spec().to_dict(),
                "fingerprint": lora_fingerprint(arch, blocker),
                "lora_fingerprint": lora_fingerprint(arch),
                "text_encoder": text_encoder,
                "text_encoder_path": text_encoder_path,
                "prediction_type": prediction_type,
                "centered": center,
                "default_timestep": DEFAULT_TIMESTEP[prediction_type],
                "default_start": DEFAULT_START[prediction_type],
                "n_blocks": n_blocks,
                "block_size": b,
                "sample_range": sample_range,
                "train_seconds": round(seconds, 2),
                "steps": step,
            },
        )
        write_json(out / "val_loss.json", history)
        plot_history(history, out / "val_loss.png")
        shutil.rmtree(ckpt_dir, ignore_errors=True)
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()
    return out


def deviation_scales(deviations: torch.Tensor, groups: list[dict[str, Any]]) -> torch.Tensor:
    """Per block position ``[N, b]``: the spread of ``deviations [E, N, b]`` (states minus
    their mean) over the layer group that position belongs to; 1 for padding and for groups
    that do not vary."""
    flat = deviations.reshape(deviations.shape[0], -1)
    scale = torch.ones(flat.shape[1])
    for g in groups:
        part = flat[:, g["offset"] : g["offset"] + g["numel"]]
        spread = float(part.double().pow(2).mean().sqrt()) if part.numel() else 0.0
        scale[g["offset"] : g["offset"] + g["numel"]] = spread if spread > 1e-12 else 1.0
    return scale.view(deviations.shape[1:])


def plot_history(history: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    steps = [h["step"] for h in history]
    ax.plot(steps, [h["val_loss"] for h in history], label="validation (held-out checkpoints)")
    tr = [(h["step"], h["train_loss"]) for h in history if h.get("train_loss") is not None]
    if tr:
        ax.plot(*zip(*tr, strict=True), label="training (running mean)", alpha=0.7)
    ax.set_xlabel("step")
    ax.set_ylabel("diffusion loss")
    ax.set_yscale("log")
    ax.legend(loc="upper left")
    ax.grid(alpha=0.3)
    cos = [(h["step"], h["val_cos"]) for h in history if h.get("val_cos") is not None]
    if cos:
        ax2 = ax.twinx()
        ax2.plot(
            *zip(*cos, strict=True),
            color="tab:green",
            label="one-step cosine to held-out checkpoints",
        )
        ax2.set_ylabel("cosine")
        ax2.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


class DiffusionGenerator(WeightGenerator):
    """A fitted block diffusion model, loaded from the folder ``fit`` wrote."""

    def __init__(self, path: str | Path, *, text_encoder_path: str | None = None) -> None:
        from denoised_weights.blockers.layerwise import LayerwiseBlocker
        from denoised_weights.generators.unet1d import WeightUNet1D

        self.path = Path(path)
        if not (self.path / GENERATOR_CONFIG).is_file():
            raise DnwError(
                f"{self.path}: not a generator folder (no {GENERATOR_CONFIG}); make one with 'dnw fit'"
            )
        self.info = read_json(self.path / GENERATOR_CONFIG)
        self.model = WeightUNet1D.from_pretrained(str(self.path / "model")).eval()
        self.model.requires_grad_(False)
        self.scheduler = _scheduler(self.info["prediction_type"])
        self.blocker = LayerwiseBlocker.from_layout(read_json(self.path / "blocker.json"))
        stats = load_tensors(self.path / "mean_blocks.safetensors")[0]
        self.mean_blocks = stats["mean"]
        # model space -> blocks: blocks = offset + scale · x (identity for uncentred generators)
        centred = bool(self.info.get("centered", False))
        self.offset = self.mean_blocks if centred else torch.zeros_like(self.mean_blocks)
        self.scale = stats["scale"] if centred else torch.ones_like(self.mean_blocks)
        self.encoder = create_text_encoder(
            self.info["text_encoder"], text_encoder_path or self.info.get("text_encoder_path")
        )

    @property
    def lora_fingerprint(self) -> str:
        return self.info["lora_fingerprint"]

    def check_fits(self, arch: Any) -> None:
        """Refuse to generate for another architecture, preset, rank or layout."""
        from denoised_weights.api import lora_fingerprint

        if lora_fingerprint(arch) != self.lora_fingerprint:
            raise FingerprintMismatchError(
                f"{self.path}: this generator was fitted for {self.info['architecture']} preset "
                f"{self.info.get('preset')} (fingerprint {self.lora_fingerprint}), not for the given network "
                f"({arch.name} {arch.config.get('image_size', '')}); use a generator fitted on its dataset"
            )

    @torch.no_grad()
    def generate_blocks(
        self,
        prompt: str,
        *,
        seed: int = 0,
        steps: int = 1,
        timestep: int | None = None,
        start: str | None = None,
        guidance: float | None = None,
    ) -> torch.Tensor:
        """Normalised blocks ``[N, b]`` for ``prompt``.

        ``guidance`` g > 1 extrapolates away from the dataset mean: w̄ + g·(ŵ − w̄), classifier-
        free guidance with the mean standing in for the unconditional estimate (a one-step
        estimate is a conditional mean, shrunk towards w̄; the README measures g). Default:
        the generator's ``guidance`` in generator.json, else 1 (none).
        """
        g = float(guidance if guidance is not None else self.info.get("guidance", 1.0))
        if not 0 < g <= 10:
            raise DnwError(f"--guidance must be in (0, 10], got {g}")
        blocks = self._sample_blocks(prompt, seed=seed, steps=steps, timestep=timestep, start=start)
        return blocks if g == 1.0 else self.mean_blocks + g * (blocks - self.mean_blocks)

    def _sample_blocks(
        self, prompt: str, *, seed: int, steps: int, timestep: int | None, start: str | None
    ) -> torch.Tensor:
        n, b = self.blocker.n_blocks, self.blocker.block_size
        tokens, mask = self.encoder.encode([prompt])
        tokens, mask = tokens.expand(n, -1, -1), mask.expand(n, -1)
        index = torch.arange(n)
        noise = torch.randn(n, b, generator=torch.Generator().manual_seed(seed))
        alphas = self.scheduler.alphas_cumprod
        if steps == 1:
            kind = self.info["prediction_type"]
            t = int(
                timestep
                if timestep is not None
                else self.info.get("default_timestep", DEFAULT_TIMESTEP[kind])
            )
            if not 0 <= t < len(alphas):
                raise DnwError(f"--timestep must be in [0, {len(alphas) - 1}], got {t}")
            start = start or self.info.get("default_start", DEFAULT_START[kind])
            if start not in ("mean", "noise"):
                raise DnwError(f"unknown start {start!r}: mean or noise")
            # from the dataset mean (in model space) plus noise, or from pure noise
            begin = (self.mean_blocks - self.offset) / self.scale if start == "mean" else None
            x0 = one_step(self.model, alphas, kind, begin, noise, t, index, tokens, mask)
            return self.offset + self.scale * x0
        from diffusers import DDIMScheduler

        sample_range = self.info.get("sample_range")
        ddim = DDIMScheduler.from_config(
            self.scheduler.config,
            timestep_spacing="trailing",
            clip_sample=sample_range is not None,
            clip_sample_range=float(sample_range or 1.0),
        )
        ddim.set_timesteps(steps)
        w = noise
        for t in ddim.timesteps:
            pred = self.model(w, t.expand(n), index, tokens, mask)
            w = ddim.step(pred, t, w).prev_sample
        return self.offset + self.scale * w

    def generate(self, prompt: str, *, seed: int = 0, **options: Any) -> dict[str, torch.Tensor]:
        return self.blocker.from_blocks(self.generate_blocks(prompt, seed=seed, **options))


def timed_generate(
    generator: DiffusionGenerator, prompt: str, out: str | Path, **options: Any
) -> dict[str, Any]:
    """Generate and write a PEFT adapter; ``generation_seconds`` spans prompt encoding to the write."""
    from denoised_weights.core.lora import LoraSpec, save_adapter

    t0 = time.perf_counter()
    state = generator.generate(prompt, **options)
    save_adapter(
        out,
        state,
        LoraSpec.from_dict(generator.info["lora_spec"]),
        fingerprint=generator.lora_fingerprint,
        metadata={
            "prompt": prompt,
            "generator": str(generator.path),
            **{k: v for k, v in options.items() if v is not None},
        },
    )
    seconds = time.perf_counter() - t0
    return {
        "generation_seconds": seconds,
        "n_blocks": generator.blocker.n_blocks,
        "block_size": generator.blocker.block_size,
        "lora_params": sum(v.numel() for v in state.values()),
        "fingerprint": generator.lora_fingerprint,
        "out": str(out),
        "finite": bool(all(torch.isfinite(v).all() for v in state.values())),
        "norm": math.sqrt(sum(float((v**2).sum()) for v in state.values())),
    }

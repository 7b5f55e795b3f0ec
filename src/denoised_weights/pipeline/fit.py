"""``dnw fit``: train the text-conditioned block diffusion model of
:mod:`denoised_weights.generators.diffusion` on a weight dataset.

Objectives (``FitConfig.objective``):

``weights`` (the paper's): the denoising loss on the collected LoRAs, cut into blocks. A sample
    is a block index n, the normalised block w_n and one of the concept's prompt paraphrases;
    with clean-sample prediction the loss is ‖w_n − ŵ(α_t·w_n + σ_t·ε, t, n, τ(prompt))‖².
``task``: what the weights do. For concepts drawn from the task's catalogue over the continuous
    parameter ranges of its training split (``Task.sample_concept``; never a held-out value),
    the generator's one-step estimate of every block is un-blocked differentiably, applied to
    the frozen base as its LoRA (a functional call, no copies) and the task's own loss on a
    freshly made batch of that concept's data is backpropagated into the generator.
``both``: the sum, the task term weighted by ``task_weight``.

Centring: the model sees w_n − w̄_n divided by each layer group's spread around the dataset
mean w̄ (``center``, default on). Every run is resumable (a killed fit resumes to the model an
unbroken one makes) and runs under torchrun (DDP).

Output folder: ``model/`` (diffusers save_pretrained), ``scheduler/``, ``blocker.json``,
``mean_blocks.safetensors``, ``generator.json``, ``val_loss.json`` / ``val_loss.png``,
``sampled_concepts.json`` (task objectives: every concept drawn), ``run.json``.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from denoised_weights.core.engine import Callback, Trainer
from denoised_weights.core.errors import DnwError, FingerprintMismatchError
from denoised_weights.core.io import save_tensors, write_json
from denoised_weights.generators.diffusion import (
    DEFAULT_START,
    DEFAULT_TIMESTEP,
    GENERATOR_CONFIG,
    PromptBank,
    _scheduler,
    create_text_encoder,
    deviation_scales,
    one_step,
)
from denoised_weights.pipeline.options import (  # noqa: F401 - FitConfig was defined here
    FIT_STEPS,
    LR_SCHEDULES,
    OBJECTIVES,
    FitConfig,
)


def sample_range_of(blocks: torch.Tensor) -> float:
    """The largest |value| of the normalised training blocks: multi-step DDIM clips its
    predicted clean blocks to it (at the last timesteps ᾱ is ~0, and an unclipped estimate
    (w_t − σ·ε̂)/α blows up)."""
    return float(blocks.abs().max())


#: the UNet cuts a block into patches of this many values, then halves the sequence once per
#: extra resolution: a block size must be a multiple of PATCH * 2**(levels - 1)
PATCH = 16


def _model_size(preset: str | None) -> dict[str, Any]:
    # pooled_text + emb_head: the prompt also reaches the embedding, and the embedding has a
    # direct path to the output block; measured on the small dataset, the one-step estimate
    # then picks up the prompt within hundreds of steps instead of thousands (README)
    extra = {"pooled_text": True, "emb_head": True}
    return {"tiny": {"channels": (16, 32), "heads": 2, "patch": PATCH, **extra}}.get(
        preset or "", {"channels": (64, 128), "heads": 4, "patch": PATCH, **extra}
    )


@dataclass
class BlockData:
    """The weight dataset as the model sees it: blocks (centred), prompts, the split."""

    arch: Any
    blocker: Any
    blocks: torch.Tensor  # [E, N, b] in model space
    mean_blocks: torch.Tensor
    scale_blocks: torch.Tensor
    entry_prompts: list[list[int]]
    bank: PromptBank
    encoder: Any
    train_idx: list[int]
    val_idx: list[int]
    sample_range: float
    #: tensors the blocker leaves out because they are the same in every state (shared
    #: down-projections): saved with the generator and put back into what it generates
    fixed: dict[str, torch.Tensor] = dataclasses.field(default_factory=dict)

    @property
    def n_blocks(self) -> int:
        return self.blocks.shape[1]

    @property
    def block_size(self) -> int:
        return self.blocks.shape[2]


def check_block_size(block_size: int, total: int, levels: int) -> None:
    """A one-line error unless the UNet can cut ``block_size`` values into its patches."""
    unit = PATCH * 2 ** (levels - 1)
    if block_size % unit:
        raise DnwError(
            f"--block-size must be a multiple of {unit} (patches of {PATCH} values, halved "
            f"{levels - 1} time(s)); got {block_size}"
        )
    if block_size > max(unit, -(-total // unit) * unit):
        raise DnwError(
            f"--block-size {block_size} is larger than the whole adapter ({total} values)"
        )


def prepare_blocks(dataset: Any, config: FitConfig, registries: Any = None) -> BlockData:
    """Block, normalise and centre every entry; encode every prompt once."""
    from denoised_weights.core.components import (
        bind_blocker,
        create_architecture,
        create_blocker,
        lora_fingerprint,
    )

    cfg = dataset.config
    arch = create_architecture(cfg["architecture"], registries=registries, **cfg["config"])
    if lora_fingerprint(arch) != dataset.fingerprint:
        raise FingerprintMismatchError(
            f"{dataset.path}: dataset fingerprint does not match its own architecture"
        )
    preset = config.preset or cfg.get("preset")
    opts = {"block_size": config.block_size} if config.block_size else {}
    blocker = create_blocker("layerwise", preset, registries=registries, **opts)
    levels = len((_model_size(preset) | (config.model_options or {}))["channels"])
    template_total = sum(math.prod(s) for s in cfg.get("tensor_shapes", {}).values()) or 1
    check_block_size(blocker.block_size, template_total, levels)
    blocker = bind_blocker(arch, blocker)
    # training entries vs held-out checkpoints (the last one of each concept) for validation
    keep = _subset(dataset.concepts, config.concepts)
    entries, states = zip(
        *((e, s) for e, s in dataset.iter_states() if e["concept"] in keep), strict=True
    )
    k_max = max(e["checkpoint"] for e in entries)
    is_val = [k_max > 0 and e["checkpoint"] == k_max for e in entries]
    reference = _reference(config, arch, registries)
    if reference is not None:  # the starting generator's layout and statistics
        blocker = reference.blocker
    else:
        blocker.fit([s for s, v in zip(states, is_val, strict=True) if not v])
    blocks = torch.stack([blocker.to_blocks(s) for s in states])  # [E, N, b]
    encoder = create_text_encoder(config.text_encoder, config.text_encoder_path, registries)
    bank = PromptBank(encoder, sorted({p for e in entries for p in e["prompts"]}))
    train_idx = [i for i, v in enumerate(is_val) if not v]
    mean_blocks = blocks[train_idx].mean(0)
    if reference is not None:
        mean_blocks, scale_blocks = reference.offset, reference.scale
        blocks = (blocks - mean_blocks) / scale_blocks
    elif config.center:
        scale_blocks = deviation_scales(blocks[train_idx] - mean_blocks, blocker.groups)
        blocks = (blocks - mean_blocks) / scale_blocks  # what the model sees
    else:
        scale_blocks = torch.ones_like(mean_blocks)
    return BlockData(
        arch=arch,
        blocker=blocker,
        blocks=blocks,
        mean_blocks=mean_blocks,
        scale_blocks=scale_blocks,
        entry_prompts=[[bank.index[p] for p in e["prompts"]] for e in entries],
        bank=bank,
        encoder=encoder,
        train_idx=train_idx,
        val_idx=[i for i, v in enumerate(is_val) if v] or train_idx[:1],
        sample_range=sample_range_of(blocks[train_idx]),
        fixed=_fixed_tensors(blocker, states),
    )


def _fixed_tensors(blocker: Any, states: Any) -> dict[str, torch.Tensor]:
    """The state tensors outside the block layout; each must be the same in every state."""
    laid_out = {t["key"] for g in blocker.groups for t in g["tensors"]}
    fixed = {k: v for k, v in states[0].items() if k not in laid_out}
    for key, value in fixed.items():
        if any(not torch.equal(s[key], value) for s in states[1:]):
            raise DnwError(
                f"LoRA tensor {key} is outside the block layout but differs between dataset entries"
            )
    return fixed


def _subset(concepts: list[str], n: int | None) -> set[str]:
    """All concepts, or ``n`` of them spread evenly over the dataset's (sorted) list."""
    if n is None or n >= len(concepts):
        return set(concepts)
    if n < 1:
        raise DnwError(f"--concepts must be at least 1, got {n}")
    return {concepts[round(i * len(concepts) / n)] for i in range(n)}


def _reference(config: FitConfig, arch: Any, registries: Any) -> Any:
    """The generator ``init_from`` names (checked to fit this dataset's layout), or None."""
    if not config.init_from:
        return None
    from denoised_weights.generators.diffusion import DiffusionGenerator

    gen = DiffusionGenerator(config.init_from, registries=registries)
    gen.check_fits(arch)
    if not gen.info.get("centered", False) and config.center:
        raise DnwError(
            f"--init-from {config.init_from}: that generator is not centred; add --no-center"
        )
    if (
        gen.info["prediction_type"] != config.prediction_type
        or gen.info["text_encoder"] != config.text_encoder
    ):
        raise DnwError(
            f"--init-from {config.init_from} was fitted with "
            f"--prediction {gen.info['prediction_type']} and "
            f"--text-encoder {gen.info['text_encoder']}; use the same"
        )
    return gen


class _Fit:
    """One fit: the model, its optimiser and schedule, the loss, validation and checkpoints."""

    ckpt_dir: Path | None = None

    def __init__(
        self, bd: BlockData, config: FitConfig, device: torch.device, rank: int, world: int
    ) -> None:
        from diffusers.optimization import get_scheduler

        from denoised_weights.generators.unet1d import WeightUNet1D

        self.bd, self.config, self.device, self.rank, self.world = bd, config, device, rank, world
        preset = config.preset
        self.options = {**_model_size(preset), **(config.model_options or {})}
        torch.manual_seed(config.seed)
        if config.init_from:  # the starting generator's network (its own size options)
            self.model = WeightUNet1D.from_pretrained(
                str(Path(config.init_from) / "model"), use_safetensors=True
            )
            self.model = self.model.to(device).train()
            self.model.requires_grad_(True)
            self.options = {
                k: self.model.config[k]
                for k in ("channels", "heads", "patch", "pooled_text", "emb_head")
            }
        else:
            self.model = WeightUNet1D(
                block_size=bd.block_size,
                text_dim=bd.encoder.dim,
                max_blocks=bd.n_blocks,
                **self.options,
            ).to(device)
        self.conditioner = None  # text: the prompt bank; examples/both: a trained encoder too
        if config.conditioning != "text":
            from denoised_weights.generators.conditioning import Conditioner, example_encoder

            encoder = example_encoder(config.example_encoder, bd.encoder.dim).to(device).train()
            self.conditioner = Conditioner(
                config.conditioning, bd.encoder, encoder, config.example_encoder, config.n_examples
            )
        params = list(self.model.parameters())
        if self.conditioner is not None:
            params += list(self.conditioner.examples.parameters())
        self.opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.0)
        # diffusers' schedules, over max_steps (a --max-minutes stop ends before the decay does)
        self.lr_sched = get_scheduler(
            config.lr_schedule,
            self.opt,
            num_warmup_steps=min(config.warmup_steps, config.steps),
            num_training_steps=config.steps,
        )
        self.scheduler = _scheduler(config.prediction_type)
        self.alphas = self.scheduler.alphas_cumprod.to(device)
        self.train_model = self.model
        if world > 1:
            from torch.nn.parallel import DistributedDataParallel

            self.train_model = DistributedDataParallel(self.model)
        self._validation_set()

    def loss_on(self, idx_e, idx_n, t, noise, prompt_idx, net) -> torch.Tensor:
        bd, alphas = self.bd, self.alphas
        w0 = bd.blocks[idx_e, idx_n].to(self.device)
        a = alphas[t].sqrt()[:, None]
        s = (1 - alphas[t]).sqrt()[:, None]
        wt = a * w0 + s * noise
        tokens, mask = bd.bank.get(prompt_idx)
        pred = net(wt, t, idx_n.to(self.device), tokens.to(self.device), mask.to(self.device))
        kind = self.config.prediction_type
        target = {"epsilon": noise, "sample": w0, "v_prediction": a * noise - s * w0}[kind]
        return F.mse_loss(pred, target)

    def _validation_set(self) -> None:
        """Fixed validation draws: held-out checkpoints, blocks, timesteps, noise, prompts; and
        the one-step cosine probe (0 = the model only restates the dataset mean)."""
        bd, config = self.bd, self.config
        g = torch.Generator().manual_seed(12345)
        nv = min(1024, len(bd.val_idx) * bd.n_blocks)
        self.val = {
            "e": torch.tensor(bd.val_idx)[torch.randint(len(bd.val_idx), (nv,), generator=g)],
            "n": torch.randint(bd.n_blocks, (nv,), generator=g),
            "t": torch.randint(1000, (nv,), generator=g),
            "noise": torch.randn(nv, bd.block_size, generator=g),
        }
        self.val["p"] = torch.tensor([bd.entry_prompts[e][0] for e in self.val["e"].tolist()])
        self.cos_entries = bd.val_idx[:: max(1, len(bd.val_idx) // 8)][:8]
        self.cos_noise = torch.randn(bd.n_blocks, bd.block_size, generator=g).to(self.device)
        self.origin = 0 if config.center else bd.mean_blocks  # the dataset mean in model space
        self.gen_start = None  # pure noise, or the dataset mean plus noise:
        if DEFAULT_START[config.prediction_type] == "mean":
            self.gen_start = (self.origin + torch.zeros(bd.n_blocks, bd.block_size)).to(self.device)

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        if self.config.conditioning == "examples":  # the stored LoRAs come without examples
            self.model.eval()
            result = {
                "val_loss": None,
                "val_cos": None,
                "val_task": self.objective.validate(self.model),
            }
            self.model.train()
            return result
        bd, val, dev = self.bd, self.val, self.device
        self.model.eval()
        nv = len(val["e"])
        total = 0.0
        for i in range(0, nv, 512):
            sl = slice(i, i + 512)
            total += self.loss_on(
                val["e"][sl],
                val["n"][sl],
                val["t"][sl].to(dev),
                val["noise"][sl].to(dev),
                val["p"][sl],
                self.model,
            ).item() * len(val["e"][sl])
        cosines = []
        index = torch.arange(bd.n_blocks, device=dev)
        kind = self.config.prediction_type
        for e in self.cos_entries:
            tokens, mask = bd.bank.get(torch.full((bd.n_blocks,), bd.entry_prompts[e][0]))
            x0 = one_step(
                self.model,
                self.alphas,
                kind,
                self.gen_start,
                self.cos_noise,
                DEFAULT_TIMESTEP[kind],
                index,
                tokens.to(dev),
                mask.to(dev),
            )
            deviation = x0.cpu() - self.origin
            cosines.append(
                float(
                    F.cosine_similarity(
                        deviation.flatten(), (bd.blocks[e] - self.origin).flatten(), 0
                    )
                )
            )
        result = {"val_loss": total / nv, "val_cos": sum(cosines) / len(cosines)}
        if self.objective is not None:
            result["val_task"] = self.objective.validate(self.model)
        self.model.train()
        return result

    objective: Any = None  # the TaskObjective of objectives task and both

    def step_loss(self, step: int) -> torch.Tensor:
        """The training loss of step ``step`` under the configured objective."""
        kind = self.config.objective
        if kind == "weights":
            return self.step_batch(step)
        task = self.objective.loss(step)
        return task if kind == "task" else self.step_batch(step) + self.config.task_weight * task

    def step_batch(self, step: int) -> torch.Tensor:
        """The loss of training step ``step`` (its draws fixed by the seed, step and rank)."""
        bd, config, dev = self.bd, self.config, self.device
        bs = config.batch_size
        gen = torch.Generator().manual_seed(config.seed * 1_000_003 + step * self.world + self.rank)
        ie = torch.tensor(bd.train_idx)[torch.randint(len(bd.train_idx), (bs,), generator=gen)]
        n = torch.randint(bd.n_blocks, (bs,), generator=gen)
        t = torch.randint(1000, (bs,), generator=gen)
        if config.noisy_share > 0:  # noise-biased: this share of the batch at the noisiest 10%
            noisy = torch.rand(bs, generator=gen) < config.noisy_share
            t = torch.where(noisy, torch.randint(900, 1000, (bs,), generator=gen), t)
        noise = torch.randn(bs, bd.block_size, generator=gen).to(dev)
        # a paraphrase per sample from the step's own generator: a resumed fit draws what an
        # unbroken one would have
        pick = torch.rand(bs, generator=gen).tolist()
        prompt_idx = torch.tensor(
            [
                bd.entry_prompts[e][int(u * len(bd.entry_prompts[e]))]
                for e, u in zip(ie.tolist(), pick, strict=True)
            ]
        )
        return self.loss_on(ie, n, t.to(dev), noise, prompt_idx, self.train_model)


def fit(
    data: str | Path,
    out: str | Path,
    config: FitConfig | None = None,
    *,
    device: str | torch.device | None = None,
    overwrite: bool = False,
    registries: Any = None,
    **overrides: Any,
) -> Path:
    """Train the block diffusion model on a weight dataset (resumable; DDP under torchrun).

    ``config`` (a :class:`FitConfig`) or its fields as keyword arguments."""
    import os

    from denoised_weights.core.dataset import WeightDataset
    from denoised_weights.core.outputs import claim_output

    if config is None:
        config = FitConfig(**overrides)
    elif overrides:
        config = dataclasses.replace(config, **overrides)
    out = Path(out)
    dataset = WeightDataset(data)
    if len(dataset) == 0:
        raise DnwError(f"{data}: the weight dataset has no entries yet; run 'dnw collect' first")
    from denoised_weights.core.plugins import default_registries

    (registries or default_registries()).text_encoders.get(config.text_encoder)  # fail early
    config.preset = config.preset or dataset.config.get("preset")
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    # a longer or shorter budget resumes the same fit, unless the schedule is laid out over it
    budget = ("max_minutes",) if "max_steps" in config.making() else ("max_minutes", "max_steps")
    if config.base:
        config.base = str(Path(config.base).resolve())
    if config.init_from:
        config.init_from = str(Path(config.init_from).resolve())
    settings = {
        "data": str(Path(data).resolve()),
        "dataset": dataset.fingerprint,
        **{k: v for k, v in config.to_dict().items() if k not in budget},
    }
    if world > 1:  # first, so that every rank hears what rank 0 finds in the folder
        import torch.distributed as dist

        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    outcome = "go"
    if rank == 0:
        try:
            state = claim_output(
                out,
                "fit",
                settings,
                overwrite=overwrite,
                seed=config.seed,
                config=config.to_dict(),
                owned=(
                    "model",
                    "scheduler",
                    "blocker.json",
                    "mean_blocks.safetensors",
                    GENERATOR_CONFIG,
                    "val_loss.json",
                    "val_loss.png",
                    "checkpoint",
                    "sampled_concepts.json",
                    "fixed.safetensors",
                    "examples.json",
                    "examples.safetensors",
                ),
            )
            finished = (out / GENERATOR_CONFIG).is_file() and not (out / "checkpoint").exists()
            outcome = "done" if state == "resume" and finished else "go"
        except DnwError as exc:
            outcome = f"error: {exc}"
            if world == 1:
                raise
    if world > 1:
        from denoised_weights.core.engine import broadcast_object

        outcome = broadcast_object(outcome)
    if outcome != "go":
        if world > 1:
            dist.destroy_process_group()
        if outcome.startswith("error: "):
            raise DnwError(outcome.removeprefix("error: "))
        return out  # finished earlier with the same settings
    bd = prepare_blocks(dataset, config, registries)
    dev = _fit_device(device)
    task = None
    if config.objective != "weights":
        from denoised_weights.pipeline.context import resolve_task

        # the dataset's task options (a leave-family-out split, a pair source) unless given
        task = resolve_task(
            dataset.config.get("task", "image-translation"),
            registries,
            **{**dataset.config.get("task_options", {}), **(config.task_options or {})},
        )
        if config.conditioning != "text" and not config.example_encoder:
            if not task.default_example_encoder:
                raise DnwError(
                    f"task {task.name!r} names no example encoder; pass --example-encoder NAME"
                )
            config.example_encoder = task.default_example_encoder
    run = _Fit(bd, config, dev, rank, world)
    if task is not None:
        from denoised_weights.pipeline.task_objective import TaskObjective

        run.objective = TaskObjective(task, bd.arch, config.base, run)
    history, step, seconds = _train(run, out / "checkpoint")
    if rank == 0:
        _save(run, out, history, step, seconds)
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()
    return out


def _fit_device(device: Any) -> torch.device:
    import os

    if device not in (None, "", "auto"):
        from denoised_weights.core.device import resolve_device

        return resolve_device(device)
    local = int(os.environ.get("LOCAL_RANK", 0))
    return torch.device(f"cuda:{local}" if torch.cuda.is_available() else "cpu")


class _History(Callback):
    """The fit's schedule: validation at step 0 and every ``val_every`` steps (rank 0; each
    one checkpointed), the running training loss between them, the lr; and what a resumed fit
    must restore (the lr schedule, the concepts the task objective drew)."""

    name = "fit"

    def __init__(self, run: _Fit) -> None:
        self.run = run
        self.history: list[dict[str, Any]] = []
        self.running: list[Any] = []

    def record(self, trainer: Trainer) -> None:
        run = self.run
        train_loss = None
        if trainer.step > 0:  # the mean training loss since the last entry
            train_loss = sum(float(v) for v in self.running) / max(1, len(self.running))
        entry = {
            "step": trainer.step,
            "seconds": round(trainer.wall_seconds, 2),
            **run.validate(),
            "train_loss": train_loss,
        }
        if trainer.step > 0:
            entry["lr"] = run.lr_sched.get_last_lr()[0]
        else:
            entry["seconds"] = 0.0
        self.history.append(entry)
        self.running.clear()
        shown = {"val": entry["val_loss"], "cos": entry["val_cos"], "task": entry.get("val_task")}
        trainer.show({k: f"{v:.4f}" for k, v in shown.items() if v is not None})

    def on_step(self, trainer: Trainer) -> None:
        if trainer.step > 0:
            self.running.append(trainer.last_logs["loss"])
        if self.run.rank != 0:
            return
        every, step = self.run.config.val_every, trainer.step
        if step == 0 or step % every == 0 or step == trainer.max_steps:
            self.record(trainer)
            if step > 0:
                trainer.request_checkpoint()

    def on_end(self, trainer: Trainer) -> None:
        if self.run.rank == 0 and self.history[-1]["step"] != trainer.step:
            self.record(trainer)

    def state_dict(self) -> dict[str, Any]:
        run = self.run
        return {
            "history": self.history,
            "lr_sched": run.lr_sched.state_dict(),
            **run.config.making(),
            **({"sampled": run.objective.sampled} if run.objective else {}),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        run, making = self.run, self.run.config.making()
        if any(state.get(k, v) != v for k, v in making.items()):
            raise DnwError(
                f"{run.ckpt_dir} is an unfinished fit with other options "
                f"({', '.join(f'{k}={state.get(k)}' for k in making)}); "
                "rerun with those or use a new --out"
            )
        if "lr_sched" in state:
            run.lr_sched.load_state_dict(state["lr_sched"])
        self.history = list(state.get("history", []))
        if run.objective is not None:
            run.objective.sampled = state.get("sampled", [])


#: steps between a fit's checkpoints at most
CHECKPOINT_EVERY = 250


def _train(run: _Fit, ckpt_dir: Path) -> tuple[list[dict[str, Any]], int, float]:
    """The fit on the training engine; returns (history, step, seconds). Every rank resumes
    from rank 0's checkpoint; the time budget is decided on rank 0 and shared."""
    config = run.config
    run.ckpt_dir = ckpt_dir

    def step_fn(step: int) -> dict[str, torch.Tensor]:
        loss = run.step_loss(step)
        run.opt.zero_grad(set_to_none=True)
        loss.backward()
        if run.world > 1 and run.conditioner is not None:  # DDP syncs the UNet; this too
            import torch.distributed as dist

            for p in run.conditioner.examples.parameters():
                if p.grad is not None:
                    dist.all_reduce(p.grad)
                    p.grad /= run.world
        run.opt.step()
        run.lr_sched.step()
        return {"loss": loss.detach()}

    history = _History(run)
    parts = {"model": run.model, "opt": run.opt}
    if run.conditioner is not None:
        parts["examples"] = run.conditioner.examples
    trainer = Trainer(
        step_fn,
        max_steps=config.steps,
        parts=parts,
        ckpt_dir=ckpt_dir,
        # besides every validation: a kill loses at most this many steps whatever --val-every
        checkpoint_every=min(config.val_every, CHECKPOINT_EVERY),
        callbacks=[history],
        max_minutes=config.max_minutes,
        desc="fit",
        rank=run.rank,
        world=run.world,
    )
    trainer.run()
    return history.history, trainer.step, trainer.wall_seconds


def _save(run: _Fit, out: Path, history: list[dict[str, Any]], step: int, seconds: float) -> None:
    from denoised_weights.core.components import lora_fingerprint

    bd, config = run.bd, run.config
    run.model.save_pretrained(str(out / "model"), safe_serialization=True)
    run.scheduler.save_pretrained(str(out / "scheduler"))
    write_json(out / "blocker.json", bd.blocker.layout())
    save_tensors(
        out / "mean_blocks.safetensors", {"mean": bd.mean_blocks, "scale": bd.scale_blocks}
    )
    if bd.fixed:  # shared down-projections: put back into every generated LoRA
        save_tensors(out / "fixed.safetensors", bd.fixed)
    arch = bd.arch
    write_json(
        out / GENERATOR_CONFIG,
        {
            "architecture": arch.name,
            "preset": config.preset,
            "config": arch.config,
            "lora_spec": arch.lora_spec().to_dict(),
            "fingerprint": lora_fingerprint(arch, bd.blocker),
            "lora_fingerprint": lora_fingerprint(arch),
            "text_encoder": config.text_encoder,
            "text_encoder_path": config.text_encoder_path,
            "prediction_type": config.prediction_type,
            "centered": config.center,
            "default_timestep": DEFAULT_TIMESTEP[config.prediction_type],
            "default_start": DEFAULT_START[config.prediction_type],
            "n_blocks": bd.n_blocks,
            "block_size": bd.block_size,
            "sample_range": bd.sample_range,
            "train_seconds": round(seconds, 2),
            "steps": step,
            "objective": config.objective,
            "base": config.base,
            "conditioning": config.conditioning,
        },
    )
    if run.conditioner is not None:
        run.conditioner.save(out)
    write_json(out / "val_loss.json", history)
    if run.objective is not None:
        write_json(out / "sampled_concepts.json", run.objective.sampled)
    plot_history(history, out / "val_loss.png")
    shutil.rmtree(out / "checkpoint", ignore_errors=True)


def plot_history(history: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    val = [(h["step"], h["val_loss"]) for h in history if h.get("val_loss") is not None]
    if val:
        ax.plot(*zip(*val, strict=True), label="validation (held-out checkpoints)")
    tr = [(h["step"], h["train_loss"]) for h in history if h.get("train_loss") is not None]
    if tr:
        ax.plot(*zip(*tr, strict=True), label="training (running mean)", alpha=0.7)
    task = [(h["step"], h["val_task"]) for h in history if h.get("val_task") is not None]
    if task:
        ax.plot(*zip(*task, strict=True), label="task loss of the generated weights (validation)")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
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

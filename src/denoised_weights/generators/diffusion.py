"""The text-conditioned diffusion model over weight blocks: loading a fitted one and one-step
generation (fitting it is a pipeline stage: :mod:`denoised_weights.pipeline.fit`).

Generation: all N blocks are denoised in one batched forward from a noise-biased timestep t,
starting at w_t = α_t·w̄ + σ_t·ε (w̄: the dataset's mean blocks, ``start="mean"``; zero once
centred) or at pure noise (``start="noise"``), and recovered directly as ŵ0 = (w_t − σ_t·ε̂)/α_t
(ε-prediction) or read off the model (clean-sample prediction), then un-centred. Multi-step
DDIM with trailing timestep spacing is available as an option.

A generator folder::

    model/            diffusers save_pretrained (config.json + safetensors)
    scheduler/        scheduler_config.json
    blocker.json      the block layout and normalisation statistics
    mean_blocks.safetensors   the dataset's mean blocks and (centred) per-position scales
    generator.json    text encoder, fingerprints, architecture, defaults, objective
    val_loss.json, val_loss.png, run.json
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from denoised_weights.core.errors import DnwError, FingerprintMismatchError
from denoised_weights.core.interfaces import WeightGenerator
from denoised_weights.core.io import (
    load_tensors,
)

GENERATOR_CONFIG = "generator.json"
#: what generator.json must hold for a generator to load
GENERATOR_KEYS = (
    "architecture",
    "config",
    "lora_spec",
    "lora_fingerprint",
    "text_encoder",
    "prediction_type",
)
#: one-step generation defaults per prediction type, chosen by measurement on the small preset
#: (see the README): ε needs α_t well above 0 to divide by; sample and v predictions read the
#: prompt's estimate at the noisiest timestep, where the input carries no information.
DEFAULT_TIMESTEP = {"epsilon": 300, "sample": 999, "v_prediction": 999}
DEFAULT_START = {"epsilon": "mean", "sample": "noise", "v_prediction": "noise"}


#: share of each training batch drawn from the noisiest 10% of timesteps: sample and v
#: predictions are read at t=999, where the estimate is the prompt's alone, so they train there
#: more (measured, README); ε is read at t=300 and trains on uniform timesteps as in the paper
NOISY_SHARE = {"epsilon": 0.0, "sample": 0.5, "v_prediction": 0.5}
PREDICTIONS = ("epsilon", "sample", "v_prediction")


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
    text_index: torch.Tensor | None = None,
) -> torch.Tensor:
    """The direct estimate ŵ0 of clean blocks from one forward at timestep ``t``, starting
    at w_t = α_t·start + σ_t·noise, or at w_t = noise when ``start`` is None (model space).
    With ``text_index``, ``tokens``/``mask`` hold each distinct prompt once (see
    :class:`~denoised_weights.generators.unet1d.WeightUNet1D`)."""
    a, s = alphas[t].sqrt(), (1 - alphas[t]).sqrt()
    wt = noise if start is None else a * start + s * noise
    steps = torch.full((wt.shape[0],), t, device=wt.device)
    if text_index is None:
        pred = model(wt, steps, index, tokens, mask)
    else:
        pred = model(wt, steps, index, tokens, mask, text_index=text_index)
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


def blocker_from_layout(layout: dict[str, Any], registries: Any = None) -> Any:
    """The registered blocker of ``layout["type"]``, rebuilt from its saved layout."""
    from denoised_weights.core.plugins import default_registries

    regs = registries if registries is not None else default_registries()
    return regs.blockers.get(layout["type"]).load().from_layout(layout)


def create_text_encoder(name: str, path: str | None = None, registries: Any = None):
    from denoised_weights.core.plugins import default_registries

    opts = {"path": path} if path else {}
    regs = registries if registries is not None else default_registries()
    return regs.text_encoders.create(name, **opts)


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


class DiffusionGenerator(WeightGenerator):
    """A fitted block diffusion model, loaded from the folder ``fit`` wrote."""

    def __init__(
        self, path: str | Path, *, text_encoder_path: str | None = None, registries: Any = None
    ) -> None:
        from denoised_weights.core.io import read_json_object
        from denoised_weights.generators.unet1d import WeightUNet1D

        self.path = Path(path)
        if not (self.path / GENERATOR_CONFIG).is_file():
            raise DnwError(
                f"{self.path}: not a generator folder (no "
                f"{GENERATOR_CONFIG}); make one with 'dnw fit'"
            )
        where = self.path / GENERATOR_CONFIG
        self.info = read_json_object(where, "generator description", GENERATOR_KEYS)
        kind = self.info["prediction_type"]
        if kind not in PREDICTIONS:
            raise DnwError(
                f"{where}: unknown prediction_type {kind!r} "
                f"({', '.join(PREDICTIONS)}); the file is damaged"
            )
        t = self.info.get("default_timestep", DEFAULT_TIMESTEP[kind])
        if not isinstance(t, int) or not 0 <= t < 1000:
            raise DnwError(
                f"{where}: default_timestep {t!r} is not in [0, 999]; the file is damaged"
            )
        if self.info.get("default_start", "mean") not in ("mean", "noise"):
            raise DnwError(f"{where}: default_start must be mean or noise; the file is damaged")
        weights = self.path / "model" / "diffusion_pytorch_model.safetensors"
        if not weights.is_file():
            raise DnwError(
                f"{weights.parent}: no diffusion_pytorch_model.safetensors (only "
                "safetensors weights are loaded); the generator is damaged"
            )
        try:
            self.model = WeightUNet1D.from_pretrained(
                str(self.path / "model"), use_safetensors=True
            ).eval()
        except (OSError, ValueError, RuntimeError, KeyError) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise DnwError(
                f"{self.path / 'model'}: the generator's network does "
                f"not load ({reason[:200]}); the folder is damaged"
            ) from None
        self.model.requires_grad_(False)
        self.scheduler = _scheduler(kind)
        self.blocker = blocker_from_layout(
            read_json_object(
                self.path / "blocker.json", "blocker layout", ("type", "groups", "block_size")
            ),
            registries,
        )
        stats = load_tensors(self.path / "mean_blocks.safetensors", finite=True)[0]
        shape = (self.blocker.n_blocks, self.blocker.block_size)
        centred = bool(self.info.get("centered", False))
        needed = ("mean", "scale") if centred else ("mean",)
        if any(k not in stats or tuple(stats[k].shape) != shape for k in needed):
            raise DnwError(
                f"{self.path / 'mean_blocks.safetensors'} does not "
                "fit the blocker layout; the generator is damaged"
            )
        self.mean_blocks = stats["mean"]
        fixed = self.path / "fixed.safetensors"  # shared down-projections, the same for all
        self.fixed = load_tensors(fixed, finite=True)[0] if fixed.is_file() else {}
        # model space -> blocks: blocks = offset + scale · x (identity for uncentred generators)
        self.offset = self.mean_blocks if centred else torch.zeros_like(self.mean_blocks)
        self.scale = stats["scale"] if centred else torch.ones_like(self.mean_blocks)
        self.encoder = create_text_encoder(
            self.info["text_encoder"],
            text_encoder_path or self.info.get("text_encoder_path"),
            registries,
        )
        from denoised_weights.generators.conditioning import load_conditioner

        #: what it reads about a concept: the prompt, examples (a trained encoder) or both
        self.conditioner = load_conditioner(self.path, self.encoder, registries)

    @property
    def reads_examples(self) -> bool:
        return self.conditioner.reads_examples

    @property
    def lora_fingerprint(self) -> str:
        return self.info["lora_fingerprint"]

    def check_fits(self, arch: Any) -> None:
        """Refuse to generate for another architecture, preset, rank or layout."""
        from denoised_weights.core.components import lora_fingerprint

        if lora_fingerprint(arch) != self.lora_fingerprint:
            raise FingerprintMismatchError(
                f"{self.path}: this generator was fitted for {self.info['architecture']} preset "
                f"{self.info.get('preset')} (fingerprint "
                f"{self.lora_fingerprint}), not for the given network "
                f"({arch.name} {arch.config}); use a generator fitted on its dataset"
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
        examples: Mapping[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Normalised blocks ``[N, b]`` for ``prompt`` (and the concept's ``examples``, the
        task's data, for a generator that reads them; a ``both`` generator without examples
        reads the prompt alone).

        ``guidance`` g > 1 extrapolates away from the dataset mean: w̄ + g·(ŵ − w̄), classifier-
        free guidance with the mean standing in for the unconditional estimate (a one-step
        estimate is a conditional mean, shrunk towards w̄; the README measures g). Default:
        the generator's ``guidance`` in generator.json, else 1 (none).
        """
        g = float(guidance if guidance is not None else self.info.get("guidance", 1.0))
        if not 0 < g <= 10:
            raise DnwError(f"--guidance must be in (0, 10], got {g}")
        if not isinstance(steps, int) or not 1 <= steps <= 1000:
            raise DnwError(
                f"--steps must be from 1 to 1000 (the noise schedule has 1000), got {steps}"
            )
        cond = self.conditioner  # it refuses an examples-only generator without examples
        has_examples = cond.reads_examples and examples is not None
        if cond.reads_text and not has_examples and (not prompt or not prompt.strip()):
            raise DnwError("the prompt is empty; say what the new concept is (--prompt TEXT)")
        prompts = [prompt] if cond.reads_text and prompt and prompt.strip() else None
        context = cond(
            prompts, [examples] if examples is not None and cond.reads_examples else None
        )
        blocks = self._sample_blocks(
            context, seed=seed, steps=steps, timestep=timestep, start=start
        )
        return blocks if g == 1.0 else self.mean_blocks + g * (blocks - self.mean_blocks)

    def _sample_blocks(
        self,
        context: tuple[torch.Tensor, torch.Tensor],
        *,
        seed: int,
        steps: int,
        timestep: int | None,
        start: str | None,
    ) -> torch.Tensor:
        n, b = self.blocker.n_blocks, self.blocker.block_size
        tokens, mask = context  # one concept, read by every block
        shared = torch.zeros(n, dtype=torch.long)
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
            if not 0 <= t < len(alphas):  # (the generator's own default was checked on loading)
                raise DnwError(f"--timestep must be in [0, {len(alphas) - 1}], got {t}")
            start = start or self.info.get("default_start", DEFAULT_START[kind])
            if start not in ("mean", "noise"):
                raise DnwError(f"unknown start {start!r}: mean or noise")
            # from the dataset mean (in model space) plus noise, or from pure noise
            begin = (self.mean_blocks - self.offset) / self.scale if start == "mean" else None
            x0 = one_step(self.model, alphas, kind, begin, noise, t, index, tokens, mask, shared)
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
            pred = self.model(w, t.expand(n), index, tokens, mask, text_index=shared)
            w = ddim.step(pred, t, w).prev_sample
        return self.offset + self.scale * w

    def generate(self, prompt: str, *, seed: int = 0, **options: Any) -> dict[str, torch.Tensor]:
        state = self.blocker.from_blocks(self.generate_blocks(prompt, seed=seed, **options))
        return {**{k: v.clone() for k, v in self.fixed.items()}, **state}

    def initialise(
        self,
        prompt: str,
        *,
        data: Mapping[str, torch.Tensor] | None = None,
        seed: int = 0,
        **_: Any,
    ) -> dict[str, torch.Tensor]:
        """The generated LoRA; a generator that reads examples reads the first of the
        concept's training ``data`` (a ``both`` generator without data: the prompt alone)."""
        if self.conditioner.mode == "both" and not data:
            warnings.warn(
                "no examples of the new concept: the generator reads the prompt alone", stacklevel=2
            )
        examples = dict(data) if data and self.reads_examples else None
        return self.generate(prompt, seed=seed, examples=examples)

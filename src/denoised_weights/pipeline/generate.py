"""``dnw generate``: a PEFT adapter for a prompt from a fitted generator, timed."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from denoised_weights.core.errors import DnwError
from denoised_weights.core.outputs import claim_output
from denoised_weights.core.plugins import Registries

ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json", "dnw_adapter.json")


def prompt_usage(encoder: Any, prompt: str) -> tuple[int, int]:
    """``(tokens read, tokens in the prompt)``: how much of a long prompt the encoder sees."""
    tokenizer = getattr(encoder, "tokenizer", None)
    limit = getattr(encoder, "max_length", None)
    if tokenizer is None or limit is None:
        return (len(prompt.split()),) * 2
    total = len(tokenizer(prompt, truncation=False)["input_ids"])
    return min(total, limit), total


def generate_adapter(
    prompt: str,
    out: str | Path | None,
    *,
    generator: str | Path | Any | None = None,
    task: str = "image-translation",
    overwrite: bool = False,
    registries: Registries | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Generate a LoRA state for ``prompt`` (and write it as an adapter folder to ``out``).

    ``generator`` is a fitted generator folder, a loaded ``DiffusionGenerator``, or None for the
    shipped pack's. ``generation_seconds`` spans prompt encoding to the write."""
    import torch

    from denoised_weights.core.lora import LoraSpec, save_adapter
    from denoised_weights.generators.diffusion import DiffusionGenerator
    from denoised_weights.pipeline.pack import default_generator

    gen = (
        generator
        if isinstance(generator, DiffusionGenerator)
        else DiffusionGenerator(generator or default_generator(task), registries=registries)
    )
    options = {k: v for k, v in options.items() if v is not None}
    examples = options.get("examples")
    if not isinstance(prompt, str) or not (prompt.strip() or (examples and gen.reads_examples)):
        raise DnwError("the prompt is empty; say what the new concept is (--prompt TEXT)")
    used, total = prompt_usage(gen.encoder, prompt)
    if out is not None:
        from denoised_weights.pipeline.finetune import data_digest

        settings = {
            "prompt": prompt,
            "generator": str(gen.path.resolve()),
            **{k: v for k, v in options.items() if k != "examples"},
            **({"examples": data_digest(examples)} if examples else {}),
        }
        claim_output(
            out,
            "generate",
            settings,
            overwrite=overwrite,
            owned=ADAPTER_FILES,
            seed=options.get("seed"),
        )
    t0 = time.perf_counter()
    state = gen.generate(prompt, **options)
    if out is not None:
        save_adapter(
            out,
            state,
            LoraSpec.from_dict(gen.info["lora_spec"]),
            fingerprint=gen.lora_fingerprint,
            metadata={
                "prompt": prompt,
                "generator": str(gen.path),
                **{k: v for k, v in options.items() if k != "examples"},
            },
        )
    seconds = time.perf_counter() - t0
    return {
        "generation_seconds": seconds,
        "n_blocks": gen.blocker.n_blocks,
        "block_size": gen.blocker.block_size,
        "lora_params": sum(v.numel() for v in state.values()),
        "fingerprint": gen.lora_fingerprint,
        "out": None if out is None else str(out),
        "finite": bool(all(torch.isfinite(v).all() for v in state.values())),
        "norm": float(sum(float((v**2).sum()) for v in state.values())) ** 0.5,
        "prompt_tokens": total,
        "prompt_tokens_used": used,
        "state": state,
    }

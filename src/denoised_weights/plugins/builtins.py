"""Generic built-in components: the layerwise blocker, text encoders, weight initialisers."""

from __future__ import annotations

from denoised_weights.core.hookspecs import hookimpl


@hookimpl
def register_blockers(register):
    register(
        "layerwise",
        "denoised_weights.blockers.layerwise:LayerwiseBlocker",
        tiny={"block_size": 64},
        small={"block_size": 256},
        paper={"block_size": 256},
    )


@hookimpl
def register_text_encoders(register):
    module = "denoised_weights.generators.text"
    register("minilm", f"{module}:MiniLMEncoder")
    register("clip", f"{module}:CLIPEncoder")
    # HashEncoder (no model, no semantics) is for tests: the test suite registers it itself


@hookimpl
def register_generators(register):
    """Every ``--init`` of ``dnw finetune`` besides scratch and standard."""
    register("generated", "denoised_weights.generators.diffusion:DiffusionGenerator")
    module = "denoised_weights.generators.baselines"
    register("mean", f"{module}:MeanInit")
    register("nearest", f"{module}:NearestInit")
    register("nearest-examples", f"{module}:NearestExamplesInit")  # retrieval by examples
    register("scored-examples", f"{module}:ScoredExamplesInit")  # ... scored by the task loss
    register("noisy-nearest", f"{module}:NoisyNearestInit")
    register("fine", f"{module}:FineInit")
    register("nearest-param", f"{module}:NearestParamInit")  # oracles: they know the true values
    register("interpolate", f"{module}:InterpolateInit")
    few = "denoised_weights.generators.fewshot"  # few-shot: fitted on the new concept's data
    register("fine-generated", f"{few}:FineGeneratedInit")
    register("blend", f"{few}:BlendInit")
    register("blend-random", f"{few}:BlendRandomInit")  # the few-shot inits' controls
    register("nearest-tuned", f"{few}:NearestTunedInit")

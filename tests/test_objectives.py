"""Training the generator on what its weights do, shared down-projections, and the inits
measured against it (few-shot and oracle), on the tiny presets."""

import json

import pytest
import torch

import denoised_weights as dnw
from denoised_weights.core.io import load_tensors
from denoised_weights.generators.diffusion import DiffusionGenerator
from denoised_weights.pipeline.fit import fit

TASK_FIT = dict(
    text_encoder="hash",
    batch_size=8,
    max_steps=4,
    val_every=2,
    prediction_type="sample",
    task_concepts=2,
    task_batch=4,
)


@pytest.mark.parametrize("objective", ["task", "both"])
def test_a_task_objective_fit_logs_its_concepts_and_validates_the_task_loss(
    tmp_path, tiny_dataset, tiny_base, objective
):
    out = fit(tiny_dataset, tmp_path / "g", objective=objective, base=str(tiny_base), **TASK_FIT)
    info = json.loads((out / "generator.json").read_text())
    assert info["objective"] == objective and info["base"] == str(tiny_base.resolve())
    history = json.loads((out / "val_loss.json").read_text())
    assert all(h["val_task"] > 0 for h in history)
    sampled = json.loads((out / "sampled_concepts.json").read_text())
    assert [s[0] for s in sampled] == [0, 0, 1, 1, 2, 2, 3, 3]  # two concepts a step
    task = dnw.create_task("image-translation")
    assert all(task.get_concept(cid).split == "train" for _, cid, _ in sampled)
    DiffusionGenerator(out).generate("a warm sepia photo")  # loads and generates


def test_the_task_objective_needs_a_base(tmp_path, tiny_dataset):
    with pytest.raises(dnw.DnwError, match="needs --base"):
        fit(tiny_dataset, tmp_path / "g", objective="task", **TASK_FIT)


def test_a_killed_task_objective_fit_resumes_to_the_unbroken_model(
    tmp_path, tiny_dataset, tiny_base, fit_killed_at
):
    opts = {**TASK_FIT, "objective": "task", "base": str(tiny_base)}
    unbroken = fit(tiny_dataset, tmp_path / "a", **opts)
    fit_killed_at(2, tiny_dataset, tmp_path / "b", **opts)
    resumed = fit(tiny_dataset, tmp_path / "b", **opts)
    weights = [
        load_tensors(d / "model" / "diffusion_pytorch_model.safetensors")[0]
        for d in (unbroken, resumed)
    ]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    logs = [json.loads((d / "sampled_concepts.json").read_text()) for d in (unbroken, resumed)]
    assert logs[0] == logs[1]


def test_init_from_continues_a_fitted_generator(tmp_path, tiny_dataset, tiny_base, tiny_generator):
    out = fit(
        tiny_dataset,
        tmp_path / "g",
        objective="task",
        base=str(tiny_base),
        init_from=str(tiny_generator),
        **{**TASK_FIT, "prediction_type": "epsilon"},
    )
    start, cont = DiffusionGenerator(tiny_generator), DiffusionGenerator(out)
    assert torch.equal(start.mean_blocks, cont.mean_blocks)  # the same layout and centring
    assert start.blocker.layout() == cont.blocker.layout()


def test_shared_down_projections_are_fixed_orthogonal_and_not_generated(tmp_path, tiny_base):
    arch = dnw.create_architecture("e2gan", "tiny", shared_a=True)
    one, two = dnw.build_lora_model(arch), dnw.build_lora_model(arch)
    a = dict(one.named_parameters())["stem.conv.lora_A.default.weight"]
    assert not a.requires_grad and torch.equal(
        a, dict(two.named_parameters())["stem.conv.lora_A.default.weight"]
    )
    rows = a.reshape(a.shape[0], -1)
    assert torch.allclose(rows @ rows.T, torch.eye(a.shape[0]), atol=1e-5)
    assert dnw.lora_fingerprint(arch) != dnw.lora_fingerprint(
        dnw.create_architecture("e2gan", "tiny")
    )
    data = dnw.collect(
        tiny_base,
        tmp_path / "d",
        preset="tiny",
        arch_options={"shared_a": True},
        n_concepts=2,
        checkpoints=2,
        max_steps=4,
        eval_every=2,
        interval=2,
        n_train=8,
        n_eval=4,
    )
    states = [s for _, s in data.iter_states()]
    assert all(
        torch.equal(s["stem.conv.lora_A.weight"], states[0]["stem.conv.lora_A.weight"])
        for s in states
    )
    gen = DiffusionGenerator(
        fit(
            tmp_path / "d",
            tmp_path / "g",
            text_encoder="hash",
            max_steps=2,
            val_every=1,
            batch_size=8,
        )
    )
    assert not any(".lora_A." in t["key"] for g in gen.blocker.groups for t in g["tensors"])
    state = gen.generate("a warm sepia photo")
    assert torch.equal(state["stem.conv.lora_A.weight"], states[0]["stem.conv.lora_A.weight"])


def test_few_shot_and_oracle_inits_count_their_fitting_steps(
    tmp_path, tiny_base, tiny_dataset, tiny_generator
):
    for init in ("fine-generated", "blend", "blend-random", "nearest-tuned"):
        curve = dnw.finetune(
            tmp_path / init,
            concept="gamma-2.2",
            init=init,
            base=tiny_base,
            generator=tiny_generator,
            data=tiny_dataset,
            preset="tiny",
            max_steps=1,
            eval_every=1,
            metrics=["l1"],
            n_train=8,
            n_eval=4,
        )
        assert curve["init_steps"] == 20 and curve["init_seconds"] > 0
    for init in ("nearest-param", "interpolate"):
        curve = dnw.finetune(
            tmp_path / init,
            concept="gamma-2.2",
            init=init,
            base=tiny_base,
            data=tiny_dataset,
            preset="tiny",
            max_steps=1,
            eval_every=1,
            metrics=["l1"],
            n_train=8,
            n_eval=4,
        )
        assert curve["init_steps"] == 0


def test_interpolate_mixes_the_two_bracketing_trained_values(tmp_path, tiny_base):
    data = dnw.collect(
        tiny_base,
        tmp_path / "d",
        preset="tiny",
        concepts=["gamma-1.8", "gamma-2.5", "blur-1"],
        checkpoints=1,
        max_steps=2,
        eval_every=2,
        interval=1,
        n_train=8,
        n_eval=4,
    )
    from denoised_weights.generators.baselines import InterpolateInit, NearestParamInit

    task = dnw.create_task("image-translation")
    lo, hi = (data.load_concept(c)[-1] for c in ("gamma-1.8", "gamma-2.5"))
    mixed = InterpolateInit(tmp_path / "d").initialise(
        task.get_concept("gamma-2.2").prompt, task=task
    )
    w = (2.2 - 1.8) / (2.5 - 1.8)
    assert all(torch.allclose(mixed[k], (1 - w) * lo[k] + w * hi[k]) for k in lo)
    near = NearestParamInit(tmp_path / "d").initialise(
        task.get_concept("gamma-2.2").prompt, task=task
    )
    assert all(torch.equal(near[k], hi[k]) for k in hi)  # 2.2 is closer to 2.5 than to 1.8


def test_the_few_shot_controls_fit_from_retrieval_and_random_lora(tiny_base, tiny_dataset):
    """nearest-tuned trains the retrieved LoRA for its steps; blend-random starts at the mean
    and mixes LoRAs drawn by the seed."""
    from denoised_weights.core.lora import apply_lora
    from denoised_weights.generators.baselines import MeanInit, NearestInit
    from denoised_weights.generators.fewshot import BlendRandomInit, NearestTunedInit
    from denoised_weights.pipeline.base import load_base

    task = dnw.create_task("image-translation")
    arch = dnw.create_architecture("e2gan", "tiny")
    base, carry = load_base(tiny_base, arch)
    data = task.make_data(task.get_concept("gamma-2.2"), arch=arch, split="train", n=8, seed=0)
    tuned = NearestTunedInit(tiny_dataset, fit_steps=3)
    retrieved = NearestInit(tiny_dataset).generate("gamma 2.2")
    model = apply_lora(base, arch.lora_spec())
    state = tuned.initialise("gamma 2.2", arch=arch, model=model, task=task, data=data, carry=carry)
    assert state.keys() == retrieved.keys() and tuned.training_steps == 3
    assert any(not torch.equal(state[k], retrieved[k]) for k in state)  # it trained
    assert all(torch.equal(v, retrieved[k]) for k, v in tuned.initialise("gamma 2.2").items())
    control = BlendRandomInit(tiny_dataset, k=2, fit_steps=2)
    cands = control.candidates("gamma 2.2", seed=1)
    mean = MeanInit(tiny_dataset).generate("")
    assert len(cands) == 3 and all(torch.equal(cands[0][k], mean[k]) for k in mean)
    assert all(
        torch.equal(a[k], b[k])
        for a, b in zip(cands, control.candidates("x", seed=1), strict=True)
        for k in a
    )
    fitted = control.initialise("x", arch=arch, model=model, task=task, data=data, seed=1)
    assert fitted.keys() == mean.keys()

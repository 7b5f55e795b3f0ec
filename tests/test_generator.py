"""The diffusion weight generator and the other initialisers, on the tiny preset."""

import json

import pytest
import torch
from click.testing import CliRunner

import denoised_weights as dnw
from denoised_weights.cli import create_cli
from denoised_weights.core.errors import DnwError
from denoised_weights.core.plugins import get_plugin_manager
from denoised_weights.generators.diffusion import DiffusionGenerator
from denoised_weights.generators.unet1d import WeightUNet1D
from denoised_weights.pipeline.generate import generate_adapter


def run(*args):
    return CliRunner().invoke(create_cli(get_plugin_manager()), [str(a) for a in args])


@pytest.mark.parametrize("extras", [{}, {"pooled_text": True, "emb_head": True}])
def test_unet_save_load_round_trip(tmp_path, extras):
    model = WeightUNet1D(
        block_size=64, patch=16, channels=(16, 32), heads=2, text_dim=8, **extras
    ).eval()
    args = (
        torch.randn(3, 64),
        torch.tensor([1, 500, 999]),
        torch.tensor([0, 1, 2]),
        torch.randn(3, 4, 8),
        torch.ones(3, 4, dtype=torch.bool),
    )
    torch.nn.init.normal_(model.conv_out.weight)  # zero-initialised output: make it matter
    if extras:
        torch.nn.init.normal_(model.direct_head[-1].weight)
    model.save_pretrained(tmp_path / "m")
    assert (tmp_path / "m" / "diffusion_pytorch_model.safetensors").is_file()
    again = WeightUNet1D.from_pretrained(tmp_path / "m").eval()
    with torch.no_grad():
        assert torch.equal(model(*args), again(*args))


def test_fit_outputs(tiny_generator):
    names = {p.name for p in tiny_generator.iterdir()}
    assert {
        "model",
        "scheduler",
        "blocker.json",
        "generator.json",
        "val_loss.json",
        "val_loss.png",
        "run.json",
    } <= names
    history = json.loads((tiny_generator / "val_loss.json").read_text())
    assert [h["step"] for h in history] == [0, 3, 6] and all(h["val_loss"] > 0 for h in history)
    assert all(-1 <= h["val_cos"] <= 1 for h in history)
    info = json.loads((tiny_generator / "generator.json").read_text())
    scheduler = json.loads((tiny_generator / "scheduler" / "scheduler_config.json").read_text())
    assert scheduler["clip_sample"] is False and scheduler["prediction_type"] == "epsilon"
    arch = dnw.create_architecture("e2gan", "tiny")
    assert info["lora_fingerprint"] == dnw.lora_fingerprint(arch) and info["text_encoder"] == "hash"


def test_centring_gives_each_group_unit_spread_and_generation_undoes_it(
    tiny_generator, tiny_dataset
):
    from denoised_weights.core.dataset import WeightDataset
    from denoised_weights.generators.diffusion import deviation_scales

    gen = DiffusionGenerator(tiny_generator)
    assert json.loads((tiny_generator / "generator.json").read_text())["centered"] is True
    pairs = list(WeightDataset(tiny_dataset).iter_states())
    last = max(e["checkpoint"] for e, _ in pairs)  # fit validates on each concept's last one
    blocks = torch.stack([gen.blocker.to_blocks(s) for e, s in pairs if e["checkpoint"] < last])
    mean = blocks.mean(0)
    assert torch.allclose(gen.mean_blocks, mean, atol=1e-6)
    assert torch.allclose(gen.scale, deviation_scales(blocks - mean, gen.blocker.groups))
    centred = ((blocks - mean) / gen.scale).reshape(len(blocks), -1)
    for g in gen.blocker.groups:  # unit root-mean-square deviation within every layer group
        part = centred[:, g["offset"] : g["offset"] + g["numel"]]
        assert part.pow(2).mean().sqrt().item() == pytest.approx(1.0, rel=1e-4)
    assert torch.all(gen.scale > 0) and not torch.equal(gen.scale, torch.ones_like(gen.scale))
    # at t = 0 from the mean there is (almost) nothing to denoise: the blocks are the mean
    near_mean = gen.generate_blocks("warm sepia photo", timestep=0, start="mean")
    assert (near_mean - gen.mean_blocks).norm() / gen.mean_blocks.norm() < 0.05
    # multi-step DDIM clips in the centred space, then un-centres
    ddim = (gen.generate_blocks("warm sepia photo", steps=3) - gen.offset) / gen.scale
    assert ddim.abs().max() <= gen.info["sample_range"] + 1e-4


def test_a_generator_saved_before_centring_still_loads(tmp_path, tiny_generator):
    import shutil

    from denoised_weights.core.io import load_tensors, save_tensors

    old = tmp_path / "old"
    shutil.copytree(tiny_generator, old)
    info = json.loads((old / "generator.json").read_text())
    del info["centered"]
    (old / "generator.json").write_text(json.dumps(info))
    mean = load_tensors(old / "mean_blocks.safetensors")[0]["mean"]
    save_tensors(old / "mean_blocks.safetensors", {"mean": mean})
    gen = DiffusionGenerator(old)
    assert torch.equal(gen.offset, torch.zeros_like(mean)) and torch.equal(
        gen.scale, torch.ones_like(mean)
    )
    near_mean = gen.generate_blocks("warm sepia photo", timestep=0, start="mean")
    assert (near_mean - mean).norm() / mean.norm() < 0.05


def test_fit_refuses_to_resume_with_other_options(tmp_path, tiny_dataset, monkeypatch):
    import denoised_weights.pipeline.fit as diffusion
    from denoised_weights.core.errors import DnwError

    def crash(*_a, **_k):
        raise RuntimeError("killed")

    monkeypatch.setattr(diffusion, "plot_history", crash)  # dies after training: checkpoint kept
    with pytest.raises(RuntimeError):
        diffusion.fit(
            tiny_dataset,
            tmp_path / "g",
            text_encoder="hash",
            batch_size=8,
            max_steps=2,
            val_every=1,
        )
    assert (tmp_path / "g" / "checkpoint").is_dir()
    with pytest.raises(DnwError, match=r"other (options|settings)"):
        diffusion.fit(
            tiny_dataset,
            tmp_path / "g",
            text_encoder="hash",
            batch_size=8,
            max_steps=2,
            val_every=1,
            center=False,
        )
    with pytest.raises(DnwError, match=r"other (options|settings)"):
        diffusion.fit(
            tiny_dataset,
            tmp_path / "g",
            text_encoder="hash",
            batch_size=8,
            max_steps=2,
            val_every=1,
            noisy_share=0.5,
        )


def test_a_fit_killed_after_a_checkpoint_resumes_to_the_unbroken_model(
    tmp_path, tiny_dataset, fit_killed_at
):
    from denoised_weights.core.io import load_tensors
    from denoised_weights.pipeline.fit import fit

    opts = dict(
        text_encoder="hash",
        batch_size=8,
        max_steps=6,
        val_every=2,
        lr_schedule="cosine",
        warmup_steps=1,
    )
    unbroken = fit(tiny_dataset, tmp_path / "a", **opts)
    fit_killed_at(4, tiny_dataset, tmp_path / "b", **opts)
    with pytest.raises(
        DnwError, match=r"other (options|settings)"
    ):  # the decay is laid out over max_steps
        fit(tiny_dataset, tmp_path / "b", **{**opts, "max_steps": 8})
    resumed = fit(tiny_dataset, tmp_path / "b", **opts)
    weights = [
        load_tensors(d / "model" / "diffusion_pytorch_model.safetensors")[0]
        for d in (unbroken, resumed)
    ]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    histories = [json.loads((d / "val_loss.json").read_text()) for d in (unbroken, resumed)]
    for h in histories:
        assert [r["step"] for r in h] == [0, 2, 4, 6]
    assert [r.get("lr") for r in histories[0]] == [r.get("lr") for r in histories[1]]
    lrs = [r["lr"] for r in histories[0][1:]]
    assert lrs[0] > lrs[1] > lrs[2] == pytest.approx(0.0)  # cosine decay to zero by max_steps


def test_the_default_schedule_keeps_the_learning_rate(tmp_path, tiny_dataset):
    from denoised_weights.pipeline.fit import fit

    out = fit(
        tiny_dataset,
        tmp_path / "g",
        text_encoder="hash",
        batch_size=8,
        max_steps=4,
        val_every=2,
        lr=3e-4,
        warmup_steps=0,
    )
    assert [r.get("lr") for r in json.loads((out / "val_loss.json").read_text())] == [
        None,
        3e-4,
        3e-4,
    ]
    assert json.loads((out / "run.json").read_text())["config"]["lr_schedule"] == "constant"


def test_sample_prediction_generates_from_pure_noise_at_the_noisiest_step(tmp_path, tiny_dataset):
    from denoised_weights.pipeline.fit import fit

    out = fit(
        tiny_dataset,
        tmp_path / "g",
        text_encoder="hash",
        batch_size=8,
        max_steps=2,
        val_every=1,
        prediction_type="sample",
    )
    info = json.loads((out / "generator.json").read_text())
    assert (info["prediction_type"], info["default_timestep"], info["default_start"]) == (
        "sample",
        999,
        "noise",
    )
    assert json.loads((out / "run.json").read_text())["config"]["noisy_share"] == 0.5
    gen = DiffusionGenerator(out)
    a = gen.generate_blocks("warm sepia photo", seed=1)
    assert (
        torch.equal(a, gen.generate_blocks("warm sepia photo", seed=1)) and torch.isfinite(a).all()
    )
    # at t = 999 the input is noise: the model's estimate is the clean block itself (called as
    # generation calls it, the prompt shared by every block: a barely trained model's group
    # norms turn the float rounding of another call into differences far above 1e-5)
    n, b = gen.blocker.n_blocks, gen.blocker.block_size
    tokens, mask = gen.encoder.encode(["warm sepia photo"])
    noise = torch.randn(n, b, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        x0 = gen.model(
            noise,
            torch.full((n,), 999),
            torch.arange(n),
            tokens,
            mask,
            text_index=torch.zeros(n, dtype=torch.long),
        )
    assert torch.allclose(a, gen.offset + gen.scale * x0, atol=1e-5)


def test_one_step_generation_is_deterministic_and_peft_readable(tmp_path, tiny_generator):
    gen = DiffusionGenerator(tiny_generator)
    a = generate_adapter("warm sepia photo", tmp_path / "a", generator=gen, seed=3)
    generate_adapter("warm sepia photo", tmp_path / "b", generator=gen, seed=3)
    generate_adapter("warm sepia photo", tmp_path / "c", generator=gen, seed=4)
    read = lambda p: (p / "adapter_model.safetensors").read_bytes()  # noqa: E731
    assert read(tmp_path / "a") == read(tmp_path / "b") != read(tmp_path / "c")
    assert a["finite"] and a["n_blocks"] == gen.blocker.n_blocks and a["generation_seconds"] > 0
    from peft import PeftModel

    arch = dnw.create_architecture("e2gan", "tiny")
    PeftModel.from_pretrained(arch.build(), str(tmp_path / "a"))
    _, info = dnw.load_adapter(tmp_path / "a", expected_fingerprint=dnw.lora_fingerprint(arch))
    assert info["prompt"] == "warm sepia photo"


def test_ddim_trailing_one_step_runs_at_the_last_timestep(tiny_generator):
    from diffusers import DDIMScheduler

    gen = DiffusionGenerator(tiny_generator)
    ddim = DDIMScheduler.from_config(
        gen.scheduler.config, timestep_spacing="trailing", clip_sample=False
    )
    ddim.set_timesteps(1)
    assert ddim.timesteps.tolist() == [999]
    blocks = gen.generate_blocks("x", steps=3)
    assert (
        blocks.shape == (gen.blocker.n_blocks, gen.blocker.block_size)
        and torch.isfinite(blocks).all()
    )


def test_generate_cli_json_and_errors(tmp_path, tiny_generator):
    result = run(
        "generate",
        "--generator",
        tiny_generator,
        "--prompt",
        "pencil sketch",
        "--out",
        tmp_path / "g",
        "--json",
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert set(data) >= {"generation_seconds", "n_blocks"} and data["generation_seconds"] > 0
    bad = run(
        "generate", "--generator", tmp_path / "nope", "--prompt", "x", "--out", tmp_path / "h"
    )
    assert bad.exit_code == 1 and "is no such folder" in bad.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    bad = run("generate", "--generator", empty, "--prompt", "x", "--out", tmp_path / "h")
    assert bad.exit_code == 1 and "not a generator folder" in bad.stderr


def test_guidance_extrapolates_away_from_the_dataset_mean(tmp_path, tiny_generator):
    import shutil

    from denoised_weights.core.lora import load_adapter

    gen = DiffusionGenerator(tiny_generator)
    plain = gen.generate_blocks("pencil sketch", seed=3)
    assert torch.equal(gen.generate_blocks("pencil sketch", seed=3, guidance=1.0), plain)
    guided = gen.generate_blocks("pencil sketch", seed=3, guidance=1.5)
    assert torch.allclose(guided - gen.mean_blocks, 1.5 * (plain - gen.mean_blocks), atol=1e-5)
    # a generator folder may carry its own default
    own = tmp_path / "own"
    shutil.copytree(tiny_generator, own)
    info = json.loads((own / "generator.json").read_text())
    (own / "generator.json").write_text(json.dumps({**info, "guidance": 1.5}))
    assert torch.allclose(DiffusionGenerator(own).generate_blocks("pencil sketch", seed=3), guided)
    args = ["generate", "--generator", tiny_generator, "--prompt", "pencil sketch", "--seed", "3"]
    ok = run(*args, "--guidance", "1.5", "--out", tmp_path / "g", "--json")
    assert ok.exit_code == 0, ok.output
    state, _ = load_adapter(tmp_path / "g")
    expected = gen.generate("pencil sketch", seed=3, guidance=1.5)
    assert state.keys() == expected.keys()
    assert all(torch.allclose(state[k], expected[k]) for k in state)
    bad = run(*args, "--guidance", "0", "--out", tmp_path / "h")
    assert bad.exit_code == 2 and "--guidance" in bad.output and not (tmp_path / "h").exists()


def test_generator_refuses_another_preset(tmp_path, tiny_base, tiny_generator):
    gen = DiffusionGenerator(tiny_generator)
    with pytest.raises(dnw.FingerprintMismatchError, match="fitted for e2gan preset tiny"):
        gen.check_fits(dnw.create_architecture("e2gan", "small"))


@pytest.mark.parametrize("init", ["generated", "mean", "nearest", "noisy-nearest", "fine"])
def test_every_init_fine_tunes_end_to_end(tmp_path, tiny_base, tiny_dataset, tiny_generator, init):
    from denoised_weights.plugins.image_translation.pairs import CataloguePairs, write_pairs

    src = CataloguePairs("sepia-0.8", size=32)
    write_pairs(tmp_path / "pairs", *src.pairs(12))
    result = run(
        "finetune",
        "--pairs",
        tmp_path / "pairs",
        "--prompt",
        "sepia",
        "--init",
        init,
        "--base",
        tiny_base,
        "--generator",
        tiny_generator,
        "--data",
        tiny_dataset,
        "--preset",
        "tiny",
        "--max-steps",
        "2",
        "--eval-every",
        "2",
        "--batch-size",
        "2",
        "--metrics",
        "l1",
        "--out",
        tmp_path / "out",
    )
    assert result.exit_code == 0, result.output
    curve = json.loads((tmp_path / "out" / "curve.json").read_text())
    assert curve["init"] == init and curve["init_seconds"] > 0
    assert curve["points"][0]["train_seconds"] == curve["init_seconds"]


def test_initialisers_need_their_inputs(tmp_path, tiny_base):
    for init, message in [
        ("generated", "needs --generator"),
        ("mean", "needs --data"),
        ("bogus", "unknown generator"),
    ]:
        result = run(
            "finetune",
            "--pairs",
            tmp_path,
            "--prompt",
            "x",
            "--init",
            init,
            "--base",
            tiny_base,
            "--preset",
            "tiny",
            "--out",
            tmp_path / "o",
        )
        assert result.exit_code == 1 and message in result.stderr, result.stderr


def test_baselines_behave(tiny_dataset):
    from denoised_weights.core.dataset import WeightDataset
    from denoised_weights.generators.baselines import (
        FineInit,
        MeanInit,
        NearestInit,
        NoisyNearestInit,
    )

    ds = WeightDataset(tiny_dataset)
    mean = MeanInit(tiny_dataset).generate("anything")
    states = [s for _, s in ds.iter_states()]
    key = next(iter(mean))
    assert torch.allclose(mean[key], torch.stack([s[key] for s in states]).mean(0))
    nearest = NearestInit(tiny_dataset, text_encoder="hash")
    concept = ds.concepts[1]
    prompt = ds.entries[2]["prompts"][0]
    assert nearest.nearest_concept(prompt)[0] == concept
    assert all(
        torch.equal(v, ds.load_concept(concept)[-1][k]) for k, v in nearest.generate(prompt).items()
    )
    noisy = NoisyNearestInit(tiny_dataset, text_encoder="hash")
    assert not torch.equal(noisy.generate(prompt, seed=0)[key], noisy.generate(prompt, seed=1)[key])
    fine = FineInit(tiny_dataset)
    u, _, sigma = next(iter(fine.bases.values()))
    assert torch.allclose(u.T @ u, torch.eye(u.shape[1]), atol=1e-4) and sigma.shape == (
        u.shape[1],
    )


def test_fine_handles_layers_with_fewer_channels_than_the_rank(tiny_dataset):
    """An RGB output conv (3 channels) under a rank-4 LoRA: bases are padded, not broken."""
    from denoised_weights.core.lora import lora_products
    from denoised_weights.generators.baselines import FineInit

    g = torch.Generator().manual_seed(0)
    fine = FineInit(tiny_dataset)
    fine.__dict__["states"] = [
        (
            {"concept": str(i)},
            {
                "out.lora_A.weight": torch.randn(4, 8, 3, 3, generator=g),
                "out.lora_B.weight": torch.randn(3, 4, 1, 1, generator=g),
            },
        )
        for i in range(5)
    ]
    state = fine.generate("anything")
    assert state["out.lora_B.weight"].shape == (3, 4, 1, 1)
    assert state["out.lora_A.weight"].shape == (4, 8, 3, 3)
    delta = lora_products(state)["out"]
    assert (
        torch.isfinite(delta).all()
        and torch.linalg.matrix_rank(delta) <= 3
        and delta.abs().sum() > 0
    )


def test_unet_learns_which_block_each_prompt_wants():
    """The one-step estimate at the noisiest timestep must follow the prompt and the block
    index (a generator that only learns the mean scores 0 here)."""
    from denoised_weights.generators.text import HashEncoder

    torch.manual_seed(0)
    n_blocks, size = 6, 64
    targets = torch.randn(2, n_blocks, size)  # two concepts, each with its own blocks
    tokens, mask = HashEncoder(dim=8).encode(["warm sepia photo", "cold blue photo"])
    model = WeightUNet1D(
        block_size=size,
        patch=16,
        channels=(16, 32),
        heads=2,
        text_dim=8,
        pooled_text=True,
        emb_head=True,
    )
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    index = torch.arange(n_blocks).repeat(2)
    concept = torch.arange(2).repeat_interleave(n_blocks)
    t = torch.full((2 * n_blocks,), 999)
    for _ in range(150):
        pred = model(torch.randn(2 * n_blocks, size), t, index, tokens[concept], mask[concept])
        loss = torch.nn.functional.mse_loss(pred, targets[concept, index])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        out = model(torch.randn(2 * n_blocks, size), t, index, tokens[concept], mask[concept])
    out = out.view(2, n_blocks, size)
    cos = torch.nn.functional.cosine_similarity
    for c in range(2):
        own = cos(out[c].flatten(), targets[c].flatten(), 0)
        other = cos(out[c].flatten(), targets[1 - c].flatten(), 0)
        assert own > 0.8 and own > other + 0.5


def test_a_fit_checkpoints_between_validations_too(
    tmp_path, tiny_dataset, fit_killed_at, monkeypatch
):
    """A long --val-every (experiments validate rarely) still leaves checkpoints to resume."""
    from denoised_weights.core.io import load_tensors
    from denoised_weights.pipeline import fit as fit_module

    monkeypatch.setattr(fit_module, "CHECKPOINT_EVERY", 2)
    opts = dict(text_encoder="hash", batch_size=8, max_steps=5, val_every=100)
    unbroken = fit_module.fit(tiny_dataset, tmp_path / "a", **opts)
    fit_killed_at(4, tiny_dataset, tmp_path / "b", **opts)  # no validation before the kill
    resumed = fit_module.fit(tiny_dataset, tmp_path / "b", **opts)
    weights = [
        load_tensors(d / "model" / "diffusion_pytorch_model.safetensors")[0]
        for d in (unbroken, resumed)
    ]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])

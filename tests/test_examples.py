"""Example-conditioned generators: a generator that reads a few of the new concept's examples
(through an example encoder trained with it) instead of, or beside, its prompt."""

import json

import pytest
import torch

import denoised_weights as dnw
from denoised_weights.core.io import load_tensors
from denoised_weights.generators.diffusion import DiffusionGenerator
from denoised_weights.pipeline.fit import fit

FIT = dict(
    text_encoder="hash",
    batch_size=8,
    max_steps=4,
    val_every=2,
    prediction_type="sample",
    task_concepts=2,
    task_batch=4,
    objective="task",
    n_examples=3,
)


def _examples(concept, n=3, seed=0):
    task = dnw.create_task("image-translation")
    arch = dnw.create_architecture("e2gan", "tiny")
    return task.make_data(task.get_concept(concept), arch=arch, split="train", n=n, seed=seed)


@pytest.fixture(scope="module")
def example_generators(tmp_path_factory, tiny_dataset, tiny_base):
    out = tmp_path_factory.mktemp("example_generators")
    return {
        mode: fit(tiny_dataset, out / mode, base=str(tiny_base), conditioning=mode, **FIT)
        for mode in ("examples", "both")
    }


def test_an_example_conditioned_fit_saves_its_encoder_and_reads_examples(example_generators):
    out = example_generators["examples"]
    info = json.loads((out / "generator.json").read_text())
    assert info["conditioning"] == "examples"
    assert json.loads((out / "examples.json").read_text())["example_encoder"] == "pair-cnn"
    history = json.loads((out / "val_loss.json").read_text())
    assert all(h["val_task"] > 0 and h["val_loss"] is None for h in history)
    gen = DiffusionGenerator(out)
    sepia, blur = _examples("sepia-0.8"), _examples("blur-2")
    a = gen.generate("", examples=sepia, seed=0)
    again = gen.generate("", examples=sepia, seed=0)
    b = gen.generate("", examples=blur, seed=0)
    assert all(torch.equal(a[k], again[k]) for k in a)  # the same seed, the same adapter
    assert any(not torch.allclose(a[k], b[k]) for k in a)  # other examples, another LoRA
    with pytest.raises(dnw.DnwError, match="reads the new concept's examples"):
        gen.generate("a sepia photo")


def test_a_both_generator_falls_back_to_the_prompt(example_generators):
    gen = DiffusionGenerator(example_generators["both"])
    with_examples = gen.generate("a sepia photo", examples=_examples("sepia-0.8"))
    prompt_only = gen.generate("a sepia photo")
    assert any(not torch.allclose(with_examples[k], prompt_only[k]) for k in prompt_only)
    with pytest.warns(UserWarning, match="reads the prompt alone"):
        gen.initialise("a sepia photo")


def test_fine_tuning_from_an_example_generator_reads_the_training_data(
    example_generators, tiny_base, tmp_path
):
    curve = dnw.finetune(
        tmp_path / "ft",
        concept="sepia-0.8",
        init="generated",
        preset="tiny",
        generator=example_generators["examples"],
        base=tiny_base,
        max_steps=2,
        eval_every=2,
        n_train=8,
        n_eval=4,
        metrics=["l1"],
    )
    assert [p["step"] for p in curve["points"]] == [0, 2]


def test_a_killed_example_fit_resumes_to_the_unbroken_model(
    tmp_path, tiny_dataset, tiny_base, fit_killed_at
):
    opts = {**FIT, "base": str(tiny_base), "conditioning": "examples"}
    unbroken = fit(tiny_dataset, tmp_path / "a", **opts)
    fit_killed_at(2, tiny_dataset, tmp_path / "b", **opts)
    resumed = fit(tiny_dataset, tmp_path / "b", **opts)
    for name in ("model/diffusion_pytorch_model.safetensors", "examples.safetensors"):
        w = [load_tensors(d / name)[0] for d in (unbroken, resumed)]
        assert all(torch.equal(w[0][k], w[1][k]) for k in w[0]), name


def test_examples_need_the_task_objective(tmp_path, tiny_dataset, tiny_base):
    with pytest.raises(dnw.DnwError, match="use it with --objective task"):
        fit(
            tiny_dataset,
            tmp_path / "g",
            base=str(tiny_base),
            **{**FIT, "objective": "weights", "conditioning": "examples"},
        )


def test_generate_reads_a_folder_of_pairs(example_generators, tiny_generator, tmp_path):
    from click.testing import CliRunner

    from denoised_weights.cli import create_cli
    from denoised_weights.plugins.image_translation.pairs import CataloguePairs, write_pairs

    write_pairs(tmp_path / "pairs", *CataloguePairs("sepia-0.8", size=32).pairs(4))
    cli = create_cli()
    args = [
        "generate",
        "--generator",
        str(example_generators["examples"]),
        "--prompt",
        "x",
        "--pairs",
        str(tmp_path / "pairs"),
        "--no-warmup",
    ]
    ok = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "a")])
    assert ok.exit_code == 0, ok.output
    assert (tmp_path / "a" / "adapter_model.safetensors").is_file()
    missing = CliRunner().invoke(cli, [*args[:-3], "--no-warmup", "--out", str(tmp_path / "b")])
    assert missing.exit_code != 0 and "reads the new concept's examples" in missing.output
    unnamed = [a for a in args if a not in ("--prompt", "x")]  # the examples alone
    ok = CliRunner().invoke(cli, [*unnamed, "--out", str(tmp_path / "c")])
    assert ok.exit_code == 0 and "the examples in" in ok.output, ok.output
    nothing = CliRunner().invoke(cli, [*args[:3], "--no-warmup", "--out", str(tmp_path / "d")])
    assert nothing.exit_code != 0 and "say what the new concept is" in nothing.output
    unnamed[2] = str(tiny_generator)  # a prompt-only generator needs the prompt
    text = CliRunner().invoke(cli, [*unnamed, "--out", str(tmp_path / "e")])
    assert text.exit_code != 0 and "reads only the prompt" in text.output


def test_retrieval_by_examples_finds_the_concept_its_examples_come_from(
    example_generators, tiny_dataset, tmp_path
):
    from denoised_weights.core.dataset import WeightDataset
    from denoised_weights.generators.baselines import NearestExamplesInit

    init = NearestExamplesInit(example_generators["examples"], tiny_dataset)
    task = dnw.create_task("image-translation")
    arch = dnw.create_architecture("e2gan", "tiny")
    ds = WeightDataset(tiny_dataset)
    for concept in ds.concepts:
        data = task.make_data(
            task.get_concept(concept), arch=arch, split="train", n=3, seed=NearestExamplesInit.SEED
        )
        state = init.initialise("", arch=arch, task=task, data=data)
        last = ds.load_concept(concept)[-1]
        assert all(torch.equal(state[k], last[k]) for k in last), concept
    with pytest.raises(dnw.DnwError, match="needs a generator that reads examples"):
        text_only = fit(
            tiny_dataset,
            tmp_path / "t",
            text_encoder="hash",
            batch_size=8,
            max_steps=1,
            val_every=1,
        )
        NearestExamplesInit(text_only, tiny_dataset)


def test_scored_retrieval_hands_over_the_stored_lora_that_fits_the_examples_best(
    tiny_dataset, tiny_base
):
    from denoised_weights.core.dataset import WeightDataset
    from denoised_weights.core.lora import apply_lora, functional_forward, lora_parameter_names
    from denoised_weights.generators.baselines import ScoredExamplesInit
    from denoised_weights.pipeline.base import load_base

    task = dnw.create_task("image-translation")
    arch = dnw.create_architecture("e2gan", "tiny")
    model = apply_lora(load_base(tiny_base, arch)[0], arch.lora_spec())
    ds = WeightDataset(tiny_dataset)
    data = task.make_data(task.get_concept(ds.concepts[1]), arch=arch, split="train", n=5, seed=3)
    init = ScoredExamplesInit(tiny_dataset, n_examples=4, checkpoints="all")
    state = init.initialise("", arch=arch, model=model, task=task, data=data)
    names = lora_parameter_names(model)
    batch = {k: v[:4] for k, v in data.items()}
    model.eval()

    def loss(s):
        with torch.no_grad():
            out = functional_forward(arch, model, {names[k]: v for k, v in s.items()}, batch)
            return float(task.loss(out, batch))

    stored = [s for c in ds.concepts for s in ds.load_concept(c)]
    assert len(init.candidates) == len(stored) == 8  # 4 concepts x 2 checkpoints
    assert loss(state) == pytest.approx(min(loss(s) for s in stored))
    assert any(all(torch.equal(state[k], s[k]) for k in s) for s in stored)
    with pytest.raises(dnw.DnwError, match="examples"):
        init.initialise("a prompt and no data")
    with pytest.raises(dnw.DnwError, match="checkpoints must be"):
        ScoredExamplesInit(tiny_dataset, checkpoints="first")


def test_the_python_call_conditions_on_a_folder_of_pairs(
    example_generators, tiny_generator, tmp_path
):
    from denoised_weights.plugins.image_translation.pairs import write_pairs

    sepia = _examples("sepia-0.8", n=4)
    folder = write_pairs(tmp_path / "sepia", sepia["A"], sepia["B"])
    gen = DiffusionGenerator(example_generators["examples"])
    from_folder = dnw.generate("", generator=gen, pairs=folder)["state"]
    loaded = dnw.api.load_examples(gen, folder)
    from_data = dnw.generate("", generator=gen, examples=loaded)["state"]
    assert all(torch.equal(from_folder[k], from_data[k]) for k in from_folder)
    with pytest.warns(UserWarning, match="reads only the prompt"):
        dnw.generate("a sepia photo", generator=tiny_generator, pairs=folder)

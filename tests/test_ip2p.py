"""InstructPix2Pix pairs, on a tiny randomly initialised pipeline built offline."""

from __future__ import annotations

import json
import string
from pathlib import Path

import pytest
import torch

from denoised_weights.core.errors import DnwError
from denoised_weights.core.interfaces import PairSource
from denoised_weights.plugins.image_translation import ip2p
from denoised_weights.plugins.image_translation.ip2p import InstructPix2PixPairs

PROMPT = "make it snowy"
MAX_TOKENS = 16


def _tokenizer(folder: Path):
    """A character-level CLIP tokenizer from a vocab.json + merges.txt written here."""
    from transformers import CLIPTokenizer

    folder.mkdir()
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in string.ascii_lowercase:
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)  # CLIP's BPE marks word ends with </w>
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    # transformers 5 ignores vocab_file=/merges_file= in the constructor; load the folder
    return CLIPTokenizer.from_pretrained(folder, model_max_length=MAX_TOKENS)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    from diffusers import (
        AutoencoderKL,
        EulerAncestralDiscreteScheduler,
        StableDiffusionInstructPix2PixPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    root = tmp_path_factory.mktemp("ip2p")
    tokenizer = _tokenizer(root / "tok")
    assert tokenizer(PROMPT).input_ids[1] != tokenizer.unk_token_id
    torch.manual_seed(0)
    width = (8, 16)
    unet = UNet2DConditionModel(
        sample_size=16,
        in_channels=8,  # noisy latents + the source image's latents
        out_channels=4,
        layers_per_block=1,
        block_out_channels=width,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=16,
        attention_head_dim=2,
        norm_num_groups=4,
    )
    vae = AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=width,
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=32,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=MAX_TOKENS,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
        )
    )
    scheduler = EulerAncestralDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear"
    )
    pipe = StableDiffusionInstructPix2PixPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(root / "model")
    return root / "model"


def _crops(n: int, size: int, *, split: str, seed: int, photos_dir=None) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed + (1000 if split == "eval" else 0))
    return torch.rand(n, 3, size, size, generator=g)


def _source(model_dir: Path, **kw) -> InstructPix2PixPairs:
    kw = {"size": 32, "steps": 2, "batch_size": 2, "device": "cpu", **kw}
    return InstructPix2PixPairs(PROMPT, model_dir, source_images=_crops, **kw)


def test_pairs_shapes_range_and_determinism(model_dir):
    src = _source(model_dir)
    assert isinstance(src, PairSource)
    a, b = src.pairs(3, seed=5)  # two batches: 2 + 1
    for x in (a, b):
        assert x.shape == (3, 3, 32, 32) and x.dtype == torch.float32
        assert x.min() >= 0.0 and x.max() <= 1.0
    assert torch.equal(a, _crops(3, 32, split="train", seed=5))
    a2, b2 = src.pairs(3, seed=5)
    assert torch.equal(a, a2) and torch.equal(b, b2)
    _, b_eval = src.pairs(1, split="eval", seed=5)
    assert not torch.equal(b_eval[0], b[0])


def test_edit_size_is_resized_to_size(model_dir):
    a, b = _source(model_dir, size=12, edit_size=32).pairs(1)
    assert a.shape == b.shape == (1, 3, 12, 12)


def test_default_source_is_sample_crops(model_dir, monkeypatch):
    from denoised_weights.plugins.image_translation import photos

    calls = []

    def fake(n, size, **kw):
        calls.append((n, size, kw))
        return torch.zeros(0, 3, size, size)

    monkeypatch.setattr(photos, "sample_crops", fake)
    src = InstructPix2PixPairs(PROMPT, model_dir, size=32, photos_dir="pics")
    a, b = src.pairs(0, split="eval", seed=3)
    assert calls == [(0, 32, {"split": "eval", "seed": 3, "photos_dir": "pics"})]
    assert a.shape == b.shape == (0, 3, 32, 32)
    assert src._pipeline is None  # nothing to edit: the model is not loaded


def test_missing_or_wrong_model_dir(tmp_path, model_dir):
    with pytest.raises(DnwError, match="local directory of an InstructPix2Pix"):
        InstructPix2PixPairs(PROMPT, tmp_path / "missing")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model_index.json").write_text("{not json")
    with pytest.raises(DnwError, match="timbrooks/instruct-pix2pix") as err:
        _source(broken).pairs(1)
    assert "\n" not in str(err.value)


def test_injected_pipeline_is_used():
    seen = {}

    class FakePipe:
        device = torch.device("cpu")

        def __call__(self, *, prompt, image, generator, output_type, **kw):
            seen.update(prompt=prompt, steps=kw["num_inference_steps"], output_type=output_type)
            return type("Out", (), {"images": 1.0 - image})()

    src = InstructPix2PixPairs(
        PROMPT, None, size=16, steps=3, pipeline=FakePipe(), source_images=_crops
    )
    a, b = src.pairs(2)
    assert torch.allclose(b, 1.0 - a)
    assert seen == {"prompt": [PROMPT] * 2, "steps": 3, "output_type": "pt"}
    assert ip2p._dtype_kwarg() in {"dtype", "torch_dtype"}


def test_dnw_pairs_source_instruct_pix2pix(tmp_path, model_dir):
    """The paper's data route from the command line: `dnw pairs --source instruct-pix2pix`
    edits photo crops with a local InstructPix2Pix model folder."""
    import numpy as np
    from click.testing import CliRunner
    from PIL import Image

    from denoised_weights.cli import create_cli
    from denoised_weights.core.plugins import get_plugin_manager
    from denoised_weights.plugins.image_translation.pairs import FolderPairs

    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(photos / f"{i}.png")

    def run(*args):
        return CliRunner().invoke(create_cli(get_plugin_manager()), [str(a) for a in args])

    args = [
        "pairs",
        "--source",
        "instruct-pix2pix",
        "--model",
        model_dir,
        "--prompt",
        PROMPT,
        "--photos",
        photos,
        "-n",
        "3",
        "--size",
        "32",
        "--device",
        "cpu",
        "-S",
        "steps=2",
        "-S",
        "batch_size=2",
    ]
    result = run(*args, "--out", tmp_path / "p")
    assert result.exit_code == 0, result.output
    assert f"wrote 3 pairs of instruct-pix2pix ({PROMPT})" in result.output
    info = json.loads((tmp_path / "p" / "pairs.json").read_text())
    assert info["source"] == "instruct-pix2pix" and info["prompts"] == [PROMPT]
    assert info["options"]["steps"] == 2 and info["options"]["model_dir"] == str(model_dir)
    a, b = FolderPairs(tmp_path / "p", size=32).all_pairs()
    assert a.shape == b.shape == (3, 3, 32, 32) and not torch.equal(a, b)
    # the same command again reuses its output; a catalogue-only option is refused
    assert run(*args, "--out", tmp_path / "p").exit_code == 0
    bad = run(*args, "--concept", "sepia-0.8", "--out", tmp_path / "q")
    assert bad.exit_code == 1 and "--source instruct-pix2pix takes no --concept" in bad.output
    assert not (tmp_path / "q").exists()


def test_base_and_collect_draw_their_pairs_from_instruct_pix2pix(tmp_path, model_dir):
    """The paper's data route for the whole pipeline: `dnw base` and `dnw collect` with
    `--source instruct-pix2pix --model DIR` edit photo crops with each concept's prompt."""
    import numpy as np
    from click.testing import CliRunner
    from PIL import Image

    import denoised_weights as dnw
    from denoised_weights.cli import create_cli
    from denoised_weights.core.plugins import get_plugin_manager

    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(photos / f"{i}.png")

    def run(*args):
        return CliRunner().invoke(create_cli(get_plugin_manager()), [str(a) for a in args])

    source = [
        "--source",
        "instruct-pix2pix",
        "--model",
        model_dir,
        "--photos",
        photos,
        "-S",
        "steps=1",
        "-S",
        "device=cpu",
        "-S",
        "batch_size=4",
    ]
    made = run(
        "base",
        "--preset",
        "tiny",
        "--steps",
        "2",
        "--concepts",
        "1",
        "--pairs-per-concept",
        "2",
        "--eval-every",
        "1",
        *source,
        "--out",
        tmp_path / "base",
    )
    assert made.exit_code == 0, made.output
    options = {
        "photos_dir": str(photos),
        "source": "instruct-pix2pix",
        "model_dir": str(model_dir),
        "source_options": {"steps": 1, "device": "cpu", "batch_size": 4},
    }
    assert json.loads((tmp_path / "base" / "base.json").read_text())["task_options"] == options
    made = run(
        "collect",
        "--base",
        tmp_path / "base",
        "--preset",
        "tiny",
        "--concepts",
        "1",
        "--checkpoints",
        "1",
        "--max-steps",
        "1",
        "--eval-every",
        "1",
        "--interval",
        "1",
        "--n-train",
        "2",
        "--n-eval",
        "2",
        *source,
        "--out",
        tmp_path / "data",
    )
    assert made.exit_code == 0, made.output
    assert "1 concepts, 1 entries" in made.output
    assert json.loads((tmp_path / "data" / "dataset.json").read_text())["task_options"] == options

    # the task's data is the source's edit of the concept's prompt, not the catalogue's edit
    task = dnw.create_task("image-translation", **options)
    arch = dnw.create_architecture("e2gan", "tiny")
    concept = task.select_concepts("train", n=1)[0]
    data = task.make_data(concept, arch=arch, split="train", n=2, seed=3)
    a, b = InstructPix2PixPairs(
        concept.prompt,
        model_dir,
        size=32,
        photos_dir=str(photos),
        steps=1,
        device="cpu",
        batch_size=4,
    ).pairs(2, seed=3)
    assert torch.equal(data["A"], a) and torch.equal(data["B"], b)
    plain = dnw.create_task("image-translation", photos_dir=str(photos))
    assert not torch.equal(plain.make_data(concept, arch=arch, split="train", n=2, seed=3)["B"], b)

    # options a source does not take, and tasks without sources: one line, nothing written
    for args, message in [
        (["--source", "catalogue", "--model", model_dir], "--source catalogue takes no --model"),
        (["--source", "instruct-pix2pix"], "--source instruct-pix2pix needs --model"),
        (
            ["--source", "instruct-pix2pix", "--model", model_dir, "-S", "angle=3"],
            "has no option 'angle'",
        ),
        (["--task", "digits", "--source", "catalogue"], "task 'digits' rejected its options"),
    ]:
        bad = run("base", "--preset", "tiny", "--steps", "1", *args, "--out", tmp_path / "bad")
        lines = bad.stderr.strip().splitlines()
        assert bad.exit_code == 1 and len(lines) == 1 and message in lines[0], bad.output
        assert not (tmp_path / "bad").exists()

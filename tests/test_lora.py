"""LoRA parameterisation and adapter directories."""

import json

import pytest
import torch

import denoised_weights as dnw
from denoised_weights.plugins.testing import randomized_state


def test_same_init_seed_same_lora_whatever_the_global_rng():
    arch = dnw.create_architecture("e2gan", "tiny")
    torch.manual_seed(1)
    a = dnw.lora_state(dnw.build_lora_model(arch))
    torch.manual_seed(2)
    b = dnw.lora_state(dnw.build_lora_model(arch))
    assert all(torch.equal(a[k], b[k]) for k in a)
    c = dnw.lora_state(dnw.build_lora_model(dnw.create_architecture("e2gan", "tiny", lora_seed=5)))
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_peft_default_init_is_identity():
    arch = dnw.create_architecture("e2gan", "tiny")
    base, lora = arch.build(), dnw.build_lora_model(arch)
    batch = arch.dummy_batch(2)
    with torch.no_grad():
        assert torch.allclose(arch.forward(base, batch), arch.forward(lora, batch), atol=1e-6)


def test_adapter_directory_is_peft_format(tmp_path):
    arch = dnw.create_architecture("e2gan", "tiny")
    state = randomized_state(arch)
    dnw.save_adapter(
        tmp_path / "a", state, arch.lora_spec(), fingerprint="abc", metadata={"prompt": "p"}
    )
    files = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert files == ["adapter_config.json", "adapter_model.safetensors", "dnw_adapter.json"]
    config = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 2
    loaded, info = dnw.load_adapter(tmp_path / "a", expected_fingerprint="abc")
    assert info["prompt"] == "p" and all(torch.equal(loaded[k], state[k]) for k in state)


def test_fingerprint_mismatch_is_a_clear_error(tmp_path):
    arch = dnw.create_architecture("e2gan", "tiny")
    dnw.save_adapter(tmp_path / "a", randomized_state(arch), arch.lora_spec(), fingerprint="abc")
    with pytest.raises(dnw.FingerprintMismatchError, match="made for fingerprint abc"):
        dnw.load_adapter(tmp_path / "a", expected_fingerprint="def")


def test_missing_adapter_dir(tmp_path):
    with pytest.raises(dnw.DnwError, match="not a PEFT adapter directory"):
        dnw.load_adapter(tmp_path / "none")


def test_load_state_of_another_shape_is_an_error():
    small = dnw.create_architecture("e2gan", "tiny", rank=3)
    model = dnw.build_lora_model(dnw.create_architecture("e2gan", "tiny"))
    with pytest.raises(dnw.DnwError, match="has shape"):
        dnw.load_lora_state(model, randomized_state(small))


def test_lora_spec_json_round_trip(tmp_path):
    spec = dnw.create_architecture("e2gan", "tiny").lora_spec()
    spec.save(tmp_path / "spec.json")
    assert dnw.LoraSpec.load(tmp_path / "spec.json") == spec
    with pytest.raises(dnw.DnwError, match="rank must be a positive integer"):
        dnw.LoraSpec(target_modules=["a"], rank=0)
    with pytest.raises(dnw.DnwError, match="unknown LoraSpec field"):
        dnw.LoraSpec.from_dict({"type": "lora", "target_modules": ["a"], "colour": 1})

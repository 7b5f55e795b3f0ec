import os
import sys
from pathlib import Path

import pytest
import torch

# Tests run with no ambient third-party plugins, only the suite's own (tests/site: the
# test-only `hash` text encoder, installed through the entry-point group as a third party's
# plugin is); it reaches commands run in subprocesses through PYTHONPATH. Tests that need
# other plugins add them.
SITE = str(Path(__file__).resolve().parent / "site")
sys.path.insert(0, SITE)
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [SITE, os.environ.get("PYTHONPATH")]))
os.environ["DNW_PLUGINS"] = "test-encoders"
os.environ.pop("DNW_PLUGINS_STRICT", None)
torch.set_num_threads(int(os.environ.get("DNW_TEST_THREADS", "1")))


@pytest.fixture(autouse=True)
def _registries():
    """Each test sees the built-ins plus the test-only fake architecture."""
    from denoised_weights.core.plugins import Registries, get_plugin_manager, set_default_registries
    from fake_arch import FakePlugin

    set_default_registries(Registries(get_plugin_manager(plugins=[FakePlugin()])))
    yield
    set_default_registries(None)


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory):
    """A (barely) trained tiny base model, shared by the tests that need one."""
    import denoised_weights as dnw

    out = tmp_path_factory.mktemp("tiny_base")
    dnw.train_base(out, preset="tiny", n_concepts=4, steps=4, pairs_per_concept=4, eval_every=2)
    return out


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory, tiny_base):
    """A tiny weight dataset: 4 concepts x 2 checkpoints."""
    import denoised_weights as dnw

    out = tmp_path_factory.mktemp("tiny_dataset")
    dnw.collect(
        tiny_base,
        out,
        preset="tiny",
        n_concepts=4,
        checkpoints=2,
        max_steps=6,
        eval_every=3,
        interval=3,
        n_train=12,
        n_eval=6,
    )
    return out


@pytest.fixture(scope="session")
def tiny_generator(tmp_path_factory, tiny_dataset):
    """A (barely) fitted tiny generator with the hash text encoder."""
    import denoised_weights as dnw

    out = tmp_path_factory.mktemp("gen")
    dnw.fit(tiny_dataset, out, text_encoder="hash", batch_size=16, max_steps=6, val_every=3)
    return out


@pytest.fixture(scope="session")
def tiny_adapter(tmp_path_factory, tiny_base):
    """A non-zero LoRA for the tiny base (a random state, so that merging changes weights)."""
    import denoised_weights as dnw
    from denoised_weights.pipeline.base import base_info

    arch = dnw.create_architecture("e2gan", "tiny", **base_info(tiny_base)["config"])
    state = dnw.lora_state(dnw.build_lora_model(arch))
    g = torch.Generator().manual_seed(0)
    state = {k: torch.randn(v.shape, generator=g) * 0.2 for k, v in state.items()}
    out = tmp_path_factory.mktemp("adapter") / "adapter"
    dnw.save_adapter(
        out,
        state,
        arch.lora_spec(),
        fingerprint=dnw.lora_fingerprint(arch),
        metadata={"prompt": "a random test translator"},
    )
    return out


@pytest.fixture
def fit_killed_at(monkeypatch):
    """``run(step, data, out, **opts)``: a fit that dies right after it checkpointed ``step``,
    as a kill would leave it (its folder is then resumed by the test)."""
    import denoised_weights.core.checkpoint as checkpoint
    from denoised_weights.pipeline.fit import fit

    def run(step, data, out, **opts):
        real = checkpoint.save_checkpoint

        def save_then_die(path, parts, meta):
            real(path, parts, meta)
            if meta["step"] == step:
                raise RuntimeError("killed")

        monkeypatch.setattr(checkpoint, "save_checkpoint", save_then_die)
        with pytest.raises(RuntimeError, match="killed"):
            fit(data, out, **opts)
        monkeypatch.undo()

    return run

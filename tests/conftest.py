import os

import pytest
import torch

# Tests run with no ambient third-party plugins; the ones that need plugins add them.
os.environ["DNW_PLUGINS"] = ""
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

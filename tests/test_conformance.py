"""The conformance kit on the reference architecture and on a test-only fake one."""

import pytest

from denoised_weights.plugins.testing import (
    ArchitectureConformance,
    TaskConformance,
    check_architecture,
)


class TestE2GANTiny(ArchitectureConformance):
    architecture = "e2gan"
    preset = "tiny"


class TestE2GANTrainNorms(ArchitectureConformance):
    architecture = "e2gan"
    preset = "tiny"
    options = {"train_norms": True}  # noqa: RUF012


class TestFake(ArchitectureConformance):
    architecture = "fake"
    preset = "tiny"


def test_kit_catches_a_broken_architecture():
    from fake_arch import FakeArch

    class Leaky(FakeArch):
        """Trains a parameter outside the LoRA: the kit must notice."""

        def build(self, seed=0):
            model = super().build(seed)
            return model

        def init_training(self, model, *, seed=0, **options):
            model.skip.weight.requires_grad_(True)
            import torch

            return torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)

        def training_step(self, model, state, batch):
            out = super().training_step(model, state, batch)
            model.skip.weight.data.add_(1.0)
            return out

    with pytest.raises(AssertionError, match="frozen parameters changed"):
        check_architecture(Leaky())


class TestImageTranslationTask(TaskConformance):
    task = "image-translation"


class TestDigitsTask(TaskConformance):
    task = "digits"

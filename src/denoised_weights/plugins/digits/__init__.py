"""A classifier task: scikit-learn's handwritten digits under described input transformations.

The second reference plugin, unlike image translation in kind: a small CNN (``digit-cnn``)
trained with cross-entropy, scored by accuracy. Registrations are lazy ``"module:attr"``
strings, so loading this plugin imports no torch.
"""

from __future__ import annotations

from denoised_weights.core.hookspecs import hookimpl

_MODULE = "denoised_weights.plugins.digits"

_PRESETS = {
    "tiny": {"widths": [4, 8], "extra_convs": False, "norm": "group", "rank": 2},
    "small": {"widths": [8, 16, 32], "extra_convs": False, "norm": "group", "rank": 4},
}


@hookimpl
def register_tasks(register):
    register("digits", f"{_MODULE}.task:DigitsTask")


@hookimpl
def register_architectures(register):
    register("digit-cnn", f"{_MODULE}.network:DigitCNN", **_PRESETS)


@hookimpl
def register_example_encoders(register):
    register("labelled-cnn", f"{_MODULE}.examples:LabelledEncoder")


@hookimpl
def register_metrics(register):
    register("accuracy", f"{_MODULE}.metrics:Accuracy")
    register("cross-entropy", f"{_MODULE}.metrics:CrossEntropy")

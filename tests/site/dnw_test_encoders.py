"""The test suite's plugin: the ``hash`` text encoder (a fixed random vector per word; no model,
no semantics), registered through the ``denoised_weights`` entry-point group exactly as a third
party's plugin would be. ``dnw`` itself does not register it, so users never see it.

``tests/conftest.py`` puts ``tests/site`` (this module and its dist-info) on ``sys.path`` and
``PYTHONPATH`` and allow-lists it with ``DNW_PLUGINS=test-encoders``, so commands run in the
test process and in subprocesses both have it.
"""

from denoised_weights import hookimpl


@hookimpl
def register_text_encoders(register):
    register("hash", "denoised_weights.generators.text:HashEncoder")

"""The maintainers' probe scripts in tools/ still start against the current package: each is
the command behind a table of docs/results-image-translation.md (its --help imports what it
uses from denoised_weights)."""

import subprocess
import sys
from pathlib import Path

import pytest

TOOLS = Path(__file__).resolve().parents[1] / "tools"
DOCS = Path(__file__).resolve().parents[1] / "docs" / "results-image-translation.md"
#: script -> what it regenerates (probe_data is the probes' shared loader, not a script)
PROBES = {
    "regression_probe.py": "the regression rows of 'How the generator came to learn the prompt'",
    "probe_generator.py": "the cosine rows of the same table",
    "scan_generation.py": "the one-step timestep scan (t = 999)",
    "step0_alternatives.py": "'What was tried to beat retrieval at step 0'",
    "head_probe.py": "that table's regression-head row",
}


@pytest.mark.parametrize("script", sorted(PROBES))
def test_probe_script_starts(script):
    assert f"tools/{script}" in DOCS.read_text(), f"{script} is no longer cited by the docs"
    out = subprocess.run(
        [sys.executable, str(TOOLS / script), "--help"],
        capture_output=True,
        text=True,
        cwd=TOOLS,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-1500:]
    assert out.stdout.startswith("usage:")

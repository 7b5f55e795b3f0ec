"""The dnw command line through click's CliRunner."""

import json

import pytest
from click.testing import CliRunner

from denoised_weights.cli import create_cli
from denoised_weights.core.plugins import get_plugin_manager


@pytest.fixture
def run():
    def _run(*args):
        return CliRunner().invoke(create_cli(get_plugin_manager()), list(args))

    return _run


def test_info_json(run):
    result = run("info", "e2gan", "--preset", "small", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["lora_params"] == 29528 and data["n_blocks"] == 116 and data["block_size"] == 256
    assert data["generator_params"] == 323043 and data["auxiliary_params"]["discriminator"] > 0
    assert len(data["fingerprint"]) == 16 and len(data["layers"]) == data["lora_layers"] == 18
    assert data["layers"][0]["lora"] == {
        "stem.conv.lora_A.weight": [4, 3, 7, 7],
        "stem.conv.lora_B.weight": [16, 4, 1, 1],
    }


def test_info_overrides(run):
    data = json.loads(
        run("info", "e2gan", "-p", "tiny", "--rank", "3", "--block-size", "100", "--json").stdout
    )
    assert data["rank"] == 3 and data["block_size"] == 100
    assert data["n_blocks"] == -(-data["lora_params"] // 100)


def test_info_text(run):
    result = run("info", "e2gan", "--preset", "tiny")
    assert (
        result.exit_code == 0 and "stem.conv" in result.stdout and "blocks of 64" in result.stdout
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["info", "no-such-arch"], "unknown architecture 'no-such-arch'"),
        (["info", "e2gan", "--rank", "-1"], "--rank must be a positive integer"),
        (["info", "e2gan", "--block-size", "0"], "--block-size must be a positive integer"),
        (["info", "e2gan", "--preset", "huge"], "no preset 'huge'"),
        (["info", "e2gan", "--rank", "two"], "'two' is not a valid integer"),
        (["list", "gizmos"], "No such command 'gizmos'"),
        (["frobnicate"], "No such command 'frobnicate'"),
    ],
)
def test_bad_input_is_one_line(run, args, message):
    result = run(*args)
    assert result.exit_code != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], result.stderr
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    "kind", ["architectures", "blockers", "generators", "text-encoders", "pair-sources", "metrics"]
)
def test_list_every_kind(run, kind):
    result = run("list", kind, "--json")
    assert result.exit_code == 0
    assert isinstance(json.loads(result.stdout), list)


def test_plugins_text_and_json(run):
    rows = json.loads(run("plugins", "--json").stdout)
    assert {"builtins", "image_translation"} <= {r["name"] for r in rows}
    assert run("plugins").stdout.startswith("builtins")


def test_console_script_help_is_fast_and_clean():
    import subprocess
    import sys
    from pathlib import Path

    dnw = Path(sys.executable).parent / "dnw"
    out = subprocess.run([str(dnw), "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "info" in out.stdout
    out = subprocess.run([str(dnw), "info", "nope"], capture_output=True, text=True)
    assert out.returncode == 1 and out.stderr.count("\n") == 1


def test_users_see_no_test_only_text_encoder(monkeypatch):
    """`hash` is registered by the test suite's own plugin (tests/site), not by dnw."""
    from click.testing import CliRunner

    from denoised_weights.cli import create_cli
    from denoised_weights.core.plugins import get_plugin_manager

    def encoders(plugins):
        monkeypatch.setenv("DNW_PLUGINS", plugins)
        cli = create_cli(get_plugin_manager())
        rows = json.loads(CliRunner().invoke(cli, ["list", "text-encoders", "--json"]).stdout)
        return {r["name"]: r["plugin"] for r in rows}

    assert set(encoders("")) == {"minilm", "clip"}  # what a user without plugins has
    assert encoders("test-encoders")["hash"] == "test-encoders"

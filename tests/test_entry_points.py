"""Third-party plugins discovered through entry points: good, broken, allow-listed, strict."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from denoised_weights.cli import create_cli
from denoised_weights.core.plugins import get_plugin_manager

GOOD = """
from denoised_weights import hookimpl

def make(**kw):
    from fake_arch import FakeArch
    return FakeArch(**kw)

@hookimpl
def register_architectures(register):
    register("x", "{module}:make")
"""


def make_dist(root: Path, dist: str, module: str, source: str) -> None:
    """A minimal installed distribution: dist-info with an entry point, plus its module."""
    info = root / f"{dist}-0.3.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.3\n")
    (info / "entry_points.txt").write_text(f"[denoised_weights]\n{dist} = {module}\n")
    (root / f"{module}.py").write_text(textwrap.dedent(source))


@pytest.fixture
def plugin_site(tmp_path, monkeypatch):
    make_dist(tmp_path, "dnw_good", "dnw_good_mod", GOOD.format(module="dnw_good_mod"))
    make_dist(tmp_path, "dnw_broken", "dnw_broken_mod", "import no_such_dependency_abc\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("DNW_PLUGINS", raising=False)
    yield tmp_path
    for mod in ("dnw_good_mod", "dnw_broken_mod"):
        sys.modules.pop(mod, None)


def invoke(args):
    runner = CliRunner()
    return runner.invoke(create_cli(get_plugin_manager()), args)


def test_good_plugin_listed_broken_one_warned(plugin_site, capsys):
    result = invoke(["plugins", "--json"])
    stderr = capsys.readouterr().err + result.stderr
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    good = next(r for r in rows if r["name"] == "dnw_good")
    assert good["version"] == "dnw_good 0.3"
    assert good["registered"] == {"architectures": ["x"]}
    assert good["hooks"] == ["register_architectures"]
    warnings = [line for line in stderr.splitlines() if line]
    assert len(warnings) == 1 and "'dnw_broken' failed to load" in warnings[0]
    assert "ModuleNotFoundError" in warnings[0] and "Traceback" not in stderr

    result = invoke(["list", "architectures", "--json"])
    assert result.exit_code == 0
    names = {r["name"]: r["plugin"] for r in json.loads(result.stdout)}
    assert names["x"] == "dnw_good" and names["e2gan"] == "image_translation"


def test_allow_list(plugin_site, monkeypatch, capsys):
    monkeypatch.setenv("DNW_PLUGINS", "dnw_good")
    result = invoke(["plugins", "--json"])
    assert result.exit_code == 0 and capsys.readouterr().err == ""
    assert "dnw_good" in {r["name"] for r in json.loads(result.stdout)}
    monkeypatch.setenv("DNW_PLUGINS", "")
    names = [r["name"] for r in json.loads(invoke(["plugins", "--json"]).stdout)]
    assert names == ["builtins", "image_translation", "digits"]


def test_strict_mode_raises(plugin_site, monkeypatch):
    monkeypatch.setenv("DNW_PLUGINS_STRICT", "1")
    with pytest.raises(ModuleNotFoundError):
        get_plugin_manager()


def test_pip_installed_plugin(tmp_path):
    """A real package with [project.entry-points.denoised_weights], installed by pip."""
    pkg = tmp_path / "src"
    (pkg / "dnw_pip_plugin").mkdir(parents=True)
    (pkg / "dnw_pip_plugin" / "__init__.py").write_text(
        "from denoised_weights import hookimpl\n\n"
        "def make(**kw):\n    raise RuntimeError('not built in this test')\n\n"
        "@hookimpl\ndef register_architectures(register):\n"
        "    register('x', 'dnw_pip_plugin:make')\n"
    )
    (pkg / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=64"]\nbuild-backend = "setuptools.build_meta"\n'
        '[project]\nname = "dnw-pip-plugin"\nversion = "1.2.0"\n'
        '[project.entry-points.denoised_weights]\npipped = "dnw_pip_plugin"\n'
    )
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(pkg),
        ],
        check=True,
        capture_output=True,
    )
    env = {"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"}
    dnw = Path(sys.executable).parent / "dnw"
    out = subprocess.run([str(dnw), "plugins", "--json"], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    row = next(r for r in json.loads(out.stdout) if r["name"] == "pipped")
    assert row["version"] == "dnw-pip-plugin 1.2.0" and row["registered"] == {
        "architectures": ["x"]
    }

"""Registries and the plugin manager, through the public API."""

import pytest

import denoised_weights as dnw
from denoised_weights.core.plugins import Registries, get_plugin_manager
from denoised_weights.core.registry import Registry


def test_create_with_preset_and_overrides():
    arch = dnw.create_architecture("e2gan", "tiny", rank=3)
    assert arch.config["rank"] == 3 and arch.config["image_size"] == 32
    assert arch.name == "e2gan"


def test_list_and_is():
    assert "e2gan" in dnw.list_architectures()
    assert dnw.list_architectures("e2*") == ["e2gan"]
    assert dnw.is_architecture("fake") and not dnw.is_architecture("nope")
    assert dnw.list_components("blockers") == ["layerwise"]


def test_unknown_name_lists_what_exists():
    with pytest.raises(
        dnw.UnknownNameError, match=r"unknown architecture 'nope' \(known: digit-cnn, e2gan, fake"
    ):
        dnw.create_architecture("nope")


def test_unknown_preset():
    with pytest.raises(dnw.DnwError, match="no preset 'huge'"):
        dnw.create_architecture("e2gan", "huge")


def test_duplicate_name_names_both_plugins():
    class A:
        __name__ = "plugin_a"

        @dnw.hookimpl
        def register_architectures(self, register):
            register("e2gan", "x:y")

    regs = Registries(get_plugin_manager(entry_points=False, plugins=[A()]))
    with pytest.raises(dnw.DnwError, match="both plugin 'image_translation' and plugin 'plugin_a'"):
        regs.architectures  # noqa: B018


def test_lazy_factory_is_not_imported_until_created():
    reg = Registry("things")
    reg.add("later", "no_such_module_xyz:make", plugin="p")
    assert reg.list() == ["later"]  # listing imports nothing
    with pytest.raises(ModuleNotFoundError):
        reg.create("later")


def test_bad_factory_reference():
    reg = Registry("things")
    reg.add("bad", "not-a-reference", plugin="p")
    with pytest.raises(dnw.DnwError, match="module:attr"):
        reg.create("bad")


def test_entries_remember_their_plugin():
    regs = dnw.default_registries()
    assert regs.architectures.get("e2gan").plugin == "image_translation"
    assert regs.architectures.get("fake").plugin == "fake_plugin"
    assert regs.blockers.get("layerwise").plugin == "builtins"


def test_unknown_kind():
    with pytest.raises(dnw.DnwError, match="unknown component kind"):
        dnw.default_registries()["gizmos"]


def test_package_import_is_light():
    import subprocess
    import sys

    code = "import sys, denoised_weights, denoised_weights.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_every_hook_is_documented_and_typed():
    import inspect

    from denoised_weights.core import hookspecs

    names = [n for n in dir(hookspecs) if n.startswith("register_")]
    assert set(names) == {*hookspecs.REGISTRY_HOOKS, "register_commands"}
    for name in names:
        fn = getattr(hookspecs, name)
        assert fn.__doc__, name
        assert list(inspect.signature(fn).parameters) in (["register"], ["cli"])

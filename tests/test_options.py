"""Every option's default and help are written once, in the option dataclasses of
:mod:`denoised_weights.pipeline.options` (a plugin's commands: the plugin's own, such as
:mod:`denoised_weights.plugins.image_translation.options`): the commands' options are made from
them and the API takes them as keywords."""

from __future__ import annotations

import dataclasses
import inspect
import sys

import pytest
from click.testing import CliRunner

import denoised_weights as dnw
from denoised_weights import api
from denoised_weights.cli import create_cli
from denoised_weights.cli.options import cli_default, cli_fields, cli_help
from denoised_weights.core.plugins import get_plugin_manager
from denoised_weights.pipeline.options import (
    BaseOptions,
    BenchmarkSpec,
    CollectOptions,
    ConceptData,
    ConceptSelection,
    DemoOptions,
    FinetuneOptions,
    FitConfig,
    GenerateOptions,
    InitOptions,
    SpeedOptions,
)
from denoised_weights.plugins.image_translation import export as export_module
from denoised_weights.plugins.image_translation import translate as translate_module
from denoised_weights.plugins.image_translation.options import (
    ExportOptions,
    TranslateOptions,
    TranslatorSpec,
)

#: command -> (its option dataclasses, the API call behind it, whether every field is an option)
COMMANDS = {
    "fit": ((FitConfig,), api.fit, True),
    "base": ((ConceptSelection, BaseOptions), api.train_base, True),
    "collect": ((ConceptSelection, CollectOptions), api.collect, True),
    "finetune": ((ConceptData, InitOptions, FinetuneOptions), api.finetune, True),
    "compare": ((ConceptData, InitOptions, FinetuneOptions), api.compare, False),
    "generate": ((GenerateOptions,), api.generate, True),
    "benchmark": ((BenchmarkSpec,), api.benchmark, True),
    "demo": ((DemoOptions,), api.demo, True),
    "speed": ((SpeedOptions,), api.speed, True),
    "translate": ((TranslatorSpec, TranslateOptions), translate_module.translate, True),
    "export": ((ExportOptions,), export_module.export, True),
}


@pytest.fixture(scope="module")
def cli():
    return create_cli(get_plugin_manager())


@pytest.mark.parametrize("name", COMMANDS)
def test_options_are_made_from_the_dataclass_fields(cli, name):
    classes, call, complete = COMMANDS[name]
    command = cli.commands[name]
    params = {p.name: p for p in command.params}
    fields = {f.name: (cls, f) for cls in reversed(classes) for f in cli_fields(cls)}
    for field_name, (cls, f) in fields.items():
        param = params.get(field_name)
        if param is None:
            assert not complete, f"dnw {name} has no option for {cls.__name__}.{field_name}"
            continue
        # a hand-written option of the same name would repeat the default and the help
        assert getattr(param, "dataclass_field", None) == (cls, field_name), (
            f"dnw {name} {param.opts[0]} is written by hand; make it from {cls.__name__}"
        )
        if field_name in _required(cls):
            assert param.required, param.opts
        else:
            assert param.default == cli_default(cls, f), param.opts
        assert param.help == cli_help(f), param.opts
    # the API takes the fields as keywords and declares none of them (no second default)
    signature = inspect.signature(call).parameters
    named = sorted(set(signature) & set(fields))
    assert not named, f"{call.__module__}.{call.__name__} repeats {named}: take them as **options"
    assert any(p.kind is p.VAR_KEYWORD for p in signature.values())


@pytest.mark.parametrize(
    ("name", "args", "classes"),
    [
        ("fit", ["--data", "d", "--out", "o"], (FitConfig,)),
        ("base", ["--out", "o"], (BaseOptions, ConceptSelection)),
        ("collect", ["--base", "b", "--out", "o"], (CollectOptions, ConceptSelection)),
        ("finetune", ["--out", "o"], (ConceptData, InitOptions, FinetuneOptions)),
        ("benchmark", ["--out", "o"], ()),
        ("demo", [], (DemoOptions,)),
        ("speed", [], (SpeedOptions,)),
        ("translate", ["in.png", "--out", "o"], (TranslatorSpec, TranslateOptions)),
        ("export", ["--out", "o.onnx", "--adapter", "a"], (ExportOptions,)),
    ],
)
def test_a_command_without_options_calls_the_api_with_the_dataclass_defaults(
    tmp_path, monkeypatch, cli, name, args, classes
):
    seen = {}

    def called(*args, **kwargs):
        seen.update(kwargs)
        raise SystemExit(0)  # before the command reads what the call wrote

    call = COMMANDS[name][1]  # the command looks it up in its module when it runs
    monkeypatch.setattr(sys.modules[call.__module__], call.__name__, called)
    (tmp_path / "d").mkdir()
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, [name, *args])
    assert result.exit_code == 0 and seen, result.output
    for cls in classes:
        given = {f.name: seen[f.name] for f in cli_fields(cls)}
        required = {k: v for k, v in given.items() if k in _required(cls)}
        defaults = {f.name: getattr(cls(**required), f.name) for f in cli_fields(cls)}
        assert {k: getattr(cls(**given), k) for k in given} == defaults, cls.__name__


def _required(cls: type) -> set[str]:
    """The fields of ``cls`` without a default (required options)."""
    missing = dataclasses.MISSING
    return {
        f.name
        for f in dataclasses.fields(cls)
        if f.default is missing and f.default_factory is missing
    }


def test_a_field_without_a_default_is_a_required_option(cli):
    params = {p.name: p for p in cli.commands["export"].params}
    assert _required(ExportOptions) == {"adapter"} and params["adapter"].required
    assert not any(params[name].required for name in ("base", "format", "n_check"))
    missing = CliRunner().invoke(cli, ["export", "--out", "o.onnx"])
    assert missing.exit_code == 2 and "--adapter" in missing.output


class _InitPlugin:
    @dnw.hookimpl
    def register_generators(self, register):
        register("my-own-init", "denoised_weights.generators.baselines:MeanInit")

    @dnw.hookimpl
    def register_text_encoders(self, register):
        register("my-encoder", "denoised_weights.generators.text:HashEncoder")


def test_lists_of_names_come_from_the_registries():
    cli = create_cli(get_plugin_manager(plugins=[_InitPlugin()]))

    def help_of(*args):
        wide = {"terminal_width": 1000, "max_content_width": 1000}  # no name broken at a hyphen
        return " ".join(CliRunner().invoke(cli, [*args, "--help"], **wide).output.split())

    finetune = help_of("finetune")
    assert "Available: scratch, standard, blend," in finetune and "my-own-init" in finetune
    for command in ("compare", "benchmark", "demo"):
        assert "my-own-init" in help_of(command), command
    fit = help_of("fit")
    assert "Text encoder. Available: clip," in fit and "minilm, my-encoder." in fit
    assert "Available: digits, image-translation." in help_of("base")
    assert "Available: catalogue, folder, instruct-pix2pix." in help_of("collect")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: FinetuneOptions(max_steps=0), "--max-steps must be"),
        (lambda: CollectOptions(tol=float("nan")), "--tol must be a finite number in [0, 1]"),
        (lambda: CollectOptions(checkpoints=1001), "--checkpoints must be an integer in [1, 1000]"),
        (lambda: BaseOptions(batch_size=5000), "--batch-size must be an integer in [1, 4096]"),
        (lambda: ConceptSelection(max_parts=4), "--max-parts must be an integer in [1, 3]"),
        (lambda: FitConfig(n_examples=0), "--n-examples must be an integer in [1, 1024]"),
        (lambda: FitConfig(noisy_share=1.5), "--noisy-share must be a finite number in [0, 1]"),
        (lambda: FitConfig(objective="x"), "unknown --objective 'x'"),
        (lambda: BenchmarkSpec("o", seeds=101), "--seeds must be an integer in [1, 100]"),
        (lambda: GenerateOptions(steps=0), "--steps must be an integer in [1, 1000]"),
        (lambda: GenerateOptions(start="x"), "unknown --start 'x'"),
        (lambda: GenerateOptions(guidance=0), "--guidance must be a finite number in (0, 10]"),
        (lambda: SpeedOptions(rounds=0), "--rounds must be an integer in [1, 10000]"),
        (lambda: SpeedOptions(threads=(1, 0)), "--threads: give one or more positive"),
        (lambda: SpeedOptions(threads="1,x"), "--threads: '1,x' is not a list of integers"),
        (lambda: DemoOptions(n_concepts=0), "--concepts must be an integer in [1, 100]"),
        (lambda: TranslatorSpec(seed=-1), "--seed must be an integer from 0 to 4294967295"),
        (lambda: TranslateOptions(tile=8192), "--tile must be an integer in [16, 4096]"),
        (lambda: ExportOptions("a", format="png"), "unknown --format 'png'"),
        (lambda: ExportOptions("a", n_check=0), "--check-images must be an integer in [1, 1024]"),
    ],
)
def test_the_api_checks_the_bounds_the_command_line_checks(make, message):
    with pytest.raises(dnw.DnwError) as err:
        make()
    assert message in str(err.value)


def test_unknown_api_keywords_are_named():
    with pytest.raises(TypeError, match=r"unexpected keyword argument.*max_step\b"):
        api.finetune("nowhere", max_step=3)
    with pytest.raises(TypeError, match=r"unexpected keyword argument.*round\b"):
        api.speed(round=3)
    with pytest.raises(TypeError, match=r"unexpected keyword argument.*tiles\b"):
        translate_module.translate("nowhere", "out", tiles=3)
    with pytest.raises(TypeError, match=r"unexpected keyword argument.*check_image\b"):
        export_module.export("out.onnx", adapter="a", check_image=3)

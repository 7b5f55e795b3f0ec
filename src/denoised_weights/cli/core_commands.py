"""Commands every installation has: ``plugins``, ``list``, ``info``."""

from __future__ import annotations

from typing import Any

import click

from denoised_weights.cli import echo_json, registries_of
from denoised_weights.core.plugins import Registries, plugin_infos

KINDS = (
    "tasks",
    "architectures",
    "blockers",
    "generators",
    "text-encoders",
    "pair-sources",
    "metrics",
)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def plugins(ctx: click.Context, as_json: bool) -> None:
    """Installed plugins: name, version, hooks and what each registered."""
    pm, registries = ctx.find_root().obj["pm"], registries_of(ctx)
    registered: dict[str, dict[str, list[str]]] = {}
    for kind in KINDS:
        for entry in registries[kind].entries():
            registered.setdefault(entry.plugin, {}).setdefault(kind, []).append(entry.name)
    rows = []
    for info in plugin_infos(pm):
        rows.append(
            {
                "name": info.name,
                "version": info.version,
                "builtin": info.builtin,
                "hooks": info.hooks,
                "registered": registered.get(info.name, {}),
            }
        )
    if as_json:
        echo_json(rows)
        return
    for row in rows:
        tag = " (built-in)" if row["builtin"] else ""
        click.echo(f"{row['name']} {row['version'] or ''}{tag}")
        for kind, names in row["registered"].items():
            click.echo(f"  {kind}: {', '.join(names)}")


@click.group(name="list")
def list_group() -> None:
    """List registered components of one kind (architectures, blockers, ...)."""


def make_lister(kind: str) -> click.Command:
    @click.command(name=kind, help=f"List registered {kind}.")
    @click.argument("pattern", default="*")
    @click.option("--json", "as_json", is_flag=True, help="Print JSON.")
    @click.pass_context
    def lister(ctx: click.Context, pattern: str, as_json: bool) -> None:
        registry = registries_of(ctx)[kind]
        rows = [
            {"name": e.name, "plugin": e.plugin, "presets": sorted(e.presets)}
            for e in registry.entries()
            if e.name in set(registry.list(pattern))
        ]
        if as_json:
            echo_json(rows)
            return
        for row in rows:
            presets = f"  presets: {', '.join(row['presets'])}" if row["presets"] else ""
            click.echo(f"{row['name']}  [{row['plugin']}]{presets}")

    return lister


for kind in KINDS:
    list_group.add_command(make_lister(kind))


@list_group.command(name="concepts")
@click.argument("pattern", default="*")
@click.option("--task", default="image-translation", show_default=True, help="Registered task.")
@click.option(
    "--split", type=click.Choice(["train", "held-out"]), default=None, help="Only this split."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def list_concepts(
    ctx: click.Context, pattern: str, task: str, split: str | None, as_json: bool
) -> None:
    """List a task's concepts (id, split, family, prompts); PATTERN matches ids (fnmatch)."""
    import fnmatch

    from denoised_weights.core.components import create_task

    rows = [
        {
            "id": c.id,
            "split": c.split,
            "family": c.family,
            "holdout": c.holdout or None,
            "prompts": list(c.prompts),
        }
        for c in create_task(task, registries=registries_of(ctx)).concepts(split)
        if fnmatch.fnmatch(c.id, pattern)
    ]
    if as_json:
        echo_json(rows)
        return
    for row in rows:
        click.echo(f"{row['id']:<40} {row['split']:<9} {row['prompts'][0]}")


@click.command()
@click.argument("architecture")
@click.option("--preset", "-p", default=None, help="Named preset (e.g. tiny, small, paper).")
@click.option("--rank", "-r", type=int, default=None, help="Override the LoRA rank (>= 1).")
@click.option("--block-size", "-b", type=int, default=None, help="Values per weight block (>= 1).")
@click.option("--blocker", default="layerwise", show_default=True, help="Registered blocker.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def info(
    ctx: click.Context,
    architecture: str,
    preset: str | None,
    rank: int | None,
    block_size: int | None,
    blocker: str,
    as_json: bool,
) -> None:
    """LoRA layers and shapes, parameter counts, block count and fingerprint of ARCHITECTURE."""
    from denoised_weights.core.components import architecture_info

    data = architecture_info(
        architecture,
        preset,
        rank=rank,
        block_size=block_size,
        blocker=blocker,
        registries=registries_of(ctx),
    )
    if as_json:
        echo_json(data)
        return
    _print_info(data)


def add_commands(cli: click.Group, registries: Registries | None = None) -> None:
    cli.add_command(plugins)
    cli.add_command(list_group)
    cli.add_command(info)


def _print_info(data: dict[str, Any]) -> None:
    click.echo(
        f"{data['architecture']} (preset {data['preset'] or 'default'}), "
        f"fingerprint {data['fingerprint']}"
    )
    click.echo(f"{'layer':<28} {'type':<8} {'weight':<18} lora params")
    for layer in data["layers"]:
        shape = "x".join(str(s) for s in layer["weight_shape"] or [])
        click.echo(f"{layer['name']:<28} {layer['type']:<8} {shape:<18} {layer['lora_params']}")
    aux = ", ".join(f"{k} {v:,}" for k, v in data["auxiliary_params"].items())
    click.echo(
        f"generator params {data['generator_params']:,}; {aux}; LoRA rank {data['rank']}: "
        f"{data['lora_params']:,} params in {data['lora_layers']} "
        f"layers = {data['n_blocks']} blocks "
        f"of {data['block_size']} ({data['padding']} padding)"
    )

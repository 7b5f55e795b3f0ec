"""The ``dnw`` command line, built by :func:`create_cli` from a plugin manager."""

from __future__ import annotations

import json
import sys
from typing import Any

import click
import pluggy

from denoised_weights.core.errors import DnwError
from denoised_weights.core.plugins import (
    Registries,
    get_plugin_manager,
    plugin_infos,
    set_default_registries,
)


class DnwGroup(click.Group):
    """A click group whose errors are one line on stderr and a non-zero exit, never a traceback."""

    def main(self, args: Any = None, prog_name: str | None = None, **extra: Any) -> Any:
        extra.pop("standalone_mode", None)
        try:
            rv = super().main(
                args=args, prog_name=prog_name or "dnw", standalone_mode=False, **extra
            )
        except click.UsageError as exc:
            hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
            click.echo(f"Error: {exc.format_message()}{hint}", err=True)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            click.echo(f"Error: {exc.format_message()}", err=True)
            sys.exit(exc.exit_code)
        except DnwError as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(1)
        except click.Abort:
            click.echo("Aborted.", err=True)
            sys.exit(130)
        except KeyboardInterrupt:
            click.echo("Interrupted: rerun the same command to resume.", err=True)
            sys.exit(130)
        sys.exit(rv if isinstance(rv, int) else 0)


def echo_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2))


def registries_of(ctx: click.Context) -> Registries:
    return ctx.find_root().obj["registries"]


def create_cli(pm: pluggy.PluginManager | None = None) -> click.Group:
    """Build the ``dnw`` group for ``pm`` (a fresh default plugin manager if omitted)."""
    pm = pm if pm is not None else get_plugin_manager()
    registries = Registries(pm)

    @click.group(cls=DnwGroup, context_settings={"help_option_names": ["-h", "--help"]})
    @click.version_option(package_name="denoised-weights", prog_name="dnw")
    @click.pass_context
    def cli(ctx: click.Context) -> None:
        """denoised-weights: LoRA weights for new concepts from a text-conditioned diffusion model."""
        ctx.obj = {"pm": pm, "registries": registries}
        set_default_registries(registries)

    from denoised_weights.cli import core_commands

    core_commands.add_commands(cli, registries)
    pm.hook.register_commands(cli=cli)
    return cli


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    create_cli()(args=argv)


__all__ = ["DnwGroup", "create_cli", "echo_json", "main", "plugin_infos", "registries_of"]

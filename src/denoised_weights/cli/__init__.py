"""The ``dnw`` command line, built by :func:`create_cli` from a plugin manager.

One error boundary: a failure the user can fix (a :class:`DnwError`, an operating-system error
such as a full disk or a read-only folder, a damaged file) prints one ``Error: ...`` line that
says what to do and exits non-zero; any other exception prints one line too, asking to rerun
with ``--debug`` (or ``DNW_DEBUG=1``), which shows the traceback instead.
"""

from __future__ import annotations

import errno
import json
import os
import sys
from typing import Any

import click
import pluggy

from denoised_weights.core import interrupt
from denoised_weights.core.errors import DnwError
from denoised_weights.core.plugins import Registries, get_plugin_manager, plugin_infos

EXIT_ERROR, EXIT_INTERNAL, EXIT_INTERRUPTED = 1, 3, 130
_OS_HINTS = {
    errno.ENOSPC: "the disk is full; free some space and rerun the same command to resume",
    errno.EDQUOT: "the disk quota is exhausted; free some space and rerun to resume",
    errno.EROFS: "the file system is read-only; choose another --out",
    errno.EACCES: "permission denied; choose a folder you can write to",
    errno.EPERM: "operation not permitted; choose a folder you can write to",
    errno.ENOTDIR: "a part of the path is a file, not a folder; choose another path",
    errno.EISDIR: "a folder is where a file was expected; choose another path",
    errno.ENAMETOOLONG: "the path is too long; choose a shorter one",
    errno.ENOMEM: "out of memory; use a smaller preset or batch",
}


def debug_enabled() -> bool:
    return (os.environ.get("DNW_DEBUG") or "").strip().lower() in {"1", "true", "yes", "on"}


def os_error_message(exc: OSError) -> str:
    where = exc.filename or ""
    hint = _OS_HINTS.get(exc.errno or -1, "check the path and the disk, then rerun")
    reason = exc.strerror or type(exc).__name__
    return f"{where + ': ' if where else ''}{reason}: {hint}"


class DnwGroup(click.Group):
    """A click group whose errors are one line on stderr and a non-zero exit, never a traceback."""

    def main(self, args: Any = None, prog_name: str | None = None, **extra: Any) -> Any:
        extra.pop("standalone_mode", None)
        argv = [str(a) for a in (sys.argv[1:] if args is None else args)]
        debug = (
            debug_enabled() or "--debug" in argv[: argv.index("--") if "--" in argv else len(argv)]
        )
        try:
            with interrupt.catching():
                rv = super().main(
                    args=args, prog_name=prog_name or "dnw", standalone_mode=False, **extra
                )
        except click.UsageError as exc:
            hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
            fail(f"{exc.format_message()}{hint}", exc.exit_code)
        except click.ClickException as exc:
            fail(exc.format_message(), exc.exit_code)
        except (click.Abort, KeyboardInterrupt):
            fail("interrupted; rerun the same command to resume where it stopped", EXIT_INTERRUPTED)
        except Exception as exc:  # the boundary: one line, or the traceback with --debug
            if debug:
                raise
            fail(*describe_exception(exc))
        sys.exit(rv if isinstance(rv, int) else 0)


def describe_exception(exc: BaseException) -> tuple[str, int]:
    """``(message, exit code)`` for an exception that reached the command line."""
    if isinstance(exc, DnwError):
        return str(exc), EXIT_ERROR
    if isinstance(exc, MemoryError):
        return "out of memory; use a smaller preset, batch or image", EXIT_ERROR
    if isinstance(exc, OSError):
        return os_error_message(exc), EXIT_ERROR
    detail = (str(exc).splitlines() or [""])[0][:300]
    return (
        f"internal error ({type(exc).__name__}: {detail}); rerun with --debug for the traceback "
        "and report it",
        EXIT_INTERNAL,
    )


def fail(message: str, code: int = EXIT_ERROR) -> None:
    click.echo(f"Error: {' '.join(message.split())}", err=True)
    sys.exit(code)


def echo_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, default=str))


def registries_of(ctx: click.Context) -> Registries:
    return ctx.find_root().obj["registries"]


def create_cli(pm: pluggy.PluginManager | None = None) -> click.Group:
    """Build the ``dnw`` group for ``pm`` (a fresh default plugin manager if omitted)."""
    pm = pm if pm is not None else get_plugin_manager()
    registries = Registries(pm)

    @click.group(cls=DnwGroup, context_settings={"help_option_names": ["-h", "--help"]})
    @click.version_option(package_name="denoised-weights", prog_name="dnw")
    @click.option(
        "--debug", is_flag=True, help="Show the traceback of an error (or set DNW_DEBUG=1)."
    )
    @click.pass_context
    def cli(ctx: click.Context, debug: bool) -> None:
        """denoised-weights: LoRA weights for new concepts from a text-conditioned diffusion
        model."""
        ctx.obj = {"pm": pm, "registries": registries}

    from denoised_weights.cli import core_commands, generator_commands, pipeline_commands

    core_commands.add_commands(cli, registries)
    pipeline_commands.add_commands(cli)
    generator_commands.add_commands(cli)
    pm.hook.register_commands(cli=cli)
    return cli


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: set the thread policy, then run the command line."""
    from denoised_weights.core.threads import configure_process

    configure_process()
    create_cli()(args=argv)


__all__ = ["DnwGroup", "create_cli", "echo_json", "main", "plugin_infos", "registries_of"]

"""The `launcher` command. Each command lives in its own module; bodies parse, call one library function, print."""
from __future__ import annotations

import functools
import os
import sys
from typing import TYPE_CHECKING, Annotated

import typer

from . import bench as _bench
from . import cluster as _cluster
from . import gateway as _gateway
from . import download as _download
from . import estimate as _estimate
from . import launch as _launch
from . import manage as _manage
from . import plan as _plan
from . import smoke as _smoke
from . import serve as _serve
from . import tune as _tune

if TYPE_CHECKING:
    import click

app = typer.Typer(
    name="launcher",
    help="Plan, launch and supervise vLLM servers: know before loading whether a model and a context length fit.",
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion for bash, zsh, fish, PowerShell
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        from .. import __version__
        from ..engines import vllm as vllm_engine
        from ..errors import ExitCode

        inst = vllm_engine.installed()
        vllm = f"{inst.distribution} {inst.version}" if inst else "not installed (pip install 'launcher[gpu]' or 'launcher[cpu]')"
        print(f"launcher {__version__}\nvLLM: {vllm}\npython: {sys.executable}")
        raise typer.Exit(ExitCode.OK)


@app.callback()
def _root(version: Annotated[bool, typer.Option("--version", is_eager=True, callback=_version,
                                                help="The launcher's version and the vLLM it will run, then exit.")] = False) -> None:
    """Plan, launch and supervise vLLM servers: know before loading whether a model and a context length fit."""


PASSTHROUGH = {"allow_extra_args": True, "ignore_unknown_options": True}
app.command("estimate", context_settings=PASSTHROUGH)(_estimate.estimate)
app.command("launch", context_settings=PASSTHROUGH)(_launch.launch)
app.command("smoke", context_settings=PASSTHROUGH)(_smoke.smoke)
app.command("bench", context_settings=PASSTHROUGH)(_bench.bench)
app.command("tune", context_settings=PASSTHROUGH)(_tune.tune)
app.command("plan")(_plan.plan)
app.command("serve")(_serve.serve)
app.command("pull")(_download.pull)
app.command("ps")(_manage.ps)
app.command("status")(_manage.status)
app.command("logs")(_manage.logs)
app.command("stop")(_manage.stop)
app.command("rm")(_manage.rm)
app.add_typer(_cluster.app, name="cluster")
app.add_typer(_gateway.app, name="gateway")
app.command("_supervise", hidden=True)(_launch.supervise_detached)


def run(argv: list[str] | None = None) -> int:
    """The CLI as a function: every outcome is an exit code; errors are one line on stderr, never a traceback
    (LAUNCHER_DEBUG=1 lets them through)."""
    import click

    from ..errors import ExitCode, LauncherError

    debug = bool(os.environ.get("LAUNCHER_DEBUG"))
    try:
        rc = _command().main(args=argv, prog_name="launcher", standalone_mode=False)
        return rc if isinstance(rc, int) else ExitCode.OK
    except LauncherError as e:
        if debug:
            raise
        _say(f"error: {e}")
        return e.exit_code
    except (typer.Exit, click.exceptions.Exit) as e:
        return e.exit_code
    except (KeyboardInterrupt, click.exceptions.Abort):
        return ExitCode.INTERRUPTED
    except click.exceptions.BadParameter as e:
        if debug:
            raise
        _say(f"error: {e.message if e.param is None else e.format_message()}")
        return ExitCode.BAD_INPUT
    except click.exceptions.ClickException as e:  # usage errors: unknown option, missing value, ...
        if debug:
            raise
        _say(f"error: {e.format_message()}")
        return ExitCode.BAD_INPUT
    except Exception as e:
        if debug:
            raise
        if _is_click_error(e):
            _say(f"error: {e.format_message()}")
            return ExitCode.BAD_INPUT
        _say(f"error: internal error: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''} "
             "(run again with LAUNCHER_DEBUG=1 for the traceback, and please report it)")
        return ExitCode.FAILED


@functools.lru_cache(maxsize=1)
def _command() -> click.Command:
    """The click command typer builds from the app (once per process: building it is most of a short call)."""
    return typer.main.get_command(app)


def _is_click_error(e: Exception) -> bool:
    """typer ships its own copy of click's exceptions: recognised by shape (a message formatter, an exit code)."""
    return hasattr(e, "format_message") and hasattr(e, "exit_code")


def _say(line: str) -> None:
    """One line on stderr, whatever the message carries (a value with a newline in it stays on the line)."""
    line = " ".join(line.splitlines())
    try:
        print(line, file=sys.stderr)
    except OSError:  # stderr gone (a closed terminal): the exit code still tells
        pass


def main() -> None:
    """Entry point of the `launcher` script."""
    sys.exit(run())

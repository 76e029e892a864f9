"""The `launcher` command. Each command lives in its own module; bodies parse, call one library function, print."""
from __future__ import annotations

import os
import sys

import typer

from . import bench as _bench
from . import cluster as _cluster
from . import download as _download
from . import estimate as _estimate
from . import launch as _launch
from . import manage as _manage
from . import smoke as _smoke
from . import tune as _tune

app = typer.Typer(
    name="launcher",
    help="Plan, launch and supervise vLLM servers: know before loading whether a model and a context length fit.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
PASSTHROUGH = {"allow_extra_args": True, "ignore_unknown_options": True}
app.command("estimate", context_settings=PASSTHROUGH)(_estimate.estimate)
app.command("launch", context_settings=PASSTHROUGH)(_launch.launch)
app.command("smoke", context_settings=PASSTHROUGH)(_smoke.smoke)
app.command("bench", context_settings=PASSTHROUGH)(_bench.bench)
app.command("tune", context_settings=PASSTHROUGH)(_tune.tune)
app.command("pull")(_download.pull)
app.command("ps")(_manage.ps)
app.command("status")(_manage.status)
app.command("logs")(_manage.logs)
app.command("stop")(_manage.stop)
app.command("rm")(_manage.rm)
app.add_typer(_cluster.app, name="cluster")
app.command("_supervise", hidden=True)(_launch.supervise_detached)


def main() -> None:
    """Entry point: LauncherError -> one line on stderr and its exit code; tracebacks only with LAUNCHER_DEBUG=1."""
    from ..errors import EXIT_BAD_INPUT, LauncherError

    try:
        rc = app(standalone_mode=False)
        sys.exit(rc if isinstance(rc, int) else 0)
    except LauncherError as e:
        if os.environ.get("LAUNCHER_DEBUG"):
            raise
        print(f"error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as e:  # usage errors of typer's click: one line, exit 2
        if type(e).__name__ == "Abort":
            sys.exit(130)
        if hasattr(e, "format_message") and hasattr(e, "exit_code") and not os.environ.get("LAUNCHER_DEBUG"):
            print(f"error: {e.format_message()}", file=sys.stderr)
            sys.exit(EXIT_BAD_INPUT)
        raise

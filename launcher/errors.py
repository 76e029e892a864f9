"""One exception family; each error knows its exit code and says what to do next."""
from __future__ import annotations

import difflib
import enum
from collections.abc import Iterable


class ExitCode(enum.IntEnum):
    """Every exit status of `launcher`, documented in docs/exit-codes.md (a test holds them equal)."""

    OK = 0
    FAILED = 1  # a smoke check failed, the server failed at run time, or an internal error
    BAD_INPUT = 2  # nothing was started
    DOES_NOT_FIT = 3
    NOT_READY = 4
    CLUSTER = 5  # the Ray cluster is unreachable, unhealthy or lacks the resources
    INTERRUPTED = 130


EXIT_OK = ExitCode.OK
EXIT_FAILED = ExitCode.FAILED
EXIT_BAD_INPUT = ExitCode.BAD_INPUT
EXIT_DOES_NOT_FIT = ExitCode.DOES_NOT_FIT
EXIT_NOT_READY = ExitCode.NOT_READY
EXIT_CLUSTER = ExitCode.CLUSTER
EXIT_INTERRUPTED = ExitCode.INTERRUPTED


class LauncherError(Exception):
    """Base of every error the CLI turns into one clear line and an exit code."""

    exit_code = EXIT_FAILED

    def __init__(self, message: str, *, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} {self.hint}"


class BadInput(LauncherError):
    """The user's input (flags, files, configs) is wrong; nothing was started."""

    exit_code = EXIT_BAD_INPUT


class ModelConfigError(BadInput):
    pass


class DoesNotFit(LauncherError):
    exit_code = EXIT_DOES_NOT_FIT

    def __init__(self, message: str, *, hint: str | None = None, estimate: object | None = None) -> None:
        """estimate: the estimator.core.Estimate that refused (errors sit below the estimator: not imported here)."""
        super().__init__(message, hint=hint)
        self.estimate = estimate


class NotReady(LauncherError):
    exit_code = EXIT_NOT_READY


class ClusterError(LauncherError):
    """The Ray cluster cannot be reached or cannot host the launch; nothing was started."""

    exit_code = EXIT_CLUSTER


class LaunchFailed(LauncherError):
    exit_code = EXIT_FAILED


def did_you_mean(word: str, choices: Iterable[str], n: int = 3) -> str:
    """A ' Did you mean ...?' suffix, or '' when nothing is close."""
    close = difflib.get_close_matches(word, list(choices), n=n, cutoff=0.6)
    if not close:
        return ""
    return " Did you mean " + " or ".join(f"'{c}'" for c in close) + "?"

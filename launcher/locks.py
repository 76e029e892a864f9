"""One owner per launch name: an OS lock (flock) on $LAUNCHER_HOME/locks/NAME.lock.

The launching CLI takes the lock before it plans anything. A foreground launch keeps it for its life;
a detached launch hands it to the supervisor it spawns by inheritance of the open file (both then hold
the same lock), and the CLI closes its copy right after the spawn: the supervisor's copy keeps it held. The kernel
drops the lock when the last holder exits, however it exits, so a crashed owner never leaves a stale
lock behind. The lock file names its holder (PID and what it is) for the message a second owner gets.

flock and not a lock library: the hand-over by inheritance is what makes the name owned without a gap
between the CLI's check and the supervisor's start, and `filelock` does not hand its descriptor over.
"""
from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import BadInput
from .state import home

if TYPE_CHECKING:
    from collections.abc import Callable

FD_ENV = "LAUNCHER_LOCK_FD"  # the inherited descriptor of the name's lock, in a detached supervisor


def lock_path(name: str) -> Path:
    d = home() / "locks"
    d.mkdir(parents=True, exist_ok=True)
    return d / f"{name}.lock"


class NameLock:
    """The lock of one launch name, held while this object's descriptor (or an inherited copy) is open."""

    fd_env = FD_ENV  # where a detached supervisor finds the inherited descriptor

    def __init__(self, name: str, fd: int):
        self.name, self.fd = name, fd

    @classmethod
    def acquire(cls, name: str, role: str) -> "NameLock":
        """Take the name's lock now or refuse at once, saying who holds it."""
        fd = _open(lock_path(name))
        if not _try_lock(fd):
            holder = _describe(_read_holder(fd))
            os.close(fd)
            raise BadInput(f"the launch name '{name}' is held by {holder}.",
                           hint=f"Pick another --name, or stop that launch first: `launcher stop {name}`.")
        lock = cls(name, fd)
        lock.record(role)
        return lock

    @classmethod
    def inherited(cls, name: str):
        """The lock a detached supervisor got from the CLI that spawned it (None when it got none)."""
        raw = os.environ.get(cls.fd_env)
        if not raw:
            return None
        try:
            fd = int(raw)
            os.fstat(fd)
        except (ValueError, OSError):
            return None
        os.environ.pop(cls.fd_env, None)
        return cls(name, fd)

    def record(self, role: str) -> None:
        """Name this process as the holder (the lock file's content; the lock itself is the flock)."""
        data = json.dumps({"pid": os.getpid(), "role": role, "since": time.time(), "launch": self.name}).encode()
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, data, 0)

    def release(self) -> None:
        """Close this process's descriptor (the lock stays held while an inherited copy is open)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> "NameLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def held(name: str) -> dict | None:
    """Who holds the name's lock ({'pid', 'role', 'since'}), or None when nobody does."""
    path = lock_path(name)
    if not path.exists():
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_holder(fd) or {"pid": None, "role": "?"}
        return None
    finally:
        os.close(fd)


def _open(path: Path) -> int:
    return os.open(path, os.O_RDWR | os.O_CREAT, 0o600)


def _try_lock(fd: int) -> bool:
    """Take the exclusive lock now if nobody holds it."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def _read_holder(fd: int) -> dict:
    try:
        return json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):
        return {}


def _describe(holder: dict) -> str:
    if not holder.get("pid"):
        return "another launcher process"
    since = holder.get("since")
    age = f", for {time.time() - since:.0f} s" if isinstance(since, (int, float)) else ""
    return f"{holder.get('role', 'a launcher process')} (PID {holder['pid']}{age})"


START_FD_ENV = "LAUNCHER_START_LOCK_FD"  # the inherited descriptor of the start lock, in a detached supervisor
START_LOCK = "_start"  # locks/_start.lock ('_' cannot begin a launch name)


class StartLock(NameLock):
    """One launch starting at a time on this host: vLLM sizes its share from the free memory it reads at start-up,
    and a second start that reads it while the first is still loading and profiling sees memory that is about to
    go (two simultaneous starts on one GPU: one KV cache at -3.21 GiB, vLLM issue #55827). Taken before planning,
    held through the server's start (handed to a detached supervisor like the name's lock) and released when the
    server is READY or the launch ends; a second launch waits for it, saying whose start it waits for."""

    fd_env = START_FD_ENV

    @classmethod
    def acquire_waiting(cls, name: str, timeout_s: float, on_wait: Callable[[dict], None] | None = None,
                        poll_s: float = 0.2) -> StartLock:
        fd = _open(lock_path(START_LOCK))
        deadline = time.monotonic() + timeout_s
        told = False
        while not _try_lock(fd):
            holder = _read_holder(fd)
            if not told and on_wait is not None:
                on_wait(holder)
                told = True
            if time.monotonic() > deadline:
                os.close(fd)
                raise BadInput(f"another launch is still starting after {timeout_s:.0f} s: "
                               f"{holder.get('launch', '?')} by {_describe(holder)}.",
                               hint="Wait for it (`launcher ps`), or stop it.")
            time.sleep(poll_s)
        lock = cls(name, fd)
        lock.record("launcher launch")
        return lock


def starting() -> dict | None:
    """The launch now starting on this host ({'launch', 'pid', 'role', 'since'}), or None."""
    return held(START_LOCK)

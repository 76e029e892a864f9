"""A launch's state as the records and the live processes say it, and waiting for one."""
from __future__ import annotations

import time
from typing import TYPE_CHECKING

from .. import process
from ..runs import ACTIVE, RunState, read_state

if TYPE_CHECKING:
    from collections.abc import Callable


def _alive(st: dict, which: str) -> bool:
    """Whether the recorded process ('supervisor' or 'server') still runs (PID checked against its start time)."""
    s = st.get(which) or {}
    return bool(s) and process.ProcRef(s["pid"], s["create_time"]).alive()


def _supervisor_alive(st: dict) -> bool:
    return _alive(st, "supervisor")


def effective_state(st: dict) -> str:
    """The recorded state, corrected when the supervisor died without recording it."""
    state = st.get("state", "?")
    if state in ACTIVE and (st.get("supervisor") or state == RunState.UNKNOWN) and not _supervisor_alive(st):
        return RunState.UNSUPERVISED if _alive(st, "server") else RunState.DEAD
    return state


def unsupervised_note(name: str, st: dict) -> str:
    """What status/ps say of a server that outlived its supervisor."""
    return (f"supervisor gone, server still running on :{st.get('port')} (pid {(st.get('server') or {}).get('pid')}); "
            f"`launcher launch --name {name} --adopt` supervises it again, `launcher stop {name}` stops it")


def wait_until(name: str, states: tuple[str, ...], timeout_s: float, poll_s: float = 0.25,
               on_poll: Callable[[dict], None] | None = None) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        st = read_state(name) or {}
        if on_poll:
            on_poll(st)
        eff = effective_state(st) if st else "?"
        if eff in states or eff in (RunState.DEAD, RunState.UNSUPERVISED):
            return st | {"state": eff}
        if time.monotonic() > deadline:
            return st | {"state": eff, "timed_out": True}
        time.sleep(poll_s)

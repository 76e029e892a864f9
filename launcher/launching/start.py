"""Start a prepared launch: supervised in this process (foreground, or a thread of the gateway), or by a detached
supervisor; and adopt a server whose supervisor died."""
from __future__ import annotations

import os
import subprocess
import sys
from typing import TYPE_CHECKING

from ..errors import BadInput, LaunchFailed
from ..locks import FD_ENV, START_FD_ENV, NameLock, StartLock
from ..runs import ACTIVE, RunState, read_json, read_state, run_dir, update_state
from ..spec import LaunchSpec
from .prepare import SUPERVISOR_TAG_ENV, Prepared, _without_tags
from .records import env_from_record, policy_for, record_launch
from .status import _alive, _supervisor_alive

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..supervisor.machine import State
    from ..supervisor.policy import RestartPolicy
    from ..supervisor.run import ServerRun

    OnEvent = Callable[[str, dict], None]  # (kind, data): the supervisor's events


def server_run(prep: Prepared, policy: RestartPolicy | None = None, on_event: OnEvent | None = None) -> ServerRun:
    """The supervised run of a prepared launch (with its cluster watch when it runs on Ray)."""
    from ..cluster.preflight import watch_from_record
    from ..supervisor.run import ServerRun

    return ServerRun(prep.spec.name, prep.argv, prep.env, prep.spec.host, prep.port, run_dir(prep.spec.name),
                     policy or policy_for(prep.spec), on_event=on_event, cluster=watch_from_record(prep.cluster),
                     run_id=prep.run_id, start_lock=prep.start_lock)


def run_foreground(prep: Prepared, on_event: OnEvent | None = None) -> tuple[ServerRun, State]:
    """Supervise in this process until stopped (SIGTERM, SIGINT or SIGHUP); the name's lock is held throughout."""
    record_launch(prep)
    try:
        sr = server_run(prep, on_event=on_event)
        return sr, sr.run()
    finally:
        prep.release_locks()


def start_detached(prep: Prepared) -> int:
    """Start the supervisor as a daemon (own session); returns its PID. The API key goes only through env.
    The name's lock goes to the daemon with it (an inherited descriptor): the name stays owned throughout."""
    record_launch(prep)
    try:  # the server env is rebuilt by the daemon from launch.json + this environment
        return _spawn_supervisor(prep.spec.name, dict(prep.env), prep.lock, prep.run_id, start_lock=prep.start_lock)
    finally:
        prep.release_locks()  # the daemon's inherited copies keep them held


def _spawn_supervisor(name: str, env: dict, lock: NameLock, run_id: str | None, *extra: str,
                      start_lock: StartLock | None = None) -> int:
    d = run_dir(name)
    env["LAUNCHER_HOME"] = str(d.parent.parent)
    env[FD_ENV] = str(lock.fd)
    fds = (lock.fd,)
    if start_lock is not None and start_lock.fd >= 0:
        env[START_FD_ENV] = str(start_lock.fd)
        fds += (start_lock.fd,)
    if run_id:
        env[SUPERVISOR_TAG_ENV] = run_id
    with open(d / "supervisor.log", "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "launcher", "_supervise", name, *extra], stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env, cwd=os.getcwd(),
                                pass_fds=fds)
    return proc.pid


def supervise_from_record(name: str, adopt: bool = False) -> int:
    """Body of the daemon: read launch.json and supervise until stopped (adopt: the server already runs).
    Holds the name's lock it inherited (or takes it) for its whole life."""
    from ..supervisor.machine import State

    lock = NameLock.inherited(name) or NameLock.acquire(name, "supervisor")
    lock.record("supervisor")
    start = StartLock.inherited(name)  # released once the server is READY
    if start is not None:
        start.record("supervisor")
    rec = read_json(run_dir(name) / "launch.json")
    if rec is None:
        raise LaunchFailed(f"no launch record for '{name}'.")
    spec = LaunchSpec(**rec["spec"])
    env = env_from_record(rec, spec)
    prep = Prepared(spec, None, rec["argv"], env, rec["port"], rec.get("note", ""), rec.get("cluster"), lock=lock,
                    run_id=rec.get("run_id"), start_lock=start)
    try:
        st = server_run(prep).run(adopt=adopt)
    finally:
        prep.release_locks()
    return 0 if st == State.STOPPED else 1


def adopt(name: str) -> int:
    """Put a supervisor back over a server whose supervisor died, without restarting it; returns its PID.
    The name's lock is taken first: a second adopt (or a live supervisor) is refused at once."""
    st = read_state(name)
    rec = read_json(run_dir(name) / "launch.json")
    if st is None or rec is None:
        raise BadInput(f"no launch named '{name}'.", hint="See `launcher ps`.")
    lock = NameLock.acquire(name, "launcher launch --adopt")
    try:
        if _supervisor_alive(st) and st.get("state") in ACTIVE:
            raise BadInput(f"'{name}' is supervised already (supervisor PID {st['supervisor']['pid']}).")
        if not _alive(st, "server"):
            raise BadInput(f"nothing to adopt: the server of '{name}' is not running.",
                           hint=f"Start it again with `launcher launch --config ...` or remove the record: `launcher rm {name}`.")
        if st.get("damaged"):  # the new supervisor reads the server's identity from state.json: write it back
            update_state(name, base=st, state=RunState.UNKNOWN)
        return _spawn_supervisor(name, _without_tags(os.environ), lock, st.get("run_id") or rec.get("run_id"), "--adopt")
    finally:
        lock.release()  # the new supervisor holds its inherited copy

"""A launch held by a long-running process of ours (the gateway, smoke, bench): its supervisor runs in a thread of
this process, with the same state machine, records and logs as `launcher launch`. Start, wait for ready, stop,
or adopt a server whose supervisor (an earlier process) is gone."""
from __future__ import annotations

import threading
import time
from dataclasses import replace
from typing import TYPE_CHECKING

from ..errors import BadInput, LaunchFailed
from ..locks import NameLock
from ..runs import read_json, read_state, run_dir
from ..spec import LaunchSpec
from .prepare import Prepared
from .records import env_from_record, policy_for, record_launch
from .start import server_run
from .status import _alive

if TYPE_CHECKING:
    from ..supervisor.machine import State
    from ..supervisor.policy import RestartPolicy
    from ..supervisor.run import ServerRun
    from .start import OnEvent


class Launch:
    """One supervised server whose supervisor is a thread here. `state` is the supervisor's own state."""

    def __init__(self, prep: Prepared, run: ServerRun, adopted: bool = False) -> None:
        self.prep, self.run, self.adopted = prep, run, adopted
        self._thread = threading.Thread(target=self._supervise, name=f"supervise-{prep.spec.name}", daemon=True)
        self.final: State | None = None

    @classmethod
    def start(cls, prep: Prepared, policy: RestartPolicy | None = None, on_event: OnEvent | None = None) -> Launch:
        """Record the launch (launch.json) and start its server; returns at once (see wait_ready)."""
        record_launch(prep)
        try:
            launch = cls(prep, server_run(prep, policy, on_event=on_event))
        except BaseException:
            prep.release_locks()
            raise
        launch._thread.start()
        return launch

    @classmethod
    def adopt(cls, name: str, env: dict | None = None, policy: RestartPolicy | None = None,
              on_event: OnEvent | None = None) -> Launch:
        """Supervise again, from this process, the running server of a launch whose supervisor is gone (its records
        say so); env: variables the server's restarts get beyond those launch.json records (a key, say)."""
        st, rec = read_state(name), read_json(run_dir(name) / "launch.json")
        if st is None or rec is None:
            raise BadInput(f"no launch named '{name}'.")
        if not _alive(st, "server"):
            raise LaunchFailed(f"nothing to adopt: the server of '{name}' is not running.")
        lock = NameLock.acquire(name, "adopted in process")  # refused while another supervisor holds the name
        spec = LaunchSpec(**rec["spec"])
        prep = Prepared(spec, None, rec["argv"], {**env_from_record(rec, spec), **(env or {})}, rec["port"],
                        rec.get("note", ""), rec.get("cluster"), lock=lock, run_id=st.get("run_id") or rec.get("run_id"))
        try:
            launch = cls(prep, server_run(prep, policy, on_event=on_event), adopted=True)
        except BaseException:
            lock.release()
            raise
        launch._thread.start()
        return launch

    def _supervise(self) -> None:
        try:
            self.final = self.run.run(install_signals=False, adopt=self.adopted)
        finally:
            self.prep.release_locks()

    @property
    def name(self) -> str:
        return self.prep.spec.name

    @property
    def state(self) -> State:
        return self.run.sup.state

    @property
    def alive(self) -> bool:
        """Whether the supervisor thread still runs (it ends at STOPPED or FATAL)."""
        return self._thread.is_alive()

    def wait_ready(self, timeout_s: float, poll_s: float = 0.1) -> State:
        """Block until READY, FATAL, the end of supervision or the deadline; the state then."""
        from ..supervisor.machine import State

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self.alive and self.state not in (State.READY, State.FATAL):
            time.sleep(poll_s)
        return self.state

    def failure(self) -> str:
        """Why the server is not ready: the supervisor's reason with vLLM's root cause from its log."""
        cause = self.run.log.root_cause()
        why = self.run.sup.reason or f"{self.state.value}"
        return why + (f" [{cause[0]}: {cause[1]}]" if cause and cause[1] not in why else "")

    def stop(self, timeout_s: float | None = None) -> State:
        """Stop the server (SIGTERM, then the whole tree) and end supervision; the final state."""
        self.run.request_stop()
        self._thread.join(timeout=timeout_s if timeout_s is not None else self.run.policy.stop_grace_s + 30)
        return self.final or self.state


def short_policy(spec: LaunchSpec, startup_timeout_s: float, **kw: object) -> RestartPolicy:
    """The launch's restart policy with another start-up deadline (smoke and bench give up after one failure)."""
    return replace(policy_for(spec), startup_timeout_s=startup_timeout_s, **kw)


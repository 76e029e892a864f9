"""Stop a launch and sweep whatever is left of its processes."""
from __future__ import annotations

import signal
import time

from .. import process
from ..errors import BadInput
from ..runs import RunState, read_state, update_state
from .prepare import SUPERVISOR_TAG_ENV


# How long a launch that is not serving yet (STARTING, BACKOFF) gets from SIGTERM to SIGKILL of its supervisor: its
# own stop of such a server takes the policy's short grace (1.5 s) and at most 5 s more for the SIGKILLed tree; past
# this the supervisor is killed and the sweep below finds every process of the run, however loaded the host.
UNREADY_WAIT_S = 10.0


def stop(name: str, timeout_s: float = 60.0) -> dict:
    """Stop a launch: SIGTERM its supervisor (verified by start time), wait (timeout_s for a READY server, which
    drains its requests; UNREADY_WAIT_S for one still starting), then sweep whatever is left of the run (recorded
    PIDs, the process group, every process tagged with the run id). Works from launch.json and the name's lock when
    state.json is damaged."""
    st = read_state(name)
    if st is None:
        raise BadInput(f"no launch named '{name}'.", hint="See `launcher ps`.")
    sups = [process.ProcRef(st["supervisor"]["pid"], st["supervisor"]["create_time"])] if st.get("supervisor") else []
    if st.get("run_id"):
        sups += process.tagged(SUPERVISOR_TAG_ENV, st["run_id"])
    signalled = [ref for ref in sups if ref.signal(signal.SIGTERM)]
    serving = st.get("state") in (RunState.READY, RunState.STOPPING)
    deadline = time.monotonic() + (timeout_s if serving else min(timeout_s, UNREADY_WAIT_S))
    while any(ref.alive() for ref in signalled) and time.monotonic() < deadline:
        time.sleep(0.05)
    for ref in signalled:
        ref.signal(signal.SIGKILL)
    st = read_state(name) or st
    srv = st.get("server") or {}
    refs = [process.ProcRef(srv["pid"], srv["create_time"])] if srv else []
    refs += [process.ProcRef(p, c) for p, c in st.get("descendants", [])]
    killed = process.sweep_run(st.get("run_id", "-"), srv.get("pgid"), refs) if st.get("run_id") or refs else []
    done = {"state": RunState.STOPPED, "swept": killed, "stopped_at": st.get("stopped_at") or time.time()}
    if st.get("damaged"):
        done["repaired"] = st["damaged"]
    return update_state(name, base={k: v for k, v in st.items() if k != "damaged"}, **done)

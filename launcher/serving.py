"""Serve a prepared launch in-process for the duration of a block (used by bench and tune)."""
from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import replace

from .errors import NotReady


@contextlib.contextmanager
def served(prep, *, timeout_s: float, on_event=None):
    """Start the server, wait until READY (or raise NotReady with vLLM's root cause), always stop it."""
    from .launching import policy_for, record_launch
    from .runs import run_dir
    from .supervisor.machine import State
    from .supervisor.run import ServerRun

    record_launch(prep)
    pol = replace(policy_for(prep.spec), startup_timeout_s=timeout_s, max_quick_failures=1)
    sr = ServerRun(prep.spec.name, prep.argv, prep.env, prep.spec.host, prep.port, run_dir(prep.spec.name), pol,
                   on_event=on_event)
    th = threading.Thread(target=sr.run, kwargs={"install_signals": False}, daemon=True)
    th.start()
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < timeout_s and sr.sup.state not in (State.READY, State.FATAL) and th.is_alive():
            time.sleep(0.2)
        if sr.sup.state != State.READY:
            cause = sr._root_cause()
            raise NotReady(f"{prep.spec.name} did not become ready: {sr.sup.reason or 'deadline'}"
                           + (f" [{cause[0]}: {cause[1]}]" if cause and cause[1] not in (sr.sup.reason or "") else ""))
        yield sr
    finally:
        sr.request_stop()
        th.join(timeout=pol.stop_grace_s + 30)

"""Run records under $LAUNCHER_HOME/runs/NAME: launch.json, state.json (0600), server.log, supervisor.log."""
from __future__ import annotations

import enum
import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

from .errors import BadInput
from .state import home

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def runs_dir() -> Path:
    """HOME/runs, where each launch keeps its records and logs (made when missing)."""
    d = home() / "runs"
    d.mkdir(parents=True, exist_ok=True)
    return d


def check_name(name: str) -> str:
    """The name, refused unless it is a safe folder name (letters, digits, '.', '_', '-')."""
    if not NAME_RE.match(name or ""):
        raise BadInput(f"invalid launch name '{name}'.", hint="Use letters, digits, '.', '_' and '-' (at most 64).")
    return name


def run_dir(name: str) -> Path:
    """The folder of one launch's records and logs."""
    return runs_dir() / check_name(name)


def write_json(path: Path, data: dict) -> None:
    """Atomic write through a temporary file of its own (two writers never share one), owner-only."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=1, default=str)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json(path: Path) -> dict | None:
    """A JSON object from a file; None when missing, unreadable or damaged."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def read_state(name: str) -> dict | None:
    """state.json; when it exists but cannot be read, what launch.json and the name's lock still say
    (state UNKNOWN, `damaged` naming the fault), so that no command loses sight of a running server."""
    path = run_dir(name) / "state.json"
    st = read_json(path)
    if st is not None or not path.exists():
        return st
    return recovered_state(name, "state.json is unreadable")


def recovered_state(name: str, why: str) -> dict | None:
    """A state rebuilt from launch.json (the run id, the supervisor's and server's identities) and the lock."""
    from .locks import held

    rec = read_json(run_dir(name) / "launch.json")
    holder = held(name)
    if rec is None and holder is None:
        return None
    rec = rec or {}
    st = {"name": name, "state": "UNKNOWN", "damaged": why, "run_id": rec.get("run_id"), "port": rec.get("port"),
          "reason": f"{why}; recovered from launch.json"}
    for k in ("supervisor", "server", "host", "endpoint", "restarts"):
        if rec.get(k):
            st[k] = rec[k]
    if holder and holder.get("pid") and not st.get("supervisor"):
        from .process import ProcRef

        ref = ProcRef.of(int(holder["pid"]))
        if ref is not None:
            st["supervisor"] = {"pid": ref.pid, "create_time": ref.create_time}
    return st


def update_record(name: str, **kw) -> None:
    """Merge keys into launch.json (the supervisor adds the identities of itself and of each server)."""
    path = run_dir(name) / "launch.json"
    rec = read_json(path)
    if rec is not None:
        write_json(path, rec | kw)


def all_names() -> list[str]:
    """Every launch with a record, by name."""
    return sorted(p.name for p in runs_dir().iterdir() if (p / "state.json").exists() or (p / "launch.json").exists())


def update_state(name: str, base: dict | None = None, **kw) -> dict:
    """Merge keys into state.json; when it is missing or unreadable, into `base` (the writer's own copy)."""
    path = run_dir(name) / "state.json"
    st = read_json(path) or dict(base or {"name": name})
    st.update(kw)
    st["updated_at"] = time.time()
    write_json(path, st)
    return st


class RunState(str, enum.Enum):
    """A launch's state as its records and commands name it: the supervisor's own states
    (supervisor/machine.State, the same strings) plus what the records alone can say."""

    STARTING = "STARTING"
    READY = "READY"
    BACKOFF = "BACKOFF"
    STOPPING = "STOPPING"
    STOPPED = "STOPPED"
    FATAL = "FATAL"
    UNKNOWN = "UNKNOWN"  # state.json unreadable: recovered from launch.json and the name's lock
    DEAD = "DEAD"  # recorded as active, but the supervisor and the server are gone
    UNSUPERVISED = "UNSUPERVISED"  # the supervisor is gone, the server still runs

    def __str__(self) -> str:
        return self.value


ENDED = (RunState.STOPPED, RunState.FATAL, RunState.DEAD)
ACTIVE = (RunState.STARTING, RunState.READY, RunState.BACKOFF, RunState.STOPPING, RunState.UNKNOWN)


def remove(name: str, keep_logs: bool = True) -> Path | None:
    """Delete a run record; its logs move to $LAUNCHER_HOME/logs/NAME-TIME/ unless keep_logs is False.
    Returns where the logs went. The caller checks that the launch has ended."""
    d = run_dir(name)
    kept = None
    if keep_logs:
        logs = [f for f in ("server.log", "supervisor.log") if (d / f).exists()]
        if logs:
            kept = home() / "logs" / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
            kept.mkdir(parents=True, exist_ok=True)
            for f in logs:
                shutil.move(str(d / f), str(kept / f))
    shutil.rmtree(d, ignore_errors=True)
    return kept

"""Run records under $LAUNCHER_HOME/runs/NAME: launch.json, state.json (0600), server.log, supervisor.log."""
from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

from .errors import BadInput
from .state import home

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def runs_dir() -> Path:
    d = home() / "runs"
    d.mkdir(parents=True, exist_ok=True)
    return d


def check_name(name: str) -> str:
    if not NAME_RE.match(name or ""):
        raise BadInput(f"invalid launch name '{name}'.", hint="Use letters, digits, '.', '_' and '-' (at most 64).")
    return name


def run_dir(name: str) -> Path:
    return runs_dir() / check_name(name)


def write_json(path: Path, data: dict) -> None:
    """Atomic write, readable by the owner only (records may describe the environment)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=1, default=str)
    os.replace(tmp, path)


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def read_state(name: str) -> dict | None:
    return read_json(run_dir(name) / "state.json")


def all_names() -> list[str]:
    return sorted(p.name for p in runs_dir().iterdir() if (p / "state.json").exists() or (p / "launch.json").exists())


def update_state(name: str, **kw) -> dict:
    path = run_dir(name) / "state.json"
    st = read_json(path) or {"name": name}
    st.update(kw)
    st["updated_at"] = time.time()
    write_json(path, st)
    return st


ENDED = ("STOPPED", "FATAL", "DEAD")


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

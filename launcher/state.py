"""The state directory: $LAUNCHER_HOME (default ~/.launcher) with run records and logs."""
from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    p = Path(os.environ.get("LAUNCHER_HOME") or Path.home() / ".launcher")
    p.mkdir(parents=True, exist_ok=True)
    return p

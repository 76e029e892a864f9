"""The state directory: $LAUNCHER_HOME (default ~/.launcher) with run records, locks and logs."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .errors import BadInput

_checked: set[Path] = set()


def home() -> Path:
    """$LAUNCHER_HOME, created if missing; refused with one line when it is not a usable folder."""
    p = Path(os.environ.get("LAUNCHER_HOME") or Path.home() / ".launcher")
    if p in _checked:
        return p
    where = "LAUNCHER_HOME" if os.environ.get("LAUNCHER_HOME") else "the state folder"
    try:
        p.mkdir(parents=True, exist_ok=True)
        # a real write: os.access says yes to root on a read-only file system
        with tempfile.TemporaryFile(dir=p):
            pass
    except FileExistsError:
        raise BadInput(f"{where} {p} is a file, not a folder.",
                       hint="Point LAUNCHER_HOME at a folder this user can write.") from None
    except OSError as e:
        raise BadInput(f"{where} {p} cannot be used: {e.strerror or e}.",
                       hint="Point LAUNCHER_HOME at a folder this user can write.") from None
    _checked.add(p)
    return p

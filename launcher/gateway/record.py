"""gateway.json, read back: the running gateway's address and its models' states (for `launcher ps`)."""
from __future__ import annotations


def live_gateway() -> dict | None:
    """The record of a gateway that runs now (its PID checked against its start time), else None."""
    from ..process import ProcRef
    from ..runs import read_json
    from ..state import home

    rec = read_json(home() / "gateway" / "gateway.json")
    if not rec or rec.get("stopped") or not rec.get("pid"):
        return None
    if not ProcRef(int(rec["pid"]), float(rec.get("create_time") or 0)).alive():
        return None
    return rec

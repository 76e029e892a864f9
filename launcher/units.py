"""Byte sizes as people write them: 80GiB, 81920MiB, 80GB, 0.5TiB."""
from __future__ import annotations

import re

from .errors import BadInput

GiB = 1 << 30
MiB = 1 << 20

_UNITS = {
    "": 1, "b": 1,
    "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9, "t": 10**12, "tb": 10**12,
    "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40,
}


def parse_bytes(text: str | int | float, *, what: str = "size") -> int:
    """Parse '80GiB', '80 GB', '81920MiB' or a plain byte count into bytes."""
    if isinstance(text, (int, float)):
        value = int(text)
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(text))
        if not m or m.group(2).lower() not in _UNITS:
            raise BadInput(f"{what}: cannot read '{text}' as a size.", hint="Write it like 80GiB, 81920MiB or 80GB.")
        value = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    if value <= 0:
        raise BadInput(f"{what} must be positive, got '{text}'.")
    return value


def gib(n: float) -> str:
    return f"{n / GiB:.2f}"


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(h|m|s)")


def parse_duration(text: str | int | float, *, what: str = "duration") -> float:
    """Seconds from a number of seconds ('900', 90.5) or a duration ('90s', '15m', '1h', '1h30m'): the one spelling
    of a time span everywhere (flags, models file ttl, tune --budget). BadInput naming `what` otherwise."""
    import math

    if isinstance(text, (int, float)) and not isinstance(text, bool):
        v = float(text)
    else:
        t = str(text).strip().lower()
        try:
            v = float(t)
        except ValueError:
            parts = _DURATION_PART.findall(t)
            if not parts or "".join(a + b for a, b in parts) != t:
                raise BadInput(f"{what}: cannot read '{text}' as a time.",
                               hint="Give seconds (90) or a duration such as 90s, 15m, 1h30m.") from None
            v = sum(float(a) * {"h": 3600, "m": 60, "s": 1}[b] for a, b in parts)
    if not math.isfinite(v) or v < 0:
        raise BadInput(f"{what}: cannot read '{text}' as a time.", hint="Give seconds (90) or a duration such as 90s, 15m, 1h30m.")
    return v

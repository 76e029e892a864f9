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

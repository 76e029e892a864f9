"""What an estimate does not model, as data.

Each caveat is a small frozen value attached where the gap is found (reading config.json, a launch's LoRA or
speculative settings, the GPU): what it is, which margin it asks of the KV cache, and whether measured starts of the
architecture lift it. `estimator.activation.confidence` and `extrapolated_margin_bytes` decide from these fields
only; the sentences users read are rendered from them (`str(caveat)`), so rewording one changes no number."""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Margin(Enum):
    """The margin a caveat asks of the KV cache (estimator.activation: DERIVED_MARGIN or EXTRAPOLATED_MARGIN)."""
    SHAPES = "shapes"  # every term is still derived from shapes: the small margin
    UNMODELLED = "unmodelled"  # a part of vLLM nothing here models: the large margin


@dataclass(frozen=True)
class Caveat:
    what: str
    topic: str = ""  # the subject it is rendered under ("LoRA", "speculative decoding", ...)
    margin: Margin = Margin.UNMODELLED
    # no longer a reason for lower confidence once starts of this architecture were measured
    until_measured: bool = False

    def __str__(self) -> str:
        return f"{self.topic}: {self.what}" if self.topic else self.what


def texts(caveats: tuple[Caveat, ...] | list[Caveat]) -> tuple[str, ...]:
    return tuple(map(str, caveats))

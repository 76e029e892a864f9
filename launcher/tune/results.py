"""What a tune measured: each load level (Point), each candidate's start (Candidate), the decisions read from them
(TuneResult) and the results file --resume reads back (TuneStore)."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..bench import Workload
from ..workloads import Named

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..bench import BenchReport

    Say = Callable[[str], None]  # a progress line for people

# A candidate must beat vLLM's defaults by more than this to be chosen: the same settings started twice on an
# H100 differed by up to 8% in output throughput (docs/bench.md), so smaller gains are not told from noise.
MIN_GAIN = 0.05


@dataclass
class Point:
    """One load level of one workload on one engine start."""
    concurrency: int
    output_throughput: float
    request_throughput: float
    ttft_p50_s: float | None
    ttft_p99_s: float | None
    tpot_p50_s: float | None
    tpot_p99_s: float | None
    itl_p50_s: float | None
    completed: int
    failed: int
    duration_s: float
    aborted: str = ""
    preemptions: float | None = None
    prefix_cache_hit_rate: float | None = None
    gpu_max_used_bytes: int | None = None
    meets: bool = False

    @classmethod
    def of(cls, concurrency: int, rep: BenchReport, slo_s: float | None) -> Point:
        """One load level's result from a bench report; it meets the target when nothing failed or aborted and
        the p99 time to first token is within slo_s (any, without one)."""
        p = cls(concurrency, rep.output_throughput, rep.request_throughput, rep.ttft_s["p50"], rep.ttft_s["p99"],
                rep.tpot_s["p50"], rep.tpot_s["p99"], rep.itl_s["p50"], rep.completed, rep.failed, rep.duration_s,
                rep.aborted, rep.server.get("preemptions"), rep.server.get("prefix_cache_hit_rate"),
                rep.gpu.get("max_used_bytes"))
        p.meets = (not rep.failed and not rep.aborted and rep.completed > 0 and
                   (slo_s is None or (p.ttft_p99_s is not None and p.ttft_p99_s <= slo_s)))
        return p


@dataclass
class Candidate:
    label: str
    engine_args: dict  # overrides on top of the base launch; {} = vLLM defaults
    why: str = ""
    fits: bool | None = None
    pruned: str = ""
    predicted_kv_tokens: int | None = None  # the estimator's KV cache for this candidate
    vllm_kv_tokens: int | None = None  # what vLLM then sized
    vllm_resolved: dict = field(default_factory=dict)  # settings vLLM logged it chose (its chunked prefill step)
    start_s: float | None = None
    sweep_s: float | None = None
    points: dict = field(default_factory=dict)  # workload name -> [Point]
    error: str = ""
    skipped: str = ""
    resumed: bool = False

    @classmethod
    def of(cls, args: dict, why: str) -> Candidate:
        """A candidate named after its settings."""
        return cls(" ".join(f"{k}={v}" for k, v in args.items()), args, why=why)

    @property
    def ran(self) -> bool:
        """Whether the candidate started and was measured without an error."""
        return bool(self.points) and not self.error

    def score(self, wl: Named) -> float | None:
        """The best output throughput among the workload's levels that met the target (None: none did)."""
        ok = [p.output_throughput for p in self.points.get(wl.name, []) if p.meets]
        return max(ok) if ok else None

    def best_point(self, wl: Named) -> Point | None:
        """The level that scored (or the first measured, where none met the target)."""
        pts = self.points.get(wl.name, [])
        ok = [p for p in pts if p.meets]
        return max(ok, key=lambda p: p.output_throughput) if ok else (pts[0] if pts else None)

    def to_dict(self) -> dict:
        """JSON-ready, as results.json keeps it."""
        d = asdict(self)
        d["points"] = {k: [asdict(p) for p in v] for k, v in self.points.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Candidate:
        """Read back from results.json (--resume)."""
        d = dict(d)
        pts = {k: [Point(**p) for p in v] for k, v in d.pop("points", {}).items()}
        return cls(**d, points=pts)


@dataclass
class TuneResult:
    """Every candidate measured for the workloads, and the decisions read from them."""

    workloads: list[Named]
    candidates: list[Candidate] = field(default_factory=list)
    budget_s: float | None = None
    elapsed_s: float = 0.0
    min_gain: float = MIN_GAIN
    defaults_again: Candidate | None = None  # the defaults measured once more, when a candidate beat them

    @property
    def defaults(self) -> Candidate | None:
        """vLLM's defaults: the candidate without engine arguments."""
        return next((c for c in self.candidates if not c.engine_args), None)

    def ranked(self, wl: Named) -> list[Candidate]:
        """Best score first, then those that ran without meeting the target, then those that did not run."""
        ran = [c for c in self.candidates if c.ran]
        scored = sorted((c for c in ran if c.score(wl) is not None), key=lambda c: -c.score(wl))
        return scored + [c for c in ran if c.score(wl) is None] + [c for c in self.candidates if not c.ran]

    def defaults_score(self, wl: Named) -> float | None:
        """The defaults' score: the better of their measurements (a gain must hold against both)."""
        xs = [c.score(wl) for c in (self.defaults, self.defaults_again) if c is not None and c.score(wl) is not None]
        return max(xs) if xs else None

    def winner(self, wl: Named) -> Candidate | None:
        """The best scorer; vLLM's defaults are kept unless a candidate beats them by more than min_gain."""
        r = [c for c in self.ranked(wl) if c.score(wl) is not None]
        if not r:
            return None
        d, base = self.defaults, self.defaults_score(wl)
        if d is not None and base is not None and r[0] is not d and r[0].score(wl) <= base * (1 + self.min_gain):
            return d
        return r[0]

    def improvement(self, wl: Named) -> float | None:
        """The winner's score over the defaults' (0.0 where the defaults win; None: nothing to compare)."""
        w, base = self.winner(wl), self.defaults_score(wl)
        if w is None or not base:
            return None
        return w.score(wl) / base - 1 if w.engine_args else 0.0

    def to_dict(self) -> dict:
        """JSON-ready: per workload the winner, its gain and the ranking, and every candidate."""
        out = {"budget_s": self.budget_s, "elapsed_s": round(self.elapsed_s, 1), "min_gain": self.min_gain,
               "workloads": [], "candidates": [c.to_dict() for c in self.candidates],
               "defaults_again": self.defaults_again.to_dict() if self.defaults_again else None}
        for wl in self.workloads:
            w, d = self.winner(wl), self.defaults
            out["workloads"].append({
                "name": wl.name, "about": wl.describe(), "slo_ttft_p99_s": wl.slo_ttft_p99_s, "levels": list(wl.levels),
                "target": "output tokens/s" + (f" at p99 TTFT <= {wl.slo_ttft_p99_s:g} s" if wl.slo_ttft_p99_s else ""),
                "winner": w.label if w else None, "winner_engine_args": w.engine_args if w else None,
                "winner_score": w.score(wl) if w else None, "defaults_score": self.defaults_score(wl),
                "defaults_scores": [c.score(wl) for c in (d, self.defaults_again) if c is not None],
                "improvement": self.improvement(wl),
                "ranking": [{"label": c.label, "score": c.score(wl)} for c in self.ranked(wl)]})
        return out


def workload_key(workloads: list[Named]) -> list:
    """The workloads as results.json keys them (a resumed tune reuses only measurements of the same key)."""
    return [{"name": w.name, "workload": asdict(w.workload), "levels": list(w.levels), "slo": w.slo_ttft_p99_s}
            for w in workloads]


def workloads_from_key(key: list) -> dict[str, Workload]:
    """The workloads as a tune measured them (overrides included), from the key of its results.json."""
    return {k["name"]: Workload(**{f: tuple(v) if isinstance(v, list) else v for f, v in k["workload"].items()})
            for k in key}


class TuneStore:
    """The results file: what was measured, under a key of the model, base launch and workloads, so that
    --resume reuses a candidate only for the same question."""

    def __init__(self, path: Path | None, key: dict, say: Say) -> None:
        self.path, self.key, self.say = path, key, say

    def load(self) -> list[Candidate]:
        """The candidates measured before under the same key (none for another model, launch or workload)."""
        p = self.path
        if not p or not p.is_file():
            return []
        try:
            d = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError):
            return []
        if d.get("key") != json.loads(json.dumps(self.key)):
            self.say(f"{p}: measured for another model, base launch or workload; not reused")
            return []
        r = d.get("result", {})
        again = [r["defaults_again"]] if r.get("defaults_again") and r["defaults_again"].get("points") else []
        return [Candidate.from_dict(c) for c in r.get("candidates", []) + again if c.get("points")]

    def save(self, res: TuneResult) -> None:
        """Write the results beside their key, atomically (a file renamed into place)."""
        if self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps({"key": self.key, "result": res.to_dict()}, indent=1))
            tmp.replace(self.path)

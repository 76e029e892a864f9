"""`launcher tune`: engine settings chosen for named workloads, measured against vLLM's defaults.

1. vLLM's defaults are started first and every workload is swept over its load levels on that one start
   (load is a request-side setting: no restart between levels or workloads).
2. Candidates are proposed from the estimator and from what vLLM resolved for the defaults (the chunked
   prefill step it logged, the KV cache it sized): larger prefill steps for long prompts, smaller ones for
   latency, a larger memory share and a cap on running requests where the workload needs more KV cache
   than the defaults give, and (--allow-fp8-kv-cache) an fp8 KV cache where decode is bound by reading it.
   Each candidate goes through the launch pre-flight, so what cannot fit is pruned with the estimator's
   reason before anything starts.
3. Each remaining candidate is started once (vLLM's compile cache, kept under its cache root, makes later
   starts shorter) and swept like the defaults, within the time budget; results are saved after every
   candidate, so `--resume` carries on where a run stopped.
4. Per workload: the winner is the best score (highest output throughput among load levels that meet the
   latency target), reported against the defaults' score and written as a launch file.
"""
from __future__ import annotations

import json
import statistics
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from .bench import Workload, run_bench
from .errors import LauncherError
from .workloads import Named, at_level

if TYPE_CHECKING:
    from collections.abc import Callable

    from .bench import BenchReport
    from .estimator.core import Estimate
    from .launching.prepare import Fetch
    from .spec import LaunchSpec
    from .supervisor.run import ServerRun

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


class StartMeasurer:
    """One engine start per candidate (through launching.prepare and serving.served, as `launch` starts it) and
    the workloads swept on it."""

    def __init__(self, spec: LaunchSpec, workloads: list[Named], *, vocab_size: int, timeout_s: float,
                 api_key: str | None, refine: int, fetch: Fetch | None, say: Say) -> None:
        self.spec, self.workloads, self.vocab = spec, workloads, vocab_size
        self.timeout_s, self.api_key, self.refine, self.fetch, self.say = timeout_s, api_key, refine, fetch, say

    def run(self, c: Candidate, index: int) -> None:
        """Start the candidate's launch (named after the base launch and `index`), sweep, stop; into `c`."""
        from .engines import vllm as vllm_engine
        from .launching import prepare
        from .runs import run_dir
        from .serving import served

        spec = replace(self.spec, name=f"{self.spec.name}-{index}"[:64], engine_args={**self.spec.engine_args, **c.engine_args})
        try:
            prep = prepare(spec, fetch=self.fetch)
        except LauncherError as e:
            c.fits, c.pruned = False, str(e)
            self.say(f"{c.label}: pruned by the pre-flight: {e}")
            return
        c.fits = True
        e = prep.plan.estimate if prep.plan else None
        c.predicted_kv_tokens = e.kv_cache_tokens if e else (prep.plan.cpu_kv or {}).get("kv_cache_tokens") if prep.plan else None
        self.say(f"{c.label}: starting ({c.why})" + (f"; estimator: {c.predicted_kv_tokens:,} KV tokens"
                                                     if c.predicted_kv_tokens else ""))
        model, base = vllm_engine.served_model_name(prep.argv), f"http://127.0.0.1:{prep.port}"
        log = run_dir(spec.name) / "server.log"
        offset = log.stat().st_size if log.exists() else 0  # a launch of the same name appends to its log
        t = time.monotonic()
        try:
            with served(prep, timeout_s=self.timeout_s) as sr:
                c.start_s = round(time.monotonic() - t, 1)
                self._read_log(c, log, offset)
                t1 = time.monotonic()
                for wl in self.workloads:
                    c.points[wl.name] = self.sweep(wl, base, model, _alive(sr), c.label)
                c.sweep_s = round(time.monotonic() - t1, 1)
        except LauncherError as err:
            c.error = str(err)
            self.say(f"{c.label}: {err}")

    @staticmethod
    def _read_log(c: Candidate, log: Path, offset: int) -> None:
        """What vLLM logged of this start: its KV cache tokens and the batch size it resolved."""
        from .engines import vllm as vllm_engine

        facts = vllm_engine.parse_log_facts(_head(log, offset))
        if facts.get("kv_tokens"):
            c.vllm_kv_tokens = int(str(facts["kv_tokens"]).replace(",", ""))
        if facts.get("max_num_batched_tokens"):
            c.vllm_resolved = {"max-num-batched-tokens": int(facts["max_num_batched_tokens"])}

    def sweep(self, wl: Named, base: str, model: str, alive: Callable[[], bool], label: str) -> list[Point]:
        """The workload at each load level, up to the first that misses the target; then, on the same start,
        up to `refine` bisections between the last level that met it and the first that did not, so that
        candidates are compared near the load where the target binds, not at the coarse level below it."""
        pts: list[Point] = []
        runs = iter(range(10**6))

        def one(conc: int) -> Point:
            rep = run_bench(base, model, at_level(wl, conc, next(runs)), vocab_size=self.vocab, api_key=self.api_key,
                            timeout_s=self.timeout_s, alive=alive)
            p = Point.of(conc, rep, wl.slo_ttft_p99_s)
            pts.append(p)
            self.say(f"{label} · {wl.name} @ {conc}: {p.output_throughput:.1f} output tok/s, p99 TTFT "
                     f"{_ms(p.ttft_p99_s)} ms" + ("" if p.meets else " (misses the target)"))
            if rep.aborted:
                raise LauncherError(f"the server died during the {wl.name} workload at concurrency {conc}")
            return p

        lo = None
        for conc in wl.levels:
            if not one(conc).meets:
                hi = conc  # more load only lengthens the queue: the target will not be met higher up
                for _ in range(self.refine if lo is not None else 0):
                    mid = (lo + hi) // 2
                    if mid <= lo:
                        break
                    if one(mid).meets:
                        lo = mid
                    else:
                        hi = mid
                break
            lo = conc
        return sorted(pts, key=lambda p: p.concurrency)


def _alive(sr: ServerRun) -> Callable[[], bool]:
    """Whether the served start is still the one measured: READY and never restarted."""
    from .supervisor.machine import State

    return lambda: sr.sup.state == State.READY and sr.sup.restarts == 0


class Tuner:
    """The decision loop: the defaults, the proposed candidates (each measured by StartMeasurer within the
    budget), the defaults again where a candidate beat them, saving results (TuneStore) as it goes."""

    def __init__(self, base_spec: LaunchSpec, workloads: list[Named], *, vocab_size: int, timeout_s: float = 900.0,
                 budget_s: float | None = None, results_path: Path | None = None, resume: bool = False,
                 grid: list[Candidate] | None = None, on_progress: Say | None = None, api_key: str | None = None,
                 min_gain: float = MIN_GAIN, confirm: bool = True, refine: int = 2, fetch: Fetch | None = None,
                 allow_fp8_kv: bool = False) -> None:
        self.spec, self.workloads, self.budget_s = base_spec, workloads, budget_s
        self.grid, self.on_progress = grid, on_progress
        self.res = TuneResult(workloads, budget_s=budget_s, min_gain=min_gain)
        self.confirm, self.allow_fp8_kv = confirm, allow_fp8_kv
        self._said_no_confirm = False
        self.t0 = time.monotonic()
        key = {"model": [base_spec.model_path, base_spec.model_name, base_spec.size_in_billions, base_spec.model,
                         base_spec.revision], "engine_args": base_spec.engine_args, "workloads": workload_key(workloads)}
        self.store = TuneStore(results_path, key, self._say)
        # fetch: downloads a Hub model once, before the first start (launching.prepare)
        self.starts = StartMeasurer(base_spec, workloads, vocab_size=vocab_size, timeout_s=timeout_s, api_key=api_key,
                                    refine=refine, fetch=fetch, say=self._say)
        self.previous: list[Candidate] = self.store.load() if resume else []

    def save(self) -> None:
        """The results so far, with the time spent."""
        self.res.elapsed_s = time.monotonic() - self.t0
        self.store.save(self.res)

    def _say(self, msg: str) -> None:
        if self.on_progress:
            self.on_progress(msg)

    def run(self) -> TuneResult:
        """The whole tune: the defaults, the proposals, their combinations, the defaults again where beaten."""
        defaults = self.measure(Candidate("vLLM defaults", {}, why="the baseline"))
        if defaults.ran:
            cands = self.grid if self.grid is not None else propose(
                self.workloads, defaults, self.spec, _default_estimate(self.spec), allow_fp8_kv=self.allow_fp8_kv,
                min_gain=self.min_gain)
            for c in cands:
                self.measure(c)
                self.confirm_defaults()  # as soon as a candidate beats them: the gain is checked before the budget goes
            if self.grid is None:
                for c in combine(self.res, self.workloads, self.min_gain):
                    self.measure(c)
            self.confirm_defaults()
        self.save()
        return self.res

    @property
    def min_gain(self) -> float:
        """The gain over the defaults a candidate needs to win."""
        return self.res.min_gain

    def confirm_defaults(self) -> None:
        """Where a candidate beats the defaults, start the defaults once more (at once, before the other
        candidates) and keep their better score, so that a gain is not an accident of one start."""
        if not self.confirm or self.res.defaults_again is not None:
            return
        if not any(w is not None and w.engine_args for w in map(self.res.winner, self.workloads)):
            return
        c = Candidate("vLLM defaults (again)", {}, why="check: a candidate beat the defaults")
        old = next((x for x in self.previous if x.label == c.label), None)
        if old is not None:
            old.resumed = True
            self.res.defaults_again = old
            return
        over = self._over_budget()
        if over:
            if not self._said_no_confirm:
                self._say(f"{c.label}: not run: {over[1]:.0f} s of the budget left; the gain rests on one start")
                self._said_no_confirm = True
            return
        self.res.defaults_again = c
        self._run_one(c)
        self.save()

    def measure(self, c: Candidate) -> Candidate:
        """Measure the candidate once (a duplicate is skipped, a measurement of --resume reused), unless one more
        start would overrun the budget."""
        if any(x.engine_args == c.engine_args for x in self.res.candidates):
            return c
        self.res.candidates.append(c)
        old = next((x for x in self.previous if x.engine_args == c.engine_args and x.label == c.label), None)
        if old is not None:
            old.resumed, old.why = True, c.why or old.why
            self.res.candidates[-1] = old
            self._say(f"{old.label}: measured before, reused from {self.store.path}")
            return old
        over = self._over_budget() if c.engine_args else None
        if over:
            c.skipped = f"not run: {over[1]:.0f} s of the budget left, a candidate takes about {over[0]:.0f} s"
            self._say(f"{c.label}: {c.skipped}")
            self.save()
            return c
        self._run_one(c)
        self.save()
        return c

    def _run_one(self, c: Candidate) -> None:
        """One start for the candidate (the defaults' second start named after the count so far)."""
        self.starts.run(c, len(self.res.candidates) - (0 if c is self.res.defaults_again else 1))

    def _over_budget(self) -> tuple[float, float] | None:
        """(expected cost, seconds left) when one more start would not finish within the budget."""
        cost = self.expected_cost() if self.budget_s is not None else None
        left = self.budget_s - (time.monotonic() - self.t0) if self.budget_s is not None else 0.0
        return (cost, left) if cost is not None and cost > left else None

    def expected_cost(self) -> float | None:
        """Mean start + sweep time of the starts measured in this run (the defaults' second start included);
        of the resumed ones where none is measured yet, rather than no bound at all."""
        cands = self.res.candidates + ([self.res.defaults_again] if self.res.defaults_again else [])
        timed = [c for c in cands if c.ran and c.start_s is not None]
        ran = [c for c in timed if not c.resumed] or timed
        if not ran:
            return None
        return statistics.fmean(c.start_s for c in ran) + statistics.fmean(c.sweep_s or 0 for c in ran) + 10


def _head(path: Path, offset: int = 0, n: int = 4 << 20) -> str:
    """The start of this server's part of its log (vLLM says what it resolved near the top)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            return fh.read(n).decode("utf-8", "replace")
    except OSError:
        return ""


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x * 1000:.0f}"


# ---- where candidates come from ------------------------------------------------------------------

def fp8_kv_gain(wl: Named, kv_tokens: int, est: Estimate | None) -> float | None:
    """The most an fp8 KV cache can speed up this workload's decode steps. A decode step reads the weights
    once and every running request's KV cache (memory-bound at these batch sizes): an fp8 cache halves the
    second part. (weights + KV read) / (weights + KV read / 2) - 1, with the KV read capped by the cache vLLM
    sized; None where the estimator has no view of the weights."""
    if est is None or not getattr(est, "weights_bytes", 0) or not getattr(est, "kv_bytes_per_token", 0):
        return None
    read = kv_read_bytes(wl, kv_tokens, est)
    return (est.weights_bytes + read) / (est.weights_bytes + read / 2) - 1


def kv_read_bytes(wl: Named, kv_tokens: int, est: Estimate | None) -> float:
    """KV cache bytes one decode step reads at the workload's concurrency, capped by the cache vLLM sized."""
    return min(wl.workload.decode_reads(), kv_tokens or float("inf")) * est.kv_bytes_per_token


def propose(workloads: list[Named], defaults: Candidate, spec: LaunchSpec, est: Estimate | None = None,
            allow_fp8_kv: bool = False,
            min_gain: float = MIN_GAIN) -> list[Candidate]:
    """Candidates from the workloads' shapes, what vLLM resolved for its defaults and the KV cache sized
    (est: the estimator's view of the defaults, for the batch sizes vLLM picks on this GPU). With
    allow_fp8_kv, an fp8 KV cache where decode reads more KV than it gains from noise, or where the
    workload needs more KV than vLLM sized; it comes first, being the one with a modelled effect."""
    steps = defaults.vllm_resolved.get("max-num-batched-tokens")
    if not steps:
        steps = est.max_num_batched_tokens if est else 2048
    seqs = est.max_num_seqs if est else 256
    kv = defaults.vllm_kv_tokens or defaults.predicted_kv_tokens
    out: list[Candidate] = []

    def add(args: dict, why: str):
        for c in out:
            if c.engine_args == args:
                c.why += "; " + why
                return
        out.append(Candidate.of(args, why))

    pinned = spec.engine_args
    if allow_fp8_kv and "kv-cache-dtype" not in pinned:
        for wl in workloads:
            g, need = fp8_kv_gain(wl, kv, est), wl.workload.kv_tokens_in_flight()
            if g is not None and g > min_gain:
                add({"kv-cache-dtype": "fp8"},
                    f"{wl.name}: a decode step at concurrency {wl.workload.concurrency} reads about "
                    f"{kv_read_bytes(wl, kv, est) / 2**30:.0f} GiB "
                    f"of KV cache besides {est.weights_bytes / 2**30:.0f} GiB of weights; fp8 halves the KV part "
                    f"(at most {g:+.0%} per decode step)")
            elif kv and need > kv:
                add({"kv-cache-dtype": "fp8"},
                    f"{wl.name}: about {need:,.0f} KV tokens in flight, the defaults hold {kv:,}; fp8 holds twice as many")
    for wl in workloads:
        w = wl.workload
        new_prompt = w.prefix_len[1] + w.prompt_len[1]
        if "max-num-batched-tokens" not in pinned:
            if wl.slo_ttft_p99_s is None or new_prompt > steps / 2:
                for m in (2, 4):
                    add({"max-num-batched-tokens": steps * m},
                        f"{wl.name}: prompts up to {new_prompt} tokens are prefilled in {steps}-token steps; "
                        f"{steps * m} takes more prompt per step")
            elif steps // 2 >= max(seqs, w.prompt_len[1]):
                add({"max-num-batched-tokens": steps // 2},
                    f"{wl.name}: short prompts; {steps // 2}-token steps keep decode steps short under prefill")
        need = w.kv_tokens_in_flight()
        if kv and need > kv:
            if "gpu-memory-utilization" not in pinned:
                add({"gpu-memory-utilization": 0.95},
                    f"{wl.name}: about {need:,.0f} KV tokens in flight at concurrency {w.concurrency}, "
                    f"the defaults hold {kv:,}")
            cap = int(kv / w.mean_seq_len()) // 8 * 8
            preempted = sum(p.preemptions or 0 for p in defaults.points.get(wl.name, []))
            if "max-num-seqs" not in pinned and 8 <= cap < seqs and preempted:
                add({"max-num-seqs": cap},
                    f"{wl.name}: vLLM preempted {preempted:.0f} requests with its defaults; the KV cache holds "
                    f"about {cap} of them at once, and capping there avoids recomputing them")
    return out


def combine(res: TuneResult, workloads: list[Named], min_gain: float = MIN_GAIN) -> list[Candidate]:
    """For a workload where settings of different kinds each beat the defaults, both together."""
    d = res.defaults
    out = []
    for wl in workloads:
        base = d.score(wl) if d else None
        if not base:
            continue
        best: dict[str, Candidate] = {}
        for c in res.candidates:
            if c.ran and len(c.engine_args) == 1 and (c.score(wl) or 0) > base * (1 + min_gain):
                k = next(iter(c.engine_args))
                if k not in best or c.score(wl) > best[k].score(wl):
                    best[k] = c
        if len(best) >= 2:
            args = {k: v for c in best.values() for k, v in c.engine_args.items()}
            out.append(Candidate.of(args, f"{wl.name}: " + " and ".join(c.label for c in best.values())
                                    + " each beat the defaults"))
    return out


def _default_estimate(spec: LaunchSpec) -> Estimate | None:
    """The estimator's view of the defaults (batch sizes vLLM picks for this GPU); None without a GPU."""
    try:
        from .launching import prepare

        p = prepare(spec, check_port=False)
    except LauncherError:
        return None
    return p.plan.estimate if p.plan else None


def explicit_grid(max_num_seqs: list[int], max_num_batched_tokens: list[int], utilizations: list[float],
                  kv_dtypes: list[str]) -> list[Candidate]:
    """Every combination of the values given (instead of the proposals)."""
    import itertools

    out = []
    for s, b, u, k in itertools.product(max_num_seqs or [None], max_num_batched_tokens or [None], utilizations or [None],
                                        kv_dtypes or [None]):
        args = {}
        if s:
            args["max-num-seqs"] = s
        if b:
            args["max-num-batched-tokens"] = b
        if u:
            args["gpu-memory-utilization"] = u
        if k and k != "auto":
            args["kv-cache-dtype"] = k
        if args:
            out.append(Candidate.of(args, "given on the command line"))
    return out


def launch_file(base_spec: LaunchSpec, winner: Candidate, wl: Named, res: TuneResult) -> str:
    """A launch file (YAML) for `launcher launch --config` with the winner's settings."""
    import yaml

    d = {k: v for k, v in base_spec.to_dict().items()
         if k in ("model", "revision", "model_path", "model_name", "size_in_billions", "model_format", "quantization",
                  "env", "host", "port")
         and v not in (None, {}, "none", "pytorch", "127.0.0.1")}
    d["name"] = f"{base_spec.name.removeprefix('tune-')}-{wl.name}"[:64]
    d["engine_args"] = {**base_spec.engine_args, **winner.engine_args}
    imp = res.improvement(wl)
    head = (f"# written by `launcher tune` for the {wl.name} workload: {winner.label}"
            + (f" ({imp:+.1%} output tokens/s vs vLLM's defaults" if imp is not None else "")
            + (f" at p99 TTFT <= {wl.slo_ttft_p99_s:g} s)" if imp is not None and wl.slo_ttft_p99_s else
               ")" if imp is not None else ""))
    if str(winner.engine_args.get("kv-cache-dtype", "")).startswith("fp8"):
        head += ("\n# kv-cache-dtype fp8 stores keys and values in 8 bits (scale 1.0 unless the checkpoint has KV"
                 " scales):\n# outputs differ slightly from a 16-bit cache; check the model's accuracy before serving.")
    return head + "\n" + yaml.safe_dump(d, sort_keys=False)


def plot(res: TuneResult, path: str) -> None:
    """p99 TTFT against output throughput per candidate and workload (one panel per workload)."""
    from .bench import _pyplot

    plt = _pyplot()
    n = len(res.workloads)
    fig, axes = plt.subplots(1, n, figsize=(5.5 * n, 4.2), squeeze=False)
    for ax, wl in zip(axes[0], res.workloads):
        for c in res.candidates:
            pts = c.points.get(wl.name) or []
            if pts:
                ax.plot([p.output_throughput for p in pts], [(p.ttft_p99_s or 0) * 1000 for p in pts], marker="o",
                        label=c.label)
                for p in pts:
                    ax.annotate(str(p.concurrency), (p.output_throughput, (p.ttft_p99_s or 0) * 1000), fontsize=7)
        if wl.slo_ttft_p99_s:
            ax.axhline(wl.slo_ttft_p99_s * 1000, color="grey", linestyle="--", label="target")
        ax.set_xlabel("output tokens/s")
        ax.set_ylabel("p99 TTFT ms")
        ax.set_title(f"{wl.name} (points labelled by concurrency)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)

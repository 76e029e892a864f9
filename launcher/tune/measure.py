"""One engine start per candidate, as `launch` starts it, and the workloads swept on it up to where the latency
target binds."""
from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from ..bench import run_bench
from ..errors import LauncherError
from ..workloads import Named, at_level
from .results import Candidate, Point

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..launching.prepare import Fetch
    from ..spec import LaunchSpec
    from ..supervisor.run import ServerRun
    from .results import Say


class StartMeasurer:
    """One engine start per candidate (through launching.prepare and serving.served, as `launch` starts it) and
    the workloads swept on it."""

    def __init__(self, spec: LaunchSpec, workloads: list[Named], *, vocab_size: int, timeout_s: float,
                 api_key: str | None, refine: int, fetch: Fetch | None, say: Say) -> None:
        self.spec, self.workloads, self.vocab = spec, workloads, vocab_size
        self.timeout_s, self.api_key, self.refine, self.fetch, self.say = timeout_s, api_key, refine, fetch, say

    def run(self, c: Candidate, index: int) -> None:
        """Start the candidate's launch (named after the base launch and `index`), sweep, stop; into `c`."""
        from ..engines import vllm as vllm_engine
        from ..launching import prepare
        from ..runs import run_dir
        from ..serving import served

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
        from ..engines import vllm as vllm_engine

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
    from ..supervisor.machine import State

    return lambda: sr.sup.state == State.READY and sr.sup.restarts == 0


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

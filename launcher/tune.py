"""`launcher tune`: prune candidate engine settings with the estimator, benchmark the rest for real,
rank them by throughput under a latency target, and write a launch file for the winner."""
from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, field, replace

from .bench import BenchReport, Workload, run_bench
from .errors import LauncherError


@dataclass
class Candidate:
    label: str
    engine_args: dict  # overrides on top of the base launch; {} = vLLM defaults
    fits: bool | None = None
    why_pruned: str = ""
    report: BenchReport | None = None
    stopped_early: str = ""
    error: str = ""
    meets_target: bool | None = None

    def summary(self) -> dict:
        r = self.report
        return {"label": self.label, "engine_args": self.engine_args, "fits": self.fits, "pruned": self.why_pruned,
                "error": self.error, "stopped_early": self.stopped_early, "meets_target": self.meets_target,
                "output_throughput": r.output_throughput if r else None,
                "request_throughput": r.request_throughput if r else None,
                "ttft_p99_s": r.ttft_s["p99"] if r else None, "tpot_p99_s": r.tpot_s["p99"] if r else None,
                "failed": r.failed if r else None}


def grid(max_num_seqs: list[int], max_num_batched_tokens: list[int], utilizations: list[float],
         kv_dtypes: list[str]) -> list[Candidate]:
    out = [Candidate("vLLM defaults", {})]
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
            out.append(Candidate(" ".join(f"{k}={v}" for k, v in args.items()), args))
    return out


@dataclass
class TuneResult:
    candidates: list[Candidate] = field(default_factory=list)
    winner: Candidate | None = None
    target: dict = field(default_factory=dict)

    def ranked(self) -> list[Candidate]:
        ran = [c for c in self.candidates if c.report is not None and not c.error]
        ok = sorted((c for c in ran if c.meets_target), key=lambda c: -c.report.output_throughput)
        rest = sorted((c for c in ran if not c.meets_target), key=lambda c: -c.report.output_throughput)
        return ok + rest + [c for c in self.candidates if c.report is None or c.error]

    def to_dict(self) -> dict:
        return {"target": self.target, "winner": self.winner.summary() if self.winner else None,
                "ranked": [c.summary() for c in self.ranked()]}


def tune(base_spec, candidates: list[Candidate], workload: Workload, *, ttft_p99_ms: float | None,
         early_stop_ratio: float = 0.5, timeout_s: float = 600.0, vocab_size: int, on_progress=None) -> TuneResult:
    """Prune with the estimator (pre-flight of each candidate), then launch and benchmark each one."""
    from .launching import prepare
    from .serving import served

    res = TuneResult(candidates=candidates, target={"ttft_p99_ms": ttft_p99_ms, "workload": asdict(workload)})
    best = 0.0
    for i, c in enumerate(candidates):
        spec = replace(base_spec, name=f"{base_spec.name}-{i}"[:64], engine_args={**base_spec.engine_args, **c.engine_args})
        try:
            prep = prepare(spec)
        except LauncherError as e:
            c.fits, c.why_pruned = False, str(e)
            _progress(on_progress, c)
            continue
        c.fits = True
        model = prep.argv[prep.argv.index("--model") + 1]
        base = f"http://127.0.0.1:{prep.port}"
        try:
            with served(prep, timeout_s=timeout_s) as sr:
                from .supervisor.machine import State

                def alive():
                    return sr.sup.state == State.READY and sr.sup.restarts == 0
                half = replace(workload, num_requests=max(1, workload.num_requests // 2))
                first = run_bench(base, model, half, vocab_size=vocab_size, timeout_s=timeout_s, alive=alive)
                if best and first.output_throughput < early_stop_ratio * best:
                    c.report = first
                    c.stopped_early = (f"{first.output_throughput:.1f} tok/s after {half.num_requests} requests, "
                                       f"below {early_stop_ratio:.0%} of the best so far ({best:.1f})")
                else:
                    c.report = run_bench(base, model, workload, vocab_size=vocab_size, timeout_s=timeout_s, alive=alive)
        except LauncherError as e:
            c.error = str(e)
        if c.report is not None:
            p99 = c.report.ttft_s["p99"]
            c.meets_target = (not c.report.failed and not c.report.aborted and
                              (ttft_p99_ms is None or (p99 is not None and p99 * 1000 <= ttft_p99_ms)))
            if c.meets_target and not c.stopped_early:
                best = max(best, c.report.output_throughput)
        _progress(on_progress, c)
    ranked = [c for c in res.ranked() if c.meets_target and not c.stopped_early]
    res.winner = ranked[0] if ranked else None
    return res


def _progress(cb, c):
    if cb:
        cb(c)


def launch_file(base_spec, winner: Candidate) -> str:
    """A launch file (YAML) for `launcher launch --config` with the winner's settings."""
    import yaml

    d = {k: v for k, v in base_spec.to_dict().items()
         if k in ("model_path", "model_name", "size_in_billions", "model_format", "quantization", "env", "host", "port")
         and v not in (None, {}, "none", "pytorch", "127.0.0.1")}
    d["name"] = base_spec.name.removeprefix("tune-") or "tuned"
    d["engine_args"] = {**base_spec.engine_args, **winner.engine_args}
    return "# written by `launcher tune`: " + winner.label + "\n" + yaml.safe_dump(d, sort_keys=False)

"""`launcher bench`: throughput and latency of a running server under a defined workload.

Requests go to /v1/completions with streaming on, prompts given as token ids (exact lengths,
like `vllm bench serve`'s random dataset) or as texts from a JSONL file. Per request: time to
first token (TTFT), inter-token latencies (ITL), time per output token (TPOT), output tokens
from the final usage chunk. GPU memory and utilization are sampled through NVML meanwhile.
"""
from __future__ import annotations

import json
import random
import statistics
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

from .errors import BadInput

if TYPE_CHECKING:
    from collections.abc import Callable

    import aiohttp


@dataclass(frozen=True)
class Workload:
    num_requests: int = 64
    concurrency: int = 8
    request_rate: float | None = None  # requests/s (Poisson arrivals); None: as fast as concurrency allows
    prompt_len: tuple[int, int] = (128, 128)  # uniform [lo, hi]
    output_len: tuple[int, int] = (64, 64)
    warmup: int = 2
    seed: int = 0
    prompts_file: str | None = None  # JSONL with {"prompt": "..."} (and optional "max_tokens")
    tokenizer: str | None = None  # tokenizer.json: random prompts are decoded to text (as vLLM's random dataset does)
    # Shared prefixes: every prompt starts with one of num_prefixes fixed token sequences (documents of a RAG
    # corpus, an agent's system prompt), so vLLM's prefix cache can reuse them; prompt_len is what follows.
    prefix_len: tuple[int, int] = (0, 0)
    num_prefixes: int = 1
    # Multi-turn sessions: a session sends `turns` requests one after another, each prompt being the previous
    # prompt + that turn's answer (a fixed stand-in of output_len tokens) + a new message of prompt_len tokens.
    # concurrency then counts sessions, each with at most one request in flight.
    turns: int = 1

    def validate(self) -> Workload:
        """The workload, refused (exit 2) where a count, length or rate cannot work."""
        if self.num_requests < 1 or self.concurrency < 1 or self.warmup < 0:
            raise BadInput("--num-requests and --concurrency must be at least 1, --warmup at least 0.")
        for name, (lo, hi) in (("prompt", self.prompt_len), ("output", self.output_len)):
            if lo < 1 or hi < lo:
                raise BadInput(f"--{name}-len must be N or LO:HI with 1 <= LO <= HI.")
        if self.prefix_len[0] < 0 or self.prefix_len[1] < self.prefix_len[0]:
            raise BadInput("--prefix-len must be N or LO:HI with 0 <= LO <= HI.")
        if self.num_prefixes < 1 or self.turns < 1:
            raise BadInput("the number of shared prefixes and of turns must be at least 1.")
        if self.request_rate is not None and self.request_rate <= 0:
            raise BadInput("--request-rate must be positive.")
        return self

    def max_seq_len(self) -> int:
        """The longest sequence (prompt + output) a request of this workload can reach."""
        return self.prefix_len[1] + self.turns * (self.prompt_len[1] + self.output_len[1])

    def mean_seq_len(self) -> float:
        """Mean length of a request's sequence at its end, over all turns."""
        step = (sum(self.prompt_len) + sum(self.output_len)) / 2
        return sum(self.prefix_len) / 2 + step * (self.turns + 1) / 2

    def decode_reads(self) -> float:
        """KV tokens one decode step reads at full concurrency: each running request attends to its whole
        context (half-way through its answer on average). A prefix common to every request is counted once,
        as vLLM's cascade attention reads it once; several documents are read by each request that uses one."""
        prefix = sum(self.prefix_len) / 2
        ctx = self.mean_seq_len() - sum(self.output_len) / 4
        if self.num_prefixes == 1 and prefix:
            return self.concurrency * (ctx - prefix) + prefix
        return self.concurrency * ctx

    def kv_tokens_in_flight(self) -> float:
        """KV cache tokens the workload keeps busy at full concurrency, counting each shared prefix once."""
        prefix = sum(self.prefix_len) / 2
        return self.concurrency * (self.mean_seq_len() - prefix) + min(self.num_prefixes, self.concurrency) * prefix


def parse_range(text: str, what: str) -> tuple[int, int]:
    """'N' or 'LO:HI' as (lo, hi); not integers: refused (exit 2, naming `what`). Workload.validate checks the
    bounds."""
    try:
        lo, _, hi = str(text).partition(":")
        r = (int(lo), int(hi or lo))
    except ValueError:
        raise BadInput(f"{what} must be N or LO:HI, got '{text}'.") from None
    return r


@dataclass
class RequestResult:
    ok: bool
    start_s: float
    latency_s: float = 0.0
    ttft_s: float | None = None
    itl_s: list[float] = field(default_factory=list)
    prompt_tokens: int = 0
    output_tokens: int = 0
    error: str = ""


def _tokenizer(path: str):
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise BadInput("text prompts need the 'tokenizers' package.") from None
    try:
        return Tokenizer.from_file(path)
    except Exception as e:  # noqa: BLE001 - a broken or missing file is bad input
        raise BadInput(f"cannot read tokenizer '{path}': {e}") from None


def make_sessions(w: Workload, model: str, vocab_size: int) -> tuple[list[dict], list[list[dict]]]:
    """(warm-up bodies, sessions): a session is the list of requests sent one after another (one for a
    single-turn workload). Warm-up prompts share nothing with the measured ones, so they do not fill the
    prefix cache for them."""
    rng = random.Random(w.seed)
    if w.prompts_file:
        return _from_file(w, model, rng)
    hi = max(10, vocab_size - 1)
    tok = _tokenizer(w.tokenizer) if w.tokenizer else None
    if tok is not None:
        hi = min(hi, tok.get_vocab_size() - 1)

    def ids(n: int) -> list[int]:
        return [rng.randint(5, hi) for _ in range(n)]

    def body(prompt_ids: list[int], max_tokens: int) -> dict:
        return _body({"model": model, "prompt": tok.decode(prompt_ids) if tok is not None else prompt_ids,
                      "max_tokens": max_tokens})

    warm = [body(ids(rng.randint(*w.prompt_len)), rng.randint(*w.output_len)) for _ in range(w.warmup)]
    prefixes = [ids(rng.randint(*w.prefix_len)) for _ in range(w.num_prefixes)] if w.prefix_len[1] else [[]]
    sessions, left = [], w.num_requests
    while left > 0:
        history = list(rng.choice(prefixes))
        turns = []
        for _ in range(min(w.turns, left)):
            history += ids(rng.randint(*w.prompt_len))
            out = rng.randint(*w.output_len)
            turns.append(body(list(history), out))
            history += ids(out)  # the answer as the next turn's context (a fixed stand-in for what was generated)
        sessions.append(turns)
        left -= len(turns)
    return warm, sessions


def _from_file(w: Workload, model: str, rng: random.Random) -> tuple[list[dict], list[list[dict]]]:
    rows = []
    with open(w.prompts_file) as fh:
        for i, line in enumerate(fh, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    raise BadInput(f"{w.prompts_file}:{i}: not JSON.") from None
    if not rows or any("prompt" not in r for r in rows):
        raise BadInput(f"{w.prompts_file}: every line needs a 'prompt'.")
    out = []
    for i in range(w.num_requests + w.warmup):
        r = rows[i % len(rows)]
        out.append(_body({"model": model, "prompt": r["prompt"],
                          "max_tokens": int(r.get("max_tokens") or rng.randint(*w.output_len))}))
    return out[: w.warmup], [[b] for b in out[w.warmup:]]


def _body(d: dict) -> dict:
    d.update(stream=True, stream_options={"include_usage": True}, ignore_eos=True, temperature=0.0)
    return d


async def send(session: aiohttp.ClientSession, base_url: str, body: dict, api_key: str | None,
               t_origin: float) -> RequestResult:
    """One streaming completion; timings taken as the server's chunks arrive (aiohttp, like vLLM's own tool)."""
    import aiohttp

    t0 = time.perf_counter()
    res = RequestResult(ok=False, start_s=t0 - t_origin)
    headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
    last = None
    try:
        async with session.post(base_url.rstrip("/") + "/v1/completions", json=body, headers=headers) as r:
            if r.status != 200:
                res.error = f"HTTP {r.status}: {(await r.text())[:200]}"
                res.latency_s = time.perf_counter() - t0
                return res
            async for raw in r.content:
                line = raw.decode("utf-8", "replace").strip()
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                now = time.perf_counter()
                if chunk.get("choices") and chunk["choices"][0].get("text") is not None:
                    if res.ttft_s is None:
                        res.ttft_s = now - t0
                    elif last is not None:
                        res.itl_s.append(now - last)
                    last = now
                if chunk.get("usage"):
                    res.prompt_tokens = chunk["usage"].get("prompt_tokens", 0)
                    res.output_tokens = chunk["usage"].get("completion_tokens", 0)
        res.ok = res.ttft_s is not None and res.output_tokens > 0
        if not res.ok:
            res.error = "no tokens came back"
    except (aiohttp.ClientError, OSError, ValueError, TimeoutError) as e:
        res.error = f"{type(e).__name__}: {e}"
    res.latency_s = time.perf_counter() - t0
    return res


class GpuSampler(threading.Thread):
    """NVML memory and utilization every interval_s, while a benchmark runs."""

    def __init__(self, interval_s: float = 0.5):
        super().__init__(daemon=True)
        self.interval_s, self.samples, self._halt = interval_s, [], threading.Event()

    def run(self) -> None:
        """Sample each GPU's memory and utilization through NVML until stopped (nothing without NVML)."""
        try:
            import pynvml

            pynvml.nvmlInit()
        except Exception:  # noqa: BLE001 - no GPU: nothing to sample
            return
        try:
            from .gpu import visible_indices

            handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in visible_indices(pynvml.nvmlDeviceGetCount())]
            t0 = time.perf_counter()
            while not self._halt.is_set():
                row = {"t_s": round(time.perf_counter() - t0, 2), "gpus": []}
                for h in handles:
                    m = pynvml.nvmlDeviceGetMemoryInfo(h)
                    u = pynvml.nvmlDeviceGetUtilizationRates(h)
                    row["gpus"].append({"used_bytes": int(m.used), "util_pct": int(u.gpu)})
                self.samples.append(row)
                self._halt.wait(self.interval_s)
        finally:
            pynvml.nvmlShutdown()

    def stop(self) -> None:
        """End the sampling."""
        self._halt.set()


def pct(xs: list[float], p: float) -> float | None:
    """The p-th percentile of xs (linear between ranks, as numpy's default); None for no values."""
    if not xs:
        return None
    xs = sorted(xs)
    k = (len(xs) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


@dataclass
class BenchReport:
    workload: dict
    duration_s: float
    completed: int
    failed: int
    request_throughput: float
    output_throughput: float
    total_token_throughput: float
    ttft_s: dict
    tpot_s: dict
    itl_s: dict
    latency_s: dict
    gpu: dict
    errors: list[str]
    timeline: list[dict]
    aborted: str = ""
    server: dict = field(default_factory=dict)  # vLLM's own counters over the run: prefix cache hits, preemptions

    def to_dict(self) -> dict:
        return asdict(self)


def summarize(results: list[RequestResult], duration_s: float, w: Workload, gpu_samples: list[dict],
              aborted: str = "") -> BenchReport:
    """The report of one run: throughputs over the measured wall time, TTFT, TPOT, ITL and latency percentiles
    of the successful requests, the failures, the GPU samples."""
    ok = [r for r in results if r.ok]
    out_tok = sum(r.output_tokens for r in ok)
    in_tok = sum(r.prompt_tokens for r in ok)
    tpot = [(r.latency_s - r.ttft_s) / (r.output_tokens - 1) for r in ok if r.output_tokens > 1]
    itl = [x for r in ok for x in r.itl_s]

    def dist(xs: list[float]) -> dict:
        return {"mean": statistics.fmean(xs) if xs else None, "p50": pct(xs, 50), "p90": pct(xs, 90), "p99": pct(xs, 99)}

    mem = [sum(g["used_bytes"] for g in s["gpus"]) for s in gpu_samples]
    util = [statistics.fmean(g["util_pct"] for g in s["gpus"]) for s in gpu_samples if s["gpus"]]
    d = max(duration_s, 1e-9)
    timeline = [{"start_s": round(r.start_s, 3), "latency_s": round(r.latency_s, 4), "ttft_s": r.ttft_s,
                 "output_tokens": r.output_tokens, "ok": r.ok} for r in results]
    return BenchReport(
        workload=asdict(w), duration_s=round(duration_s, 3), completed=len(ok), failed=len(results) - len(ok),
        request_throughput=len(ok) / d, output_throughput=out_tok / d, total_token_throughput=(in_tok + out_tok) / d,
        ttft_s=dist([r.ttft_s for r in ok]), tpot_s=dist(tpot), itl_s=dist(itl), latency_s=dist([r.latency_s for r in ok]),
        gpu={"samples": len(gpu_samples), "max_used_bytes": max(mem) if mem else None,
             "mean_util_pct": statistics.fmean(util) if util else None},
        errors=sorted({r.error for r in results if r.error})[:10], timeline=timeline, aborted=aborted)


def served_max_len(base_url: str, model: str, api_key: str | None = None) -> int | None:
    """The max_model_len the server reports for this model (vLLM's /v1/models); None where it says none."""
    import urllib.request

    req = urllib.request.Request(base_url.rstrip("/") + "/v1/models",
                                 headers={"Authorization": f"Bearer {api_key}"} if api_key else {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            data = json.loads(r.read()).get("data") or []
    except (OSError, ValueError):
        return None
    for m in data:
        if m.get("id") == model and isinstance(m.get("max_model_len"), int):
            return m["max_model_len"]
    return None


def run_bench(base_url: str, model: str, w: Workload, *, vocab_size: int, api_key: str | None = None,
              timeout_s: float = 600.0, alive: Callable[[], bool] = lambda: True) -> BenchReport:
    """Warm up, then send the workload; stops early (and says so) when the server dies."""
    import asyncio

    return asyncio.run(_run(base_url, model, w.validate(), vocab_size, api_key, timeout_s, alive))


async def _run(base_url: str, model: str, w: Workload, vocab_size: int, api_key: str | None, timeout_s: float,
               alive: Callable[[], bool]) -> BenchReport:
    import asyncio

    import aiohttp

    warm, sessions = make_sessions(w, model, vocab_size)
    alive = _throttled(alive, 0.5)  # the check reads state files: not once per request on the hot path
    t_origin = time.perf_counter()
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    # connections idle for 4 s are not reused: vLLM's server closes them after 5 (VLLM_HTTP_TIMEOUT_KEEP_ALIVE), and
    # aiohttp's own 15 s let a request go out on one being closed (a "Server disconnected" failure that is the client's)
    connector = aiohttp.TCPConnector(limit=w.concurrency, keepalive_timeout=4)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        for body in warm:
            r = await send(session, base_url, body, api_key, t_origin)
            if not r.ok:
                return summarize([r], time.perf_counter() - t_origin, w, [], aborted=f"warm-up failed: {r.error}")
        before = await server_counters(session, base_url)
        sampler = GpuSampler()
        sampler.start()
        results: list[RequestResult] = []
        rng = random.Random(w.seed + 1)
        slots = asyncio.Semaphore(w.concurrency)
        dead = asyncio.Event()
        aborted = ""
        t0 = time.perf_counter()

        async def server_gone() -> bool:
            try:
                async with session.get(base_url.rstrip("/") + "/health", timeout=aiohttp.ClientTimeout(total=2)) as h:
                    return h.status != 200 or not alive()
            except (aiohttp.ClientError, OSError, TimeoutError):
                return True

        async def one(turns: list[dict]) -> None:
            try:
                for body in turns:  # a session's turns go one after another
                    if dead.is_set():
                        break
                    res = await send(session, base_url, body, api_key, t0)
                    results.append(res)
                    if not res.ok:
                        if await server_gone():
                            dead.set()
                        break
            finally:
                slots.release()

        tasks = []
        next_at = t0
        for turns in sessions:
            if w.request_rate:
                next_at += rng.expovariate(w.request_rate)
                delay = next_at - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            await slots.acquire()
            if dead.is_set() or not alive():
                slots.release()
                aborted = "the server died during the benchmark"
                break
            tasks.append(asyncio.create_task(one(turns)))
        await asyncio.gather(*tasks)
        duration = time.perf_counter() - t0
        sampler.stop()
        sampler.join(timeout=5)
        if not aborted and (dead.is_set() or not alive()):
            aborted = "the server died during the benchmark"
        after = await server_counters(session, base_url) if not aborted else {}
    rep = summarize(results, duration, w, sampler.samples, aborted=aborted)
    rep.server = counter_delta(before, after)
    return rep


# Counters of vLLM's /metrics read around a run (names of vLLM's V1 engine; absent ones are left out).
SERVER_COUNTERS = {"prefix_cache_queries": "vllm:prefix_cache_queries", "prefix_cache_hits": "vllm:prefix_cache_hits",
                   "preemptions": "vllm:num_preemptions", "prompt_tokens": "vllm:prompt_tokens"}


async def server_counters(session: aiohttp.ClientSession, base_url: str) -> dict:
    """vLLM's Prometheus counters (/metrics: prefix-cache queries and hits, preemptions, ...); {} when unavailable."""
    import aiohttp

    try:
        async with session.get(base_url.rstrip("/") + "/metrics", timeout=aiohttp.ClientTimeout(total=5)) as r:
            text = await r.text() if r.status == 200 else ""
    except (aiohttp.ClientError, OSError, TimeoutError):
        return {}
    return parse_counters(text)


def parse_counters(text: str) -> dict:
    """Sum each counter of SERVER_COUNTERS over its labels, from Prometheus text."""
    out: dict = {}
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        for key, name in SERVER_COUNTERS.items():
            if line.startswith((name + "_total{", name + "_total ", name + "{", name + " ")):
                try:
                    out[key] = out.get(key, 0.0) + float(line.rsplit(" ", 1)[1])
                except ValueError:
                    pass
    return out


def counter_delta(before: dict, after: dict) -> dict:
    """What the counters grew by over a run, with the prefix-cache hit rate where there were queries."""
    d = {k: after[k] - before.get(k, 0.0) for k in after}
    if d.get("prefix_cache_queries"):
        d["prefix_cache_hit_rate"] = d.get("prefix_cache_hits", 0.0) / d["prefix_cache_queries"]
    return d


def _throttled(check: Callable[[], bool], every_s: float) -> Callable[[], bool]:
    """check(), re-evaluated at most every every_s seconds; a False answer sticks."""
    state = {"at": -1e9, "value": True}

    def wrapped() -> bool:
        now = time.perf_counter()
        if state["value"] and now - state["at"] >= every_s:
            state["value"], state["at"] = bool(check()), now
        return state["value"]
    return wrapped


def plot(report: BenchReport, path: str) -> None:
    """Latency percentiles and throughput over time, as a PNG (matplotlib, imported only here)."""
    plt = _pyplot()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    names = ["ttft_s", "tpot_s", "itl_s", "latency_s"]
    for i, n in enumerate(names):
        d = getattr(report, n)
        vals = [d[p] * 1000 if d[p] is not None else 0 for p in ("p50", "p90", "p99")]
        a1.bar([i * 4 + j for j in range(3)], vals, label=n.replace("_s", ""))
    a1.set_xticks([i * 4 + 1 for i in range(4)], [n.replace("_s", "") for n in names])
    a1.set_ylabel("ms (p50 / p90 / p99)")
    a1.set_yscale("log")
    a1.set_title("latency percentiles")
    done = sorted((r["start_s"] + r["latency_s"], r["output_tokens"]) for r in report.timeline if r["ok"])
    if done:
        end = done[-1][0]
        step = max(end / 30, 1e-3)
        xs, ys, t, i, acc = [], [], step, 0, 0
        while t <= end + step:
            while i < len(done) and done[i][0] <= t:
                acc += done[i][1]
                i += 1
            xs.append(t)
            ys.append(acc)
            t += step
        a2.plot(xs, [(ys[k] - (ys[k - 1] if k else 0)) / step for k in range(len(ys))], marker=".")
    a2.set_xlabel("s")
    a2.set_ylabel("output tokens/s")
    a2.set_title(f"throughput ({report.completed} ok, {report.failed} failed)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise BadInput("--plot needs matplotlib.", hint="pip install 'launcher[plot]'") from None

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt

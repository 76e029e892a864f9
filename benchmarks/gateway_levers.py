"""The gateway's own cost per request and what each lever changes, against a stand-in model server that answers at
once (so nothing of vLLM's time hides it): one-token requests one at a time on a kept-alive connection (the added
time at p50 and p99), and 64 concurrent streams of 64 chunks each (the chunks per second kept through the gateway).

Each configuration runs in its own gateway process (the real `gateway.app.Gateway`, its model "adopted" at the
stand-in's port: no vLLM), in interleaved rounds with direct ones, so that a busy machine moves both alike; the table
gives the median of the rounds and their spread (min-max).

Levers (LAUNCHER_GATEWAY_* variables read by the gateway, each one's default the shipped behaviour):
  access-log-off   LAUNCHER_GATEWAY_ACCESS_LOG=0  (shipped: one line a request)
  no-keep-alive    LAUNCHER_GATEWAY_KEEP_ALIVE=0  (shipped: connections to the model's server kept alive)
  uvloop           the gateway's event loop uvloop's (shipped: asyncio's own)
The request body is never re-encoded (sent on as it came) and its `model` is read by json.loads of the whole body: the
128 kB prompt column shows what a long body costs.
  --baseline DIR  the gateway of another checkout beside them (repeatable) (`git worktree add DIR COMMIT`), e.g. the relay on
                  aiohttp's client before gateway/upstream.py: its row is named after DIR's commit
usage: .venv/bin/python benchmarks/gateway_levers.py [--rounds 5] [--baseline DIR] [--markdown FILE]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import psutil

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from launcher.bench import pct  # noqa: E402

UPSTREAM = r'''
import asyncio, json, sys
from aiohttp import web
ONE = json.dumps({"id": "cmpl-1", "object": "text_completion", "model": "m", "choices": [{"index": 0, "text": "x",
                  "finish_reason": "length"}], "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}).encode()
CHUNK = b'data: {"id":"cmpl-1","object":"text_completion","choices":[{"index":0,"text":"x"}]}\n\n'
async def completions(request):
    body = await request.json()
    if not body.get("stream"):
        return web.Response(body=ONE, content_type="application/json")
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    gap = float(body.get("chunk_gap_s", 0))  # pacing: a model decoding at 1/gap tokens a second per stream
    for _ in range(int(body.get("max_tokens", 64))):
        await resp.write(CHUNK)
        await asyncio.sleep(gap)
    await resp.write(b"data: [DONE]\n\n")
    return resp
async def health(request):
    return web.Response(text="ok")
app = web.Application()
app.router.add_post("/v1/completions", completions)
app.router.add_get("/health", health)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
'''

GATEWAY = r'''
import asyncio, os, sys
from launcher.gateway.app import Gateway, serve
from launcher.models_file import ModelEntry
from launcher.gateway.options import Options
from launcher.spec import LaunchSpec
from launcher.supervisor.machine import State
upstream, port = int(sys.argv[1]), int(sys.argv[2])
class Up:  # the stand-in server, adopted as an earlier gateway's model would be
    alive, state = True, State.READY
    def failure(self): return ""
    def wait_ready(self, timeout_s): return self.state
    def stop(self, timeout_s=None): self.alive = False; return State.STOPPED
class Starter:
    def need(self, entry, key): return 0, None, None
    def adopt(self, name, key): return Up(), upstream, (0, None, None)
gw = Gateway([ModelEntry(LaunchSpec(name="m", model_path="/nowhere"))], Options(capacity_bytes=1 << 40), None,
             starter=Starter())
async def main():
    await serve(gw, "127.0.0.1", port, asyncio.Event())
if os.environ.get("BENCH_LOOP") == "uvloop":
    import uvloop
    uvloop.run(main())
else:
    asyncio.run(main())
'''


def cpu_s(pid: int) -> float:
    """The CPU time a process has had, in seconds: the scheduler's own count in nanoseconds where Linux gives it
    (/proc/PID/schedstat), else user and system time in clock ticks (10 ms)."""
    try:
        with open(f"/proc/{pid}/schedstat") as fh:
            return int(fh.read().split()[0]) / 1e9
    except OSError:
        return sum(psutil.Process(pid).cpu_times()[:2])


def wait_up(port: int) -> None:
    import urllib.request

    for _ in range(200):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1).read()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing answers on port {port}")


async def one_token(port: int, n: int, prompt_chars: int = 5) -> list[float]:
    import aiohttp

    body = json.dumps({"model": "m", "prompt": ("Hello " * prompt_chars)[:prompt_chars], "max_tokens": 1}).encode()
    out = []
    async with aiohttp.ClientSession() as s:  # one kept-alive connection, as an SDK client keeps it
        for i in range(n + 20):
            t = time.perf_counter()
            async with s.post(f"http://127.0.0.1:{port}/v1/completions", data=body,
                              headers={"Content-Type": "application/json"}) as r:
                await r.read()
            if i >= 20:  # warm-up left out
                out.append(time.perf_counter() - t)
    return out


async def streams(port: int, n: int = 64, chunks: int = 64, gap_s: float = 0.0) -> float:
    """Chunks per second with n streams at once (each chunk gap_s after the last: 0 as fast as it goes)."""
    import aiohttp

    body = json.dumps({"model": "m", "prompt": "Hello", "max_tokens": chunks, "stream": True,
                       "chunk_gap_s": gap_s}).encode()
    got = 0

    async def one(s):
        nonlocal got
        async with s.post(f"http://127.0.0.1:{port}/v1/completions", data=body,
                          headers={"Content-Type": "application/json"}) as r:
            async for line in r.content:
                if line.startswith(b"data: {"):
                    got += 1

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
        await asyncio.gather(*(one(s) for _ in range(n)))  # warm-up round
        got, t = 0, time.perf_counter()
        for _ in range(3):
            await asyncio.gather(*(one(s) for _ in range(n)))
        return got / (time.perf_counter() - t)




def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--requests", type=int, default=400, help="one-token requests per path and round")
    ap.add_argument("--levers", default="shipped,access-log-off,no-keep-alive")
    ap.add_argument("--chunk-gap-ms", type=float, default=20.0,
                    help="paced streams: ms between chunks of a stream (20: 50 tokens/s each, about what an 8B model on "
                         "one H100 gives each of 64 streams)")
    ap.add_argument("--baseline", action="append", default=[],
                    help="another checkout whose gateway runs beside this one's (more than one: repeat)")
    ap.add_argument("--markdown")
    a = ap.parse_args()
    levers = {"shipped": {}, "access-log-off": {"LAUNCHER_GATEWAY_ACCESS_LOG": "0"},
              "no-keep-alive": {"LAUNCHER_GATEWAY_KEEP_ALIVE": "0"}, "uvloop": {"BENCH_LOOP": "uvloop"}}
    home = tempfile.mkdtemp(prefix="gw-levers-")
    extra_path = os.pathsep + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH") else ""  # e.g. a staged site
    env = dict(os.environ, LAUNCHER_HOME=home, PYTHONPATH=ROOT + extra_path)
    up = subprocess.Popen([sys.executable, "-c", UPSTREAM, "18401"], env=env)
    procs = [up]
    rows = {}
    try:
        wait_up(18401)
        gws = {}
        runs = [(name, levers[name], ROOT) for name in a.levers.split(",")]
        for tree in a.baseline:
            commit = subprocess.run(["git", "-C", tree, "rev-parse", "--short", "HEAD"], capture_output=True,
                                    text=True, check=True).stdout.strip()
            dirty = subprocess.run(["git", "-C", tree, "diff", "--stat"], capture_output=True, text=True).stdout
            runs.append((f"at {commit}" + (" (changed)" if dirty else ""), {}, os.path.abspath(tree)))
        for i, (name, extra, tree) in enumerate(runs):
            p = subprocess.Popen([sys.executable, "-c", GATEWAY, "18401", str(18410 + i)],
                                 env={**env, **extra, "PYTHONPATH": tree + extra_path}, cwd=tree)
            procs.append(p)
            wait_up(18410 + i)
            gws[name] = 18410 + i
        res: dict = {k: {"p50": [], "p99": [], "long": [], "tput": [], "paced": [], "cpu": []}
                     for k in ["direct", *gws]}
        cpu_of = {"direct": up, **{name: procs[1 + i] for i, name in enumerate(gws)}}
        for r in range(a.rounds):
            for name, port in [("direct", 18401), *gws.items()]:
                # the CPU time the gateway process spends (the stand-in's own for direct): less moved by a busy
                # machine than the wall time, which also holds the waits for a core
                pid = cpu_of[name].pid
                c0 = cpu_s(pid)
                lat = asyncio.run(one_token(port, a.requests))
                res[name]["cpu"].append((cpu_s(pid) - c0) / (a.requests + 20) * 1e3)
                res[name]["p50"].append(pct(lat, 50) * 1e3)
                res[name]["p99"].append(pct(lat, 99) * 1e3)
                res[name]["long"].append(pct(asyncio.run(one_token(port, a.requests // 4, 128_000)), 50) * 1e3)
                res[name]["tput"].append(asyncio.run(streams(port)))
                res[name]["paced"].append(asyncio.run(streams(port, gap_s=a.chunk_gap_ms / 1e3)))
            print(f"round {r + 1}: " + ", ".join(f"{k} {v['p50'][-1]:.3f} ms {v['tput'][-1]:.0f} chunks/s"
                                                 for k, v in res.items()), flush=True)
        for name, v in res.items():
            rows[name] = v
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(10)
    med = statistics.median
    d = rows["direct"]
    lines = [f"Measured {time.strftime('%Y-%m-%d')} on {platform.machine()} ({os.cpu_count()} cores), against a "
             f"stand-in model server that answers at once; `benchmarks/gateway_levers.py --rounds {a.rounds}`: "
             f"{a.requests} one-token requests one at a time on a kept-alive connection, and 64 streams of 64 chunks "
             f"at once (unpaced, and paced at one chunk every {a.chunk_gap_ms:g} ms a stream), per path and round, the paths "
             "interleaved. Median of the rounds (min to max).", "",
             "The CPU column is the CPU time (user and system) of the gateway's process per one-token request (for "
             "direct: the stand-in's own), which a busy machine moves less than the wall time.", "",
             "| path | one-token p50 | added at p50 | CPU a request | one-token p99 | 128 kB prompt, one token: p50 | "
             "64 streams unpaced: chunks/s | kept | 64 streams paced: kept |", "|---|---|---|---|---|---|---|---|---|"]
    for name, v in rows.items():
        added = [x - y for x, y in zip(v["p50"], d["p50"])]
        kept = [x / y * 100 for x, y in zip(v["tput"], d["tput"])]
        paced = [x / y * 100 for x, y in zip(v["paced"], d["paced"])]
        span = lambda xs, f: f"{f(med(xs))} ({f(min(xs))} to {f(max(xs))})"  # noqa: E731
        lines.append(f"| {name} | {med(v['p50']):.3f} ms | "
                     + ("-" if name == "direct" else span(added, lambda x: f"{x:+.3f} ms"))
                     + f" | {span(v['cpu'], lambda x: f'{x:.3f} ms')} | {med(v['p99']):.3f} ms | {med(v['long']):.3f} ms | {med(v['tput']):,.0f} | "
                     + ("-" if name == "direct" else span(kept, lambda x: f"{x:.1f}%")) + " | "
                     + (f"{med(v['paced']):,.0f} chunks/s" if name == "direct" else span(paced, lambda x: f"{x:.1f}%"))
                     + " |")
    text = "\n".join(lines) + "\n"
    print(text)
    if a.markdown:
        with open(a.markdown, "w") as fh:
            fh.write(text)


if __name__ == "__main__":
    main()

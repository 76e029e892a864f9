"""Fair switching between two models that do not fit together, measured on the gateway's own pool (backends.py)
with launches that take START_S to start (a stand-in for vLLM: no engine, so that what is measured is the
gateway's scheduling alone). Model `a` has steady traffic (4 clients, 0.1 s between a client's requests, each request
0.2 s); model `b` gets one request every 5 s. Waiting time is from a request's arrival to its model taking it.

usage: .venv/bin/python benchmarks/fair_switching.py [--seconds 120] [--start-s 1.0] [--markdown FILE]
"""
import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


class Launch:
    def __init__(self, start_s):
        self.start_s, self.alive = start_s, True
        from launcher.supervisor.machine import State

        self.state = State.STARTING

    def wait_ready(self, timeout_s, poll_s=0.1):
        from launcher.supervisor.machine import State

        time.sleep(self.start_s)
        self.state = State.READY
        return self.state

    def failure(self):
        return ""

    def stop(self, timeout_s=None):
        from launcher.supervisor.machine import State

        self.state, self.alive = State.STOPPED, False
        return self.state


class Prep:
    port = 1

    def release_locks(self):
        pass


class Starter:
    def __init__(self, start_s):
        self.start_s = start_s

    def need(self, entry, key):
        return 1 << 30, None, None

    def prepare(self, entry, key, claim):
        return Prep()

    def launch(self, prep):
        return Launch(self.start_s)

    def adopt(self, name, key):
        return None


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))] if xs else float("nan")


async def run(seconds, start_s, min_stay_s, max_wait_s):
    from launcher.gateway.backends import Backends
    from launcher.gateway.metrics import GatewayMetrics
    from launcher.models_file import ModelEntry
    from launcher.gateway.options import Options
    from launcher.spec import LaunchSpec

    entries = [ModelEntry(LaunchSpec(name=n, model_path="/m/" + n)) for n in ("a", "b")]
    opts = Options(capacity_bytes=int(1.5 * (1 << 30)), gpu=False, min_stay_s=min_stay_s, max_wait_s=max_wait_s,
                   queue_timeout_s=seconds)
    pool = Backends(entries, opts, GatewayMetrics(), Starter(start_s))
    waits = {"a": [], "b": []}
    end = time.monotonic() + seconds

    async def one(model, hold_s):
        t0 = time.monotonic()
        x = await pool.acquire(model)
        waits[model].append(time.monotonic() - t0)
        await asyncio.sleep(hold_s)
        pool.release(x, "/v1/completions", 200, hold_s)

    async def steady():
        while time.monotonic() < end:
            await one("a", 0.2)
            await asyncio.sleep(0.1)

    async def sparse():
        while time.monotonic() < end:
            asyncio.get_running_loop().create_task(one("b", 0.2))
            await asyncio.sleep(5)

    tasks = [asyncio.get_running_loop().create_task(steady()) for _ in range(4)] + [
        asyncio.get_running_loop().create_task(sparse())]
    await asyncio.wait(tasks, timeout=seconds + 5 * start_s + max(min_stay_s, max_wait_s) + 30)
    starts_total = int(sum(s.value for m in pool.metrics.registry.collect() for s in m.samples
                           if s.name == "launcher_gateway_starts_total"))
    await pool.stop_all()
    return waits, starts_total


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=120)
    ap.add_argument("--start-s", type=float, default=1.0)
    ap.add_argument("--markdown")
    a = ap.parse_args()
    os.environ["LAUNCHER_HOME"] = tempfile.mkdtemp()
    rows = []
    for label, stay, wait in (("before: let go whenever idle, wait while busy", 0.0, 1e9),
                              ("after: --min-stay 10 --max-wait 30 (the defaults)", 10.0, 30.0)):
        waits, starts = asyncio.run(run(a.seconds, a.start_s, stay, wait))
        per_min = starts / (a.seconds / 60)
        for m in ("a", "b"):
            w = waits[m]
            rows.append(f"| {label} | {m} | {len(w)} | {pct(w, 50):.2f} | {pct(w, 99):.2f} | {max(w) if w else float('nan'):.2f} "
                        f"| {per_min:.1f} |")
    text = (f"| policy | model | requests served | wait p50, s | wait p99, s | wait max, s | starts per minute |\n"
            f"|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n")
    print(text)
    if a.markdown:
        with open(a.markdown, "w") as fh:
            fh.write(text)


if __name__ == "__main__":
    main()

"""What vLLM takes beyond its share on a 24 GB card, emulated on a large GPU, and whether it then serves under load.

A holder process takes all of the GPU but what an idle card of that kind shows free (NVML free = its total less the
driver's reserve, as launcher/estimator/core.cuda_reserved_bytes models it: 22.15 GiB for an L4). Then, per start:
the launcher's estimate of the launch with the live NVML numbers (`launcher estimate --json`), vLLM started bare at a
share (`--gpu-memory-utilization` of the large GPU giving the share the card's default would, or a larger one that
leaves less room beside it), dummy weights, and, once ready, a load: long prompts that fill the 8192-token prefill
batches, then many short ones decoding together. NVML's used memory is sampled every 0.1 s throughout.

usage: python3 benchmarks/gpu/small_cards.py MODEL_DIR START [START ...]   (MODEL_DIR from make_dummy_model.py)
  START  CARD:SHARE_GIB, e.g. L4:20.57 (the card's default 0.92 x 23034 MiB in vLLM's GiB) or L4:21.30
Results: $OUT/small-cards.jsonl (one object per start), $OUT/logs/. Needs vLLM importable and a GPU.
"""
import asyncio
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time

import pynvml

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, ROOT)
from launcher.estimator.core import cuda_reserved_bytes  # noqa: E402
from launcher.gpu import PRESETS_MIB  # noqa: E402

OUT = os.environ.get("OUT", "/tmp/out")
MiB, GiB = 1 << 20, 1 << 30
pynvml.nvmlInit()
H = pynvml.nvmlDeviceGetHandleByIndex(0)


def nvml_free() -> int:
    return pynvml.nvmlDeviceGetMemoryInfo(H).free


HOLDER = r"""
import sys, time, torch, pynvml
pynvml.nvmlInit(); h = pynvml.nvmlDeviceGetHandleByIndex(0)
target = int(sys.argv[1]); held = []
torch.empty(1, device="cuda")  # the holder's own context first
for step in (1 << 30, 64 << 20, 2 << 20):
    while pynvml.nvmlDeviceGetMemoryInfo(h).free - step >= target:
        held.append(torch.empty(step, dtype=torch.uint8, device="cuda"))
print("held", pynvml.nvmlDeviceGetMemoryInfo(h).free, flush=True)
time.sleep(1e6)
"""


def hold(free_target: int) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", HOLDER, str(free_target)], stdout=subprocess.PIPE, text=True,
                         start_new_session=True)
    line = p.stdout.readline()
    assert line.startswith("held"), line
    return p


class Sampler(threading.Thread):
    def __init__(self):
        super().__init__(daemon=True)
        self.min_free, self.stop = None, False

    def run(self):
        while not self.stop:
            f = nvml_free()
            self.min_free = f if self.min_free is None else min(self.min_free, f)
            time.sleep(0.1)


async def load(port: int) -> dict:
    import httpx

    url = f"http://127.0.0.1:{port}/v1/completions"
    codes: dict = {}
    rnd = random.Random(0)

    async def one(c, n_prompt, n_out):
        body = {"model": "m", "prompt": [rnd.randrange(1000, 100000) for _ in range(n_prompt)], "max_tokens": n_out,
                "ignore_eos": True, "temperature": 0}
        try:
            r = await c.post(url, json=body, timeout=300)
            codes[r.status_code] = codes.get(r.status_code, 0) + 1
        except Exception as e:  # noqa: BLE001
            codes[type(e).__name__] = codes.get(type(e).__name__, 0) + 1

    t = time.time()
    async with httpx.AsyncClient() as c:
        await asyncio.gather(*(one(c, 2000, 32) for _ in range(24)))  # prefill batches of 8192 tokens
        await asyncio.gather(*(one(c, 16, 128) for _ in range(256)))  # a wide decode batch
    return {"codes": codes, "load_s": round(time.time() - t, 1)}


def start(model: str, card: str, share_gib: float, port: int) -> dict:
    total = PRESETS_MIB[card] * MiB
    free_target = total - cuda_reserved_bytes(total)  # an idle card's NVML free, as the launcher models it
    holder = hold(free_target)
    name = f"{card}-{share_gib}"
    rec = {"case": name, "card": card, "card_total_mib": PRESETS_MIB[card], "nvml_free_at_start": nvml_free()}
    try:
        # vLLM's own total (torch.cuda.mem_get_info), which its share is a fraction of
        cuda_total = int(subprocess.run([sys.executable, "-c", "import torch; print(torch.cuda.mem_get_info()[1])"],
                                        capture_output=True, text=True).stdout.strip())
        util = round(share_gib * GiB / cuda_total, 4)
        rec.update(util=util, share_bytes=int(util * cuda_total), cuda_total=cuda_total)
        for what, extra in (("estimate_at_share", ["--gpu-memory-utilization", str(util)]), ("estimate_default", [])):
            e = subprocess.run([sys.executable, "-m", "launcher", "estimate", "--model-path", model, "--max-model-len",
                                "8192", *extra, "--json"], capture_output=True, text=True, cwd=ROOT)
            try:
                d = json.loads(e.stdout)
                rec[what] = {k: d.get(k) for k in ("fits", "cause", "reason", "suggestions", "kv_cache_tokens",
                                                   "outside_budget_bytes", "requested_bytes", "vllm_version")}
            except ValueError:
                rec[what] = {"rc": e.returncode, "stderr": e.stderr[-400:]}
        os.makedirs(f"{OUT}/logs", exist_ok=True)
        log = f"{OUT}/logs/{name}.log"
        cmd = [sys.executable, "-c", "import sys; from vllm.entrypoints.cli.main import main; sys.argv[0]='vllm'; main()",
               "serve", model, "--load-format", "dummy", "--served-model-name", "m",
               "--port", str(port), "--host", "127.0.0.1", "--max-model-len", "8192", "--gpu-memory-utilization", str(util)]
        s = Sampler()
        s.start()
        t0 = time.time()
        with open(log, "w") as fh:
            p = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True,
                                 env=dict(os.environ, VLLM_LOGGING_LEVEL="DEBUG"))
            try:
                while time.time() - t0 < float(os.environ.get("CASE_S", 240)) and p.poll() is None:
                    time.sleep(1)
                    if "Application startup complete" in open(log, errors="replace").read():
                        rec["ready_s"] = round(time.time() - t0, 1)
                        rec["min_free_to_ready"] = s.min_free
                        rec.update(asyncio.run(load(port)))
                        rec["alive_after_load"] = p.poll() is None
                        break
            finally:
                s.stop = True
                rec["min_free_overall"] = s.min_free
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                    p.wait(30)
                except Exception:  # noqa: BLE001
                    os.killpg(p.pid, signal.SIGKILL)
        text = open(log, errors="replace").read()
        for k, pat in {"kv_tokens": r"GPU KV cache size: ([\d,]+) tokens", "kv_gib": r"Available KV cache memory: ([\d.]+) GiB",
                       "graph_took_gib": r"Graph capturing finished in \d+ secs, took ([\d.]+) GiB",
                       "init_free": r"Initial free memory: ([\d.]+) GiB",
                       "profile": r"Total non KV cache memory: ([\d.]+)GiB; torch peak memory increase: ([\d.]+)GiB; "
                                  r"non-torch forward increase memory: ([\d.]+)GiB; weights memory: ([\d.]+)GiB",
                       "oom": r"(CUDA out of memory[^\n]{0,200}|OutOfMemoryError[^\n]{0,200})"}.items():
            m = re.search(pat, text)
            if m:
                rec[k] = m.groups() if len(m.groups()) > 1 else m.group(1)
        rec["ready"] = "ready_s" in rec
        # beyond the share at the fullest moment: what the holder left free at start, less the least free seen, less the share
        if rec.get("min_free_overall") is not None:
            rec["beyond_share_peak_bytes"] = rec["nvml_free_at_start"] - rec["min_free_overall"] - rec["share_bytes"]
    finally:
        os.killpg(holder.pid, signal.SIGKILL)
        holder.wait()
        for _ in range(60):
            if nvml_free() > pynvml.nvmlDeviceGetMemoryInfo(H).total - 2 * GiB:
                break
            time.sleep(1)
    print(json.dumps(rec), flush=True)
    with open(f"{OUT}/small-cards.jsonl", "a") as fh:
        fh.write(json.dumps(rec) + "\n")
    return rec


if __name__ == "__main__":
    model, *starts = sys.argv[1:]
    for i, s in enumerate(starts):
        card, share = s.split(":")
        start(model, card, float(share), 18100 + i)
    print("ALL DONE", flush=True)

"""Pipeline parallel 2 across two local Ray nodes (one GPU each) on a 2-GPU host, with the real vLLM:

  cluster up -> estimate on the live cluster -> launch (detached) -> READY -> chat -> vLLM's KV cache vs the
  estimate -> SIGKILL every process of the worker node -> server stopped, back-off waiting for the cluster
  -> `cluster up` repairs the node -> READY again -> chat -> stop (Ray leftovers checked) -> cluster down
  -> GPU memory and leftover processes.

Fast Ray health checks (500 ms x 3), as in the second column of docs/cluster.md's CPU drill.
usage (vLLM and Ray staged under /root/site, see docs/gpu.md): python3 benchmarks/gpu/ray_pp2_drill.py
Writes $OUT/ray-pp2.json (every step with its time) and the server and supervisor logs.
"""
import gzip
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path[:0] = [ROOT, "/root/site"]
OUT = os.environ.get("OUT", "/tmp/out")
HOME = "/root/lh-ray"
M = "/root/models/llama31_8b"
NAME = "raypp"
os.environ.update({
    "PYTHONPATH": f"/root/site:{ROOT}", "PATH": "/root/site/bin:" + os.environ["PATH"], "LAUNCHER_HOME": HOME,
    "VLLM_USE_FLASHINFER_SAMPLER": "0", "PYTHONUNBUFFERED": "1", "VLLM_ALLREDUCE_USE_SYMM_MEM": "0",
    "NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1",
    "RAY_health_check_period_ms": "500", "RAY_health_check_failure_threshold": "3",
    "RAY_health_check_initial_delay_ms": "0", "RAY_health_check_timeout_ms": "500"})
steps: list[dict] = []
T0 = time.monotonic()


def step(what: str, **kw) -> dict:
    row = {"t_s": round(time.monotonic() - T0, 2), "step": what, **kw}
    steps.append(row)
    print(json.dumps(row)[:600], flush=True)
    return row


def cli(*args, timeout=600):
    t = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "launcher", *args], capture_output=True, text=True, cwd=ROOT,
                       timeout=timeout)
    return r, round(time.monotonic() - t, 2)


def state() -> dict:
    try:
        with open(f"{HOME}/runs/{NAME}/state.json") as fh:
            return json.load(fh)
    except (OSError, json.JSONDecodeError):
        return {}


def until(pred, timeout_s: float, what: str) -> float | None:
    t = time.monotonic()
    last = None
    while time.monotonic() - t < timeout_s:
        st = state()
        key = (st.get("state"), st.get("reason"), st.get("restarts"))
        if key != last:
            step("state", state=key[0], reason=key[1], restarts=key[2])
            last = key
        if pred(st):
            return round(time.monotonic() - t, 2)
        time.sleep(0.2)
    step("timeout", what=what)
    return None


def chat(port: int) -> dict:
    body = json.dumps({"model": M, "messages": [{"role": "user", "content": "Hello there"}], "max_tokens": 16}).encode()
    t = time.monotonic()
    r = urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", data=body,
                                                      headers={"content-type": "application/json"}), timeout=120)
    d = json.loads(r.read())
    return {"status": r.status, "usage": d["usage"], "s": round(time.monotonic() - t, 2)}


def gpus() -> str:
    return subprocess.run(["nvidia-smi", "--query-gpu=index,memory.used", "--format=csv,noheader"], capture_output=True,
                          text=True).stdout.strip()


def main():
    os.makedirs(OUT, exist_ok=True)
    if not os.path.isdir(M):
        subprocess.run([sys.executable, f"{ROOT}/benchmarks/gpu/make_dummy_model.py", "llama-3.1-instruct", "8", M],
                       check=True, capture_output=True)
    step("gpus", used=gpus())
    up = ["cluster", "up", "--local-nodes", "2", "--gpus-per-node", "1", "--json"]
    r, s = cli(*up)
    step("cluster up", rc=r.returncode, s=s, err=r.stderr[-500:])
    r, s = cli("cluster", "status", "--json")
    step("cluster status", rc=r.returncode, s=s, out=r.stdout[-1500:])
    flags = ["--model-path", M, "--ray-address", "auto", "--pipeline-parallel-size", "2", "--max-model-len", "8192"]
    r, s = cli("estimate", *flags, "--json")
    est = json.loads(r.stdout) if r.returncode in (0, 3) and r.stdout.strip() else {}
    step("estimate", rc=r.returncode, s=s, kv_cache_tokens=est.get("kv_cache_tokens"), fits=est.get("fits"),
         err=r.stderr[-500:])
    r, s = cli("launch", *flags, "--load-format", "dummy", "--detach", "--name", NAME, "--startup-timeout", "420",
               timeout=480)
    step("launch to READY", rc=r.returncode, s=s, err=r.stderr[-800:])
    st = state()
    try:
        if r.returncode == 0:
            port = st["port"]
            step("chat", **chat(port))
            log = open(f"{HOME}/runs/{NAME}/server.log", errors="replace").read()
            from launcher.engines.vllm import parse_log_facts
            facts = parse_log_facts(log)
            step("vllm kv", kv_tokens=facts.get("kv_tokens"), kv_avail_gib=facts.get("kv_avail_gib"),
                 weights_gib=facts.get("weights_gib"))
            r2, s = cli("status", NAME, "--json")
            step("status", s=s, out=r2.stdout[-2000:])
            step("gpus", used=gpus())
            from launcher.cluster import control
            t_kill = time.monotonic()
            control.kill_node("local", "worker1")
            step("worker1 SIGKILLed")
            a = until(lambda st: st.get("state") == "BACKOFF", 120, "BACKOFF")
            b = until(lambda st: "waiting for the Ray cluster" in (st.get("reason") or ""), 120, "waiting")
            step("after kill", to_backoff_s=a, to_waiting_s=round(time.monotonic() - t_kill, 2) if b is not None else None)
            r, s = cli(*up)
            step("repair: cluster up", rc=r.returncode, s=s, err=r.stderr[-300:])
            t = time.monotonic()
            c = until(lambda st: st.get("state") == "READY" and (st.get("restarts") or 0) >= 1, 420, "READY again")
            step("back to READY", s=c, since_kill_s=round(time.monotonic() - t_kill, 2), since_repair_s=round(time.monotonic() - t, 2))
            if c is not None:
                step("chat again", **chat(state()["port"]))
    finally:
        r, s = cli("stop", NAME, timeout=180)
        st = state()
        step("stop", rc=r.returncode, s=s, state=st.get("state"), ray_leftovers=st.get("ray_leftovers"))
        r, s = cli("cluster", "down", timeout=180)
        step("cluster down", rc=r.returncode, s=s, err=r.stderr[-300:])
        time.sleep(2)
        step("gpus after", used=gpus())
        ps = subprocess.run(["ps", "-eo", "pid,cmd"], capture_output=True, text=True).stdout.splitlines()
        left = [p[:150] for p in ps if any(k in p for k in ("VLLM::", "api_server", "_supervise", "raylet", "gcs_server"))
                and "grep" not in p]
        step("leftover processes", left=left)
        with open(f"{OUT}/ray-pp2.json", "w") as fh:
            json.dump(steps, fh, indent=1)
        for f in ("server.log", "supervisor.log"):
            p = f"{HOME}/runs/{NAME}/{f}"
            if os.path.exists(p):
                with open(p, "rb") as src, gzip.open(f"{OUT}/ray-pp2-{f}.gz", "wb") as dst:
                    shutil.copyfileobj(src, dst)


if __name__ == "__main__":
    main()

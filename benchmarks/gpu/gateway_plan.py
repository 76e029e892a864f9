"""Two 8B models on one GPU placed by the plan: `launcher plan` first, then `launcher serve` following it (each model
on its planned GPU with its planned share), both awake together, both answering 32k prompts at once, nothing out of
memory; Ctrl-C (SIGINT) then leaves no process and no GPU memory.

usage (GPU host, vLLM staged under /root/site): python3 benchmarks/gpu/gateway_plan.py OUT_DIR
RAY=1 (Ray staged there too, `ray` on PATH): the same through a one-node Ray cluster started here with the host's GPU
(`launcher plan --ray-address` and `launcher serve --ray-address`: each model on the node's GPU as its dashboard agent
reports it, started there by the gateway's actor; `ray stop` at the end).
Results: OUT_DIR/gateway-plan.json (the plan, each step, the gateway's status, each launch's share and KV cache),
the gateway's log and each model's server log.
"""
from __future__ import annotations

import concurrent.futures as cf
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PORT = 18300


def nvml() -> dict:
    q = lambda what: subprocess.run(["nvidia-smi", f"--query-{what}", "--format=csv,noheader,nounits"],  # noqa: E731
                                    capture_output=True, text=True, timeout=20).stdout.strip()
    used = q("gpu=memory.used,memory.total").splitlines()
    return {"gpus_used_total_mib": used, "apps": q("compute-apps=pid,used_memory").splitlines()}


def ask(model: str, tokens: int, timeout: float = 900) -> dict:
    body = json.dumps({"model": model, "prompt": list(range(1000, 1000 + tokens)), "max_tokens": 16,
                       "ignore_eos": True}).encode()
    t = time.time()
    try:
        r = urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{PORT}/v1/completions", data=body,
                                                          headers={"content-type": "application/json"}), timeout=timeout)
        d = json.loads(r.read())
        return {"model": model, "status": r.status, "s": round(time.time() - t, 2), "usage": d.get("usage")}
    except urllib.error.HTTPError as e:
        return {"model": model, "status": e.code, "s": round(time.time() - t, 2), "body": e.read().decode()[:400]}
    except Exception as e:  # noqa: BLE001
        return {"model": model, "status": type(e).__name__, "s": round(time.time() - t, 2), "body": str(e)[:400]}


def get(path: str) -> dict:
    return json.loads(urllib.request.urlopen(f"http://127.0.0.1:{PORT}{path}", timeout=30).read())


RAY_PORT, DASH_PORT = 6379, 8265  # below the range of ports Ray gives its workers (10002-19999)


def ray_head(env: dict) -> list[str]:
    """A one-node Ray cluster with this host's GPUs; the flags that serve and plan across it."""
    subprocess.run(["ray", "start", "--head", f"--port={RAY_PORT}", f"--dashboard-port={DASH_PORT}",
                    "--include-dashboard=true", "--disable-usage-stats", "--num-gpus=1"], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    return ["--ray-address", f"127.0.0.1:{RAY_PORT}", "--ray-dashboard", f"http://127.0.0.1:{DASH_PORT}"]


def main(out: str) -> None:
    os.makedirs(out, exist_ok=True)
    home = os.path.join(out, "home")
    env = dict(os.environ, LAUNCHER_HOME=home, PYTHONUNBUFFERED="1")
    ray = ray_head(env) if os.environ.get("RAY") else []
    runs = os.path.join(home, "ray-nodes", "runs") if ray else os.path.join(home, "runs")
    paths = {}
    for name, (family, size) in (("a", ("llama-3.1-instruct", "8")), ("b", ("qwen3", "8"))):
        paths[name] = f"/root/models/plan_{name}"
        if not os.path.isdir(paths[name]):
            subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "gpu", "make_dummy_model.py"), family, size,
                            paths[name]], check=True, stdout=subprocess.DEVNULL)
    models = os.path.join(out, "two-8b.json")
    json.dump({"models": [{"name": n, "model_path": p, "engine_args": {"max-model-len": 32768, "load-format": "dummy"}}
                          for n, p in paths.items()]}, open(models, "w"), indent=1)
    rec: dict = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "nvml_before": nvml()}
    t = time.time()
    p = subprocess.run([sys.executable, "-m", "launcher", "plan", "--models", models, "--json", *ray], capture_output=True,
                       text=True, env=env, cwd=ROOT)
    rec["plan_s"], rec["plan"] = round(time.time() - t, 2), json.loads(p.stdout) if p.stdout else p.stderr[-800:]
    log = open(os.path.join(out, "gateway.log"), "w")
    gw = subprocess.Popen([sys.executable, "-m", "launcher", "serve", "--models", models, "--port", str(PORT), *ray],
                          stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT, start_new_session=True)
    try:
        for _ in range(180):
            try:
                get("/v1/models")
                break
            except Exception:  # noqa: BLE001
                time.sleep(1)
        steps = []
        with cf.ThreadPoolExecutor(8) as pool:  # both started by their first requests, then 32k prompts at once
            steps.append({"step": "first requests, both at once", "answers": list(pool.map(lambda m: ask(m, 16), "ab"))})
            steps.append({"step": "32k prompts, both at once", "nvml": nvml(),
                          "answers": list(pool.map(lambda m: ask(m, 32000), "aabb"))})
        rec["steps"] = steps
        rec["status"] = get("/gateway/status")
        rec["nvml_serving"] = nvml()
        rec["ps"] = subprocess.run([sys.executable, "-m", "launcher", "ps", "--json"], capture_output=True, text=True,
                                   env=env, cwd=ROOT).stdout
        rec["launches"] = {}
        for n in "ab":
            lj = os.path.join(runs, n, "launch.json")
            d = json.load(open(lj)) if os.path.exists(lj) else {}
            logs = [os.path.join(runs, n, f) for f in os.listdir(os.path.join(runs, n))
                    if f.endswith(".log")] if os.path.isdir(os.path.join(runs, n)) else []
            text = "".join(open(f, errors="replace").read() for f in logs)
            m = re.findall(r"GPU KV cache size: ([\d,]+) tokens", text)
            job = os.path.join(home, "ray-nodes", "jobs", f"{n}.json")
            if ray and os.path.exists(job):  # the server's command line and the variables the node got (no key)
                j = json.load(open(job))
                d = {"argv": j.get("argv"), "launcher_env": {k: v for k, v in j.get("env", {}).items()
                                                             if k.startswith(("CUDA_", "VLLM_")) and "KEY" not in k}}
            rec["launches"][n] = {"argv": d.get("argv"), "launcher_env": d.get("launcher_env"),
                                  "gpus": (d.get("spec") or {}).get("gpus"),
                                  "budget": (d.get("spec") or {}).get("gpu_memory_budget"),
                                  "estimate_kv_tokens": (d.get("estimate") or {}).get("kv_cache_tokens"),
                "vllm_kv_tokens": m[-1] if m else None, "oom": "out of memory" in text.lower()}
    finally:
        t = time.time()
        gw.send_signal(signal.SIGINT)
        try:
            gw.wait(180)
        except subprocess.TimeoutExpired:
            os.killpg(gw.pid, signal.SIGKILL)
        rec["ctrl_c_s"], rec["gateway_rc"] = round(time.time() - t, 1), gw.returncode
        time.sleep(3)
        rec["nvml_after"] = nvml()
        if ray:
            rec["ray_actors_left"] = subprocess.run(["ray", "list", "actors", "--address", f"127.0.0.1:{DASH_PORT}",
                                                     "--filter", "state=ALIVE"], capture_output=True, text=True,
                                                    env=env).stdout[-1500:]
            subprocess.run(["ray", "stop", "--force"], env=env, capture_output=True)
        rec["left"] = subprocess.run(["pgrep", "-af", "vllm|EngineCore|raylet|gcs_server"], capture_output=True,
                                     text=True).stdout
        json.dump(rec, open(os.path.join(out, "gateway-plan.json"), "w"), indent=1)
        print(json.dumps(rec)[:6000], flush=True)


if __name__ == "__main__":
    main(sys.argv[1])

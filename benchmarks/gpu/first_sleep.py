"""How long vLLM's sleep (level 1) and wake take, first and later, on one model: the first sleep allocates the pinned
host memory its weights go to (device_allocator/cumem.py CuMemAllocator.sleep: torch.empty(pin_memory=True) per
allocation), later ones reuse what torch's pinned-memory cache kept when the wake freed it.

usage: python3 benchmarks/gpu/first_sleep.py MODEL_DIR   (MODEL_DIR from make_dummy_model.py)
Results: $OUT/first-sleep.json, $OUT/logs/first-sleep.log. Needs vLLM importable and a GPU.
"""
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

OUT = os.environ.get("OUT", "/tmp/out")
PORT = 18200


def post(path: str) -> float:
    t = time.time()
    urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{PORT}{path}", data=b"", method="POST"), timeout=300).read()
    return round(time.time() - t, 2)


def host_available() -> int:
    for line in open("/proc/meminfo"):
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def main(model: str) -> None:
    os.makedirs(f"{OUT}/logs", exist_ok=True)
    log = f"{OUT}/logs/first-sleep.log"
    cmd = [sys.executable, "-c", "import sys; from vllm.entrypoints.cli.main import main; sys.argv[0]='vllm'; main()",
           "serve", model, "--load-format", "dummy", "--served-model-name", "m", "--port", str(PORT), "--host",
           "127.0.0.1", "--max-model-len", "8192", "--enable-sleep-mode"]
    rec: dict = {"model": model}
    t0 = time.time()
    with open(log, "w") as fh:
        p = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True,
                             env=dict(os.environ, VLLM_SERVER_DEV_MODE="1"))
        try:
            while time.time() - t0 < 240 and p.poll() is None:
                time.sleep(1)
                if "Application startup complete" in open(log, errors="replace").read():
                    break
            rec["ready_s"] = round(time.time() - t0, 1)
            steps = []
            for i in range(3):
                before = host_available()
                s = post("/sleep?level=1")
                asleep = host_available()
                w = post("/wake_up")
                steps.append({"sleep_s": s, "wake_s": w, "host_taken_asleep_bytes": before - asleep,
                              "host_kept_awake_bytes": before - host_available()})
            rec["cycles"] = steps
        finally:
            os.killpg(p.pid, signal.SIGTERM)
            p.wait(60)
    print(json.dumps(rec), flush=True)
    json.dump(rec, open(f"{OUT}/first-sleep.json", "w"), indent=1)


if __name__ == "__main__":
    main(sys.argv[1])

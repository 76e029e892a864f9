"""A scriptable stand-in for the vLLM server (tests only).

python fake_server.py --port P --mode MODE [--delay S]
modes: ok, bind_late, crash_at_start, crash_after_ready, never_healthy, 503_after_ready, hang_health,
       ignore_sigterm, grandchild, escape_grandchild,
       ray: a Ray driver like vLLM's Ray executor: joins $RAY_ADDRESS, reserves a placement group of
            --bundles {--device: 1} bundles (PACK), puts one worker actor on each, and dies when a
            worker does (as vLLM does when a Ray worker is lost)
Writes its PID (and children's) to $FAKE_PIDS_FILE when given. With VLLM_API_KEY set, /v1/ answers 401 to a
request without `Authorization: Bearer KEY`, as vLLM does.
"""
import argparse
import http.server
import os
import signal
import subprocess
import sys
import threading
import time

ap = argparse.ArgumentParser()
ap.add_argument("--port", type=int, required=True)
ap.add_argument("--host", default="127.0.0.1")
ap.add_argument("--mode", default="ok")
ap.add_argument("--delay", type=float, default=0.5)
ap.add_argument("--bundles", type=int, default=2)
ap.add_argument("--device", default="CPU")
a = ap.parse_args()
start = time.monotonic()
pids_file = os.environ.get("FAKE_PIDS_FILE")


def note(pid):
    if pids_file:
        with open(pids_file, "a") as fh:
            fh.write(f"{pid}\n")


note(os.getpid())
print(f"fake server pid {os.getpid()} mode {a.mode}", flush=True)

if a.mode == "crash_at_start":
    time.sleep(a.delay)
    print("ValueError: fake configuration error for the test", flush=True)
    sys.exit(1)
if a.mode == "oom_at_start":
    time.sleep(a.delay)
    print("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 GiB", flush=True)
    sys.exit(1)
if a.mode == "ignore_sigterm":
    signal.signal(signal.SIGTERM, lambda *_: print("ignoring SIGTERM", flush=True))
if a.mode == "grandchild":
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    note(p.pid)
if a.mode == "escape_grandchild":
    # a grandchild that leaves the process group and is re-parented away (double fork + setsid)
    r, w = os.pipe()
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            os.write(w, f"{os.getpid()}\n".encode())
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            time.sleep(600)
            os._exit(0)
        os._exit(0)
    pid = int(os.read(r, 64).decode().strip())
    note(pid)
    print(f"escaped grandchild {pid}", flush=True)
if a.mode == "ray":
    import ray
    from ray.util.placement_group import placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=False, logging_level="ERROR")
    pg = placement_group([{a.device: 1.0}] * a.bundles, strategy="PACK")
    ray.get(pg.ready(), timeout=60)

    @ray.remote
    class Worker:
        def ping(self):
            return os.getpid()

    opts = {"num_cpus": 1} if a.device == "CPU" else {"num_cpus": 0, "num_gpus": 1}
    workers = [Worker.options(scheduling_strategy=PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=i),
                              **opts).remote() for i in range(a.bundles)]
    for pid in ray.get([w.ping.remote() for w in workers], timeout=60):
        print(f"ray worker pid {pid}", flush=True)

    def watch_workers():
        while True:
            time.sleep(0.5)
            try:
                ray.get([w.ping.remote() for w in workers], timeout=10)
            except Exception as e:  # noqa: BLE001 - any lost worker ends the server, as in vLLM
                print(f"RuntimeError: a Ray worker died: {type(e).__name__}", flush=True)
                os._exit(1)

    threading.Thread(target=watch_workers, daemon=True).start()


class H(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        el = time.monotonic() - start
        if self.path == "/health":
            if a.mode == "never_healthy":
                return self._send(503)
            if a.mode == "hang_health" and el > a.delay:
                time.sleep(3600)
            if a.mode == "503_after_ready" and el > a.delay:
                return self._send(503)
            return self._send(200)
        if self.path.startswith("/v1/") and os.environ.get("VLLM_API_KEY") and \
                self.headers.get("Authorization") != f"Bearer {os.environ['VLLM_API_KEY']}":
            return self._send(401, b'{"error": "Unauthorized"}')  # as vLLM's --api-key / VLLM_API_KEY guard /v1
        if self.path == "/v1/models":
            return self._send(200, b'{"data": [{"id": "fake"}]}')
        self._send(404)

    def _send(self, code, body=b"{}"):
        self.send_response(code)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


if a.mode == "bind_late":  # loads for a while before it binds its port, as vLLM does
    time.sleep(a.delay)
srv = http.server.ThreadingHTTPServer((a.host, a.port), H)
srv.daemon_threads = True
print("Application startup complete.", flush=True)
if a.mode == "crash_after_ready":
    def die():
        time.sleep(a.delay)
        print("RuntimeError: fake crash after ready", flush=True)
        os._exit(3)
    threading.Thread(target=die, daemon=True).start()
try:
    srv.serve_forever()
except KeyboardInterrupt:
    pass

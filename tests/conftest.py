import sys
import time
from pathlib import Path

import pytest

import os
import shutil
import subprocess

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "examples" / "tiny-llama"
FAKE = str(Path(__file__).with_name("fake_server.py"))
if shutil.which("nvidia-smi") is None:
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # the CPU build's KV cache for the tiny model


# vLLM started without its torch.compile warm-up and with its worker inside the engine-core process: 35 s to READY
# instead of 65 s for the tiny model on the 2-core reference machine (2026-12-05). vLLM's default start (compiled,
# a worker process of its own) is what `make demo` and
# test_vllm_real.py::test_smoke_from_a_triton_model_json_passes_and_writes_reports run.
QUICK_VLLM = ("--enforce-eager", "--distributed-executor-backend", "uni")


def cli(*args, env=None, timeout=600):
    """The real entry point in a subprocess: exit codes and one-line errors as users see them."""
    return subprocess.run([sys.executable, "-m", "launcher", *args], capture_output=True, text=True, timeout=timeout,
                          env=env if env is not None else os.environ.copy(), cwd=str(ROOT))


# The real vLLM starts (tests/*_real.py) in two groups that may run at the same time, one per worker: the second
# group's launches try a port of their own first (LAUNCHER_PORT), so that neither takes the other's 8000.
REAL_GROUP_B = ("tests/test_bench_real.py", "tests/test_what_users_launch_real.py", "tests/test_gateway_real.py")


def _real_group(nodeid: str) -> str | None:
    path = nodeid.split("::", 1)[0]
    if not path.endswith("_real.py"):
        return None
    return "real-b" if path in REAL_GROUP_B else "real-a"


def pytest_report_header(config):
    """First in every run's log: the host CPU and the flags that decide which of vLLM's CPU kernels ran (AMX tiles,
    AVX-512 BF16), so that a CI log shows which paths the real-engine tests took."""
    from launcher import hostcpu

    return f"host CPU: {hostcpu.summary()}"


def pytest_collection_modifyitems(config, items):
    """A test that starts the real vLLM engine (marked `vllm`) lives in a tests/*_real.py file, so that `make test`
    runs it in its group (pytest_xdist_make_scheduler below)."""
    stray = [i.nodeid for i in items if i.get_closest_marker("vllm") and _real_group(i.nodeid) is None]
    if stray:
        raise pytest.UsageError(f"tests marked vllm outside a *_real.py file (they would run beside another start): {stray}")
    items.sort(key=lambda i: _real_group(i.nodeid) is None)  # the long groups are handed out first


def pytest_xdist_make_scheduler(config, log):
    """`make test` (-n 2): the real vLLM starts in two groups, each one start after another on one worker; the Ray
    cluster's tests as a group too; every other test on its own, beside them. (pytest-xdist's own --dist loadgroup
    does not group under pytest 9: it renames the node id it relies on.)"""
    from xdist.scheduler import LoadScopeScheduling

    class RealStartsInGroups(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            if nodeid.split("::", 1)[0].endswith("test_cluster_ray.py"):
                return "ray"
            return _real_group(nodeid) or nodeid

    return RealStartsInGroups(config, log)


@pytest.fixture(autouse=True)
def _own_default_port(request, monkeypatch):
    """The second group of real starts tries a port of its own first (launching.default_port)."""
    if _real_group(request.node.nodeid) == "real-b":
        from launcher import health

        monkeypatch.setenv("LAUNCHER_PORT", str(health.find_free_port()))


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("launcher-cache")


@pytest.fixture(autouse=True)
def launcher_home(tmp_path, monkeypatch, shared_cache):
    monkeypatch.setenv("LAUNCHER_CACHE", str(shared_cache))
    home = tmp_path / "home"
    monkeypatch.setenv("LAUNCHER_HOME", str(home))
    return home


def wait_for(pred, timeout_s: float, poll_s: float = 0.05, what: str = "condition"):
    """Poll pred() until it is truthy or the deadline passes (no fixed sleeps in tests)."""
    deadline = time.monotonic() + timeout_s
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(poll_s)


def fake_argv(port: int, mode: str, delay: float = 0.5) -> list[str]:
    return [sys.executable, FAKE, "--port", str(port), "--mode", mode, "--delay", str(delay)]


def vllm_processes_here() -> list[int]:
    """vLLM processes (API servers, engine cores) started under this test's LAUNCHER_HOME: a real start of another
    test may run beside it."""
    import psutil

    out = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if "vllm.entrypoints" in cmd or "VLLM::" in cmd:
            try:
                if p.environ().get("LAUNCHER_HOME") == os.environ.get("LAUNCHER_HOME"):
                    out.append(p.pid)
            except psutil.Error:
                pass
    return out


def run_processes(run_id: str) -> list[int]:
    """PIDs of the processes tagged with a launch's run id (LAUNCHER_RUN_ID in their environment)."""
    import psutil

    out = []
    for p in psutil.process_iter():
        try:
            if p.environ().get("LAUNCHER_RUN_ID") == run_id:
                out.append(p.pid)
        except psutil.Error:
            pass
    return out


class GatewayProc:
    """`python -m launcher serve --models FILE` as a user runs it, with its own port and LAUNCHER_HOME, and the
    further flags (serve_args) and environment (env) a test gives it; kill() of its proc is kill -9."""

    def __init__(self, home, models_file, port, *serve_args, env=None, up_s=60):
        self.home, self.models_file, self.port = home, models_file, port
        self.serve_args, self.env, self.up_s = serve_args, env or {}, up_s
        self.url = f"http://127.0.0.1:{port}"
        self.proc = None

    def start(self):
        env = {**os.environ, "LAUNCHER_HOME": str(self.home), "PYTHONUNBUFFERED": "1", **self.env}
        self.log = open(self.home / f"gateway-{time.time():.0f}.log", "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "launcher", "serve", "--models", str(self.models_file),
                                      "--port", str(self.port), *self.serve_args],
                                     stdout=self.log, stderr=subprocess.STDOUT, env=env, cwd=str(ROOT))
        wait_for(self._up, self.up_s, 0.2, "the gateway to listen")
        return self

    def _up(self):
        import urllib.request

        assert self.proc.poll() is None, open(self.log.name).read()
        try:
            return urllib.request.urlopen(self.url + "/health", timeout=1).status == 200
        except OSError:
            return False

    def status(self):
        import json
        import urllib.request

        return {m["name"]: m for m in json.loads(urllib.request.urlopen(self.url + "/gateway/status").read())["models"]}

    def metric(self, name, **labels):
        import urllib.request

        text = urllib.request.urlopen(self.url + "/metrics").read().decode()
        want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        for line in text.splitlines():
            if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
                return float(line.rsplit(" ", 1)[1])
        return 0.0 if want else None

    def client(self, timeout=600, **kw):
        from openai import OpenAI

        return OpenAI(base_url=self.url + "/v1", api_key="unused", max_retries=0, timeout=timeout, **kw)


def ray_dashboard_stub(nodes: list[dict], summary: list[dict], actors: list[dict] | None = None):
    """A stand-in for Ray's dashboard answering its routes in their shapes (/api/v0/nodes, /nodes?view=summary,
    /api/v0/actors); the running server (its port: server_address[1]; srv.shutdown() when done)."""
    import http.server
    import json
    import threading

    routes = {"/api/v0/nodes": {"result": True, "data": {"result": {"result": nodes}}},
              "/nodes": {"result": True, "data": {"summary": summary}},
              "/api/v0/actors": {"result": True, "data": {"result": {"result": actors or []}}}}

    class H(http.server.BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_GET(self):
            body = json.dumps(routes[self.path.split("?")[0]]).encode()
            self.send_response(200)
            self.end_headers()
            self.wfile.write(body)

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv

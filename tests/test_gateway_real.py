"""`launcher serve` for real: the gateway in its own process, the real vLLM engine (CPU build) behind it, the real
`openai` client in front. Two models (the tiny model under two names, its LoRA adapter routed to the first) and a
budget that holds one of them at a time. The tests run in order on one gateway (each start costs ~40 s here)."""
import json
import os
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request

import pytest

from conftest import QUICK_VLLM, ROOT, TINY, GatewayProc, wait_for

pytestmark = pytest.mark.vllm
ADAPTER = ROOT / "examples" / "tiny-llama-lora"
QUICK = {"enforce-eager": True, "distributed-executor-backend": "uni"}
assert set(QUICK) == {a.lstrip("-") for a in QUICK_VLLM if a.startswith("--")}
BUDGET = "1.5GiB"  # each model is planned at 1 GiB of KV cache plus its weights: one at a time


SERVE_ARGS = ("--memory-budget", BUDGET, "--queue-timeout", "300", "--retry-failed-after", "5")


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    import yaml

    from launcher import health

    home = tmp_path_factory.mktemp("gateway-home")
    env = {"VLLM_CPU_KVCACHE_SPACE": "1"}
    models = {"models": [
        {"name": "tiny-a", "model_path": str(TINY), "aliases": ["tiny-alias"], "env": env,
         "engine_args": {"max-model-len": 1024, **QUICK, "enable-lora": True, "max-lora-rank": 8,
                         "lora-modules": [f"tinylora={ADAPTER}"]}},
        {"name": "tiny-b", "model_path": str(TINY), "env": env, "engine_args": {"max-model-len": 1024, **QUICK}}]}
    path = home / "models.yaml"
    path.write_text(yaml.safe_dump(models))
    gw = GatewayProc(home, path, health.find_free_port(), *SERVE_ARGS).start()
    yield gw
    if gw.proc.poll() is None:
        gw.proc.send_signal(signal.SIGINT)  # a clean stop stops every model
        gw.proc.wait(120)
    from conftest import vllm_processes_here

    saved = os.environ.get("LAUNCHER_HOME")
    os.environ["LAUNCHER_HOME"] = str(home)  # the models' processes carry the gateway's home
    try:
        left = vllm_processes_here()
    finally:
        if saved is None:
            os.environ.pop("LAUNCHER_HOME", None)
        else:
            os.environ["LAUNCHER_HOME"] = saved
    for p in left:
        try:
            os.kill(p, signal.SIGKILL)
        except OSError:
            pass
    assert not left, f"vLLM processes left after the gateway stopped: {left}"


def _complete(client, model, prompt="Hello", **kw):
    r = client.completions.create(model=model, prompt=prompt, max_tokens=8, temperature=0, **kw)
    return r.choices[0].text


def test_twenty_concurrent_requests_during_the_first_start_are_all_answered(gateway):
    client = gateway.client()
    assert {m.id: m.model_extra["state"] for m in client.models.list().data}["tiny-a"] == "stopped"
    out, errors = [], []

    def one(i):
        try:
            out.append(_complete(client, "tiny-a", f"Hello {i}"))
        except Exception as e:  # noqa: BLE001 - collected and shown
            errors.append(repr(e))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    wait_for(lambda: gateway.status()["tiny-a"]["state"] == "starting", 60, 0.1, "tiny-a starting")
    assert gateway.metric("launcher_gateway_queue_depth", model="tiny-a") > 0  # they wait in the queue
    for t in threads:
        t.join(600)
    assert not errors and len(out) == 20, errors[:3]
    assert gateway.metric("launcher_gateway_starts_total", model="tiny-a") == 1  # one start for all of them


def test_aliases_and_the_lora_adapter_route_to_their_base_launch(gateway):
    client = gateway.client()
    base, alias, adapted = (_complete(client, m) for m in ("tiny-a", "tiny-alias", "tinylora"))
    assert base == alias  # the same server under another name
    assert adapted != base  # the adapter's weights answer (tests/test_what_users_launch_real.py: it differs)
    assert gateway.metric("launcher_gateway_starts_total", model="tiny-a") == 1 and gateway.status()["tiny-b"]["state"] == "stopped"
    models = {m.id: m.model_extra for m in client.models.list().data}
    assert models["tinylora"]["root"] == "tiny-a" and models["tiny-a"]["state"] == "running"


def test_unknown_model_is_a_404_in_openai_format_naming_the_known_ones(gateway):
    import openai

    with pytest.raises(openai.NotFoundError) as e:
        _complete(gateway.client(), "no-such-model")
    body = e.value.body
    assert body["code"] == "model_not_found" and "tiny-a" in body["message"] and "tinylora" in body["message"]


def _direct(gateway, monkeypatch, name):
    """A client straight to the model's own server, with the key only the gateway holds (read as the gateway reads
    it, from its secret under LAUNCHER_HOME)."""
    from openai import OpenAI

    from launcher.gateway.model import backend_key

    monkeypatch.setenv("LAUNCHER_HOME", str(gateway.home))
    if gateway.status()[name]["port"] is None:  # not started by an earlier test (this one run alone): one request does
        gateway.client().completions.create(model=name, prompt="Once", max_tokens=1)
    port = gateway.status()[name]["port"]
    return OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=backend_key(name), max_retries=0), port


def test_streaming_through_the_gateway_equals_streaming_direct(gateway, monkeypatch):
    direct, port = _direct(gateway, monkeypatch, "tiny-a")

    def chunks(client):
        s = client.chat.completions.create(model="tiny-a", messages=[{"role": "user", "content": "Tell me"}],
                                           max_tokens=24, temperature=0, stream=True)
        return [c.choices[0].delta.content for c in s if c.choices]

    via, straight = chunks(gateway.client()), chunks(direct)
    # streamed, not buffered whole, and the same answer; where one delta ends is vLLM's timing, not the gateway's
    # (under load its API server sends several tokens in one delta, direct or not: seen in a full `make test`)
    assert len(via) > 5 and "".join(filter(None, via)) == "".join(filter(None, straight))
    # the model's own server refuses a client without the gateway's key for it: no way around the gateway
    import openai
    from openai import OpenAI

    with pytest.raises(openai.AuthenticationError):
        OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="guess", max_retries=0).models.list()


def test_a_client_that_disconnects_cancels_the_request_upstream(gateway, monkeypatch):
    """A client asks for 256 completions of 1000 tokens each (ignore_eos), reads three chunks and goes away: vLLM never
    counts a sequence of it finished by its length (`vllm:request_success_total{finished_reason="length"}`; vLLM 0.32
    counts no abort there), and its own count of generated tokens stops far short of 256,000. Many sequences, not one:
    on a fast host (AMX tiles) the tiny model writes 1000 tokens of one sequence in about the time a close takes to
    arrive, and under the whole suite's load (another engine beside this one on 2 cores) 16 and then 64 each once all
    finished before the close reached vLLM. vLLM updates its counters with some lag, so they are read once they have
    stood still."""
    _, port = _direct(gateway, monkeypatch, "tiny-a")

    def counters():
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
        total = lambda prefix, label="": sum(float(x.rsplit(" ", 1)[1]) for x in text.splitlines()
                                             if x.startswith(prefix) and label in x)
        return (total("vllm:generation_tokens_total"), total("vllm:request_success_total", 'finished_reason="abort"'),
                total("vllm:request_success_total", 'finished_reason="length"'))

    def settled(still_s):
        last, since = counters(), time.monotonic()
        while time.monotonic() - since < still_s:
            time.sleep(0.5)
            now = counters()
            if now != last:
                last, since = now, time.monotonic()
        return last

    before = settled(3.0)
    stream = gateway.client().completions.create(model="tiny-a", prompt="Once", max_tokens=1000, n=256, temperature=1,
                                                 stream=True, extra_body={"ignore_eos": True})
    it = iter(stream)
    for _ in range(3):
        next(it)
    stream.close()  # the client goes away after three chunks
    time.sleep(12)  # longer than vLLM's stats interval: a request left running would be counted meanwhile
    after = settled(11.0)  # still for longer than that interval: nothing is running any more
    tokens, _, by_length = (a - b for a, b in zip(after, before))
    assert by_length == 0, by_length
    assert 3 <= tokens < 0.7 * 256000, tokens  # counted at all, and aborted long before the end


def test_a_budget_for_one_model_stops_the_idle_one_and_loses_no_request(gateway):
    client = gateway.client()
    pid_a = None
    results, errors = [], []

    def one(model):
        try:
            results.append((model, _complete(client, model)))
        except Exception as e:  # noqa: BLE001
            errors.append((model, repr(e)))

    # requests for both at once: tiny-b needs tiny-a's room; tiny-a's requests are served, then tiny-a is stopped
    # once idle, tiny-b started, its requests served; tiny-a's later requests wait for tiny-b to drain
    threads = [threading.Thread(target=one, args=(m,)) for m in ["tiny-b"] * 4 + ["tiny-a"] * 4]
    for t in threads:
        t.start()
        time.sleep(0.05)
    for t in threads:
        t.join(900)
    assert not errors and len(results) == 8, errors[:3]
    assert gateway.metric("launcher_gateway_starts_total", model="tiny-b") == 1
    assert gateway.metric("launcher_gateway_evictions_total", model="tiny-a", action="stop") >= 1
    st = gateway.status()
    assert sum(st[m]["state"] == "running" for m in st) == 1  # never both: the budget holds one


def test_a_gateway_killed_and_started_again_adopts_the_running_model(gateway):
    if not any(m["state"] == "running" for m in gateway.status().values()):  # this test run alone: one started
        assert _complete(gateway.client(), "tiny-b")
    st = gateway.status()
    running = [m for m in st if st[m]["state"] == "running"]
    assert len(running) == 1
    name = running[0]
    server_pid = json.loads((gateway.home / "runs" / name / "state.json").read_text())["server"]["pid"]
    gateway.proc.kill()  # kill -9: no chance to stop its models
    gateway.proc.wait(10)
    os.kill(server_pid, 0)  # the model's server outlived it
    gateway.start()
    t0 = time.monotonic()
    assert _complete(gateway.client(), name)
    assert time.monotonic() - t0 < 10  # served by the adopted server, not a new start
    assert gateway.metric("launcher_gateway_starts_total", model=name) == 0
    assert json.loads((gateway.home / "runs" / name / "state.json").read_text())["server"]["pid"] == server_pid


def test_the_status_page_as_a_person_sees_it(gateway, tmp_path):
    """Headless Chromium (Debian's package) renders the page: the running model's green badge is on the screenshot."""
    import shutil

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
    shot = tmp_path / "status.png"
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,500",
                    f"--screenshot={shot}", gateway.url + "/"], capture_output=True, timeout=120)
    import matplotlib.image

    img = (matplotlib.image.imread(str(shot))[:, :, :3] * 255).round()
    green = ((abs(img[:, :, 0] - 0xB7) <= 2) & (abs(img[:, :, 1] - 0xE4) <= 2) & (abs(img[:, :, 2] - 0xC7) <= 2)).sum()
    assert green > 50, "no 'running' badge on the rendered status page"
    html = urllib.request.urlopen(gateway.url + "/").read().decode()
    assert "tiny-a" in html and "tiny-b" in html and "memory planned" in html


def test_ps_shows_the_gateways_models_and_launch_via_adds_one(gateway):
    from conftest import cli

    env = dict(os.environ, LAUNCHER_HOME=str(gateway.home))
    r = cli("launch", "--via", gateway.url, "--model-path", str(TINY), "--name", "tiny-c", "--max-model-len", "512",
            "--enforce-eager", "--json", env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["added"] == "tiny-c"
    wait_for(lambda: gateway.status()["tiny-c"]["state"] == "running", 300, 0.5, "tiny-c started by the gateway")
    rows = {row["name"]: row for row in json.loads(cli("ps", "--json", env=env, timeout=60).stdout)}
    assert rows["tiny-c"]["gateway"]["url"] == gateway.url
    assert {rows[n]["gateway"]["state"] for n in ("tiny-a", "tiny-b")} <= {"running", "stopped", "starting"}
    r = cli("launch", "--via", gateway.url, "--model-path", str(TINY), "--name", "tiny-c", env=env, timeout=60)
    assert r.returncode == 2 and "already" in r.stderr  # one name, one model


def _post(url, body: bytes, ctype="application/json"):
    req = urllib.request.Request(url, data=body, headers={"Content-Type": ctype})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())



def test_a_lora_adapter_loaded_at_run_time_is_routed_listed_refused_with_reasons_and_loaded_again_after_a_restart(
        gateway, tmp_path):
    """`launcher gateway load-adapter tiny-a tinylora2 examples/tiny-llama-lora` (the bundled adapter under a second
    name): a request for it starts tiny-a if needed and is answered by the adapter; /v1/models lists it with its
    parent. Refused with the reason: on tiny-b (no --enable-lora), a folder with no adapter, a rank above tiny-a's
    --max-lora-rank 8. tiny-a's server killed once: its supervisor starts a new one, and the adapter answers again
    (loaded again). Unloaded: 404."""
    from conftest import cli

    env = dict(os.environ, LAUNCHER_HOME=str(gateway.home))
    r = cli("gateway", "load-adapter", "tiny-a", "tinylora2", str(ADAPTER), "--json", env=env, timeout=300)
    assert r.returncode == 0 and json.loads(r.stdout)["adapter"] == "tinylora2", (r.stdout, r.stderr)
    client = gateway.client()
    assert _complete(client, "tinylora2")
    models = {m["id"]: m for m in json.loads(urllib.request.urlopen(gateway.url + "/v1/models").read())["data"]}
    assert models["tinylora2"]["parent"] == "tiny-a"

    big = tmp_path / "rank16"
    big.mkdir()
    cfg = json.loads((ADAPTER / "adapter_config.json").read_text())
    (big / "adapter_config.json").write_text(json.dumps(dict(cfg, r=16)))
    for base, name, path, words in (("tiny-b", "x1", ADAPTER, "without --enable-lora"),
                                    ("tiny-a", "x2", TINY, "holds no LoRA adapter"),
                                    ("tiny-a", "x3", big, "rank 16, above `tiny-a`'s --max-lora-rank 8")):
        r = cli("gateway", "load-adapter", base, name, str(path), env=env, timeout=120)
        assert r.returncode == 2 and words in r.stderr, (base, r.stderr)

    st = json.loads((gateway.home / "runs" / "tiny-a" / "state.json").read_text())
    os.kill(st["server"]["pid"], signal.SIGKILL)
    wait_for(lambda: gateway.status()["tiny-a"]["state"] == "restarting", 60, 0.1, "tiny-a restarting")
    wait_for(lambda: gateway.status()["tiny-a"]["state"] == "running", 300, 0.5, "tiny-a running again")
    assert _complete(client, "tinylora2")  # the new server has the adapter again

    r = cli("gateway", "unload-adapter", "tiny-a", "tinylora2", env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    code, body = _post(gateway.url + "/v1/completions", json.dumps({"model": "tinylora2", "prompt": "x"}).encode())
    assert code == 404 and body["error"]["code"] == "model_not_found"

def test_a_request_is_parsed_and_routed_before_any_start_and_every_error_is_openai_shaped(gateway):
    """A body that is not JSON by its Content-Type starts nothing (it cold-started its model once); 404 of an unknown
    route and 413 of a body past 64 MiB come in OpenAI's error shape; each status a client got is counted."""
    before = {m: s["state"] for m, s in gateway.status().items()}
    stopped = next((m for m, st in before.items() if st == "stopped"), None)
    n415 = gateway.metric("launcher_gateway_requests_total", status="415")
    code, body = _post(gateway.url + "/v1/completions", json.dumps({"model": stopped or "tiny-b", "prompt": "x"}).encode(),
                       "text/plain")
    assert code == 415 and body["error"]["code"] == "unsupported_media_type", body
    assert gateway.metric("launcher_gateway_requests_total", status="415") == n415 + 1
    time.sleep(1.5)
    if stopped:
        assert gateway.status()[stopped]["state"] == "stopped"  # nothing started for it
    code, body = _post(gateway.url + "/no/such/route", b"{}")
    assert code == 404 and body["error"]["type"] == "invalid_request_error" and "/v1/" in body["error"]["message"]
    code, body = _post(gateway.url + "/v1/completions", b"x" * (65 << 20))
    assert code == 413 and body["error"]["code"] == "request_too_large"


def test_a_model_killed_until_its_supervisor_gives_up_is_failed_then_served_again_without_a_gateway_restart(gateway):
    """kill -9 of tiny-a's server at each start until its supervisor gives up (FATAL): the gateway says failed with
    the cause, as `launcher ps` says FATAL; requests get 503 with that cause for the retry window (5 s here); the next
    request starts it afresh and is served, the gateway never restarted."""
    from conftest import cli

    client = gateway.client()
    assert _complete(client, "tiny-a")
    gw_pid = gateway.proc.pid
    state_file = gateway.home / "runs" / "tiny-a" / "state.json"
    killed = set()

    def kill_each_server():
        st = json.loads(state_file.read_text())
        if st.get("state") == "FATAL":
            return True
        pid = (st.get("server") or {}).get("pid")
        if pid and pid not in killed:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.add(pid)
            except ProcessLookupError:
                pass
        return False

    wait_for(kill_each_server, 180, 0.05, "tiny-a's supervisor to give up")
    wait_for(lambda: gateway.status()["tiny-a"]["state"] == "failed", 10, 0.2, "the gateway to follow FATAL")
    env = dict(os.environ, LAUNCHER_HOME=str(gateway.home))
    rows = {r["name"]: r for r in json.loads(cli("ps", "--json", env=env, timeout=60).stdout)}
    assert rows["tiny-a"]["state"] == "FATAL" and rows["tiny-a"]["gateway"]["state"] == "failed"
    assert "SIGKILL" in gateway.status()["tiny-a"]["error"]
    code, body = _post(gateway.url + "/v1/completions", json.dumps({"model": "tiny-a", "prompt": "x"}).encode())
    assert code == 503 and body["error"]["code"] == "model_failed" and "SIGKILL" in body["error"]["message"], body
    assert gateway.metric("launcher_gateway_requests_total", model="tiny-a", status="503") >= 1
    time.sleep(5)
    assert _complete(client, "tiny-a")  # a fresh start, at the first request after the retry window
    assert gateway.status()["tiny-a"]["state"] == "running" and gateway.proc.pid == gw_pid

    # `launcher stop NAME` of a gateway model stops that model alone: the gateway keeps serving the others
    r = cli("stop", "tiny-a", env=env, timeout=120)
    assert r.returncode == 0 and "tiny-a: stopped" in r.stdout, (r.stdout, r.stderr)
    assert gateway.proc.poll() is None and gateway.status()["tiny-a"]["state"] == "stopped"
    assert _complete(client, "tiny-b")
    r = cli("gateway", "stop", "tiny-b", "--json", env=env, timeout=120)
    assert r.returncode == 0 and json.loads(r.stdout)["state"] == "stopped", r.stderr
    assert gateway.proc.poll() is None



def test_the_models_file_read_again_on_sighup_adds_and_removes_models_without_a_restart(gateway):
    """SIGHUP: a bad new models file is refused with one line in the gateway's log and the old one kept; a good one
    adds tiny-d (served at its first request) and removes tiny-b and the model added through the API (absent from
    the file; 404 after), tiny-a untouched, same gateway process.
    `launcher status tiny-d` shows its state in the gateway; `launcher gateway reload` with nothing changed says so."""
    import yaml

    from conftest import cli

    env = dict(os.environ, LAUNCHER_HOME=str(gateway.home))
    path, gw_pid = gateway.models_file, gateway.proc.pid
    old = yaml.safe_load(path.read_text())
    before = set(gateway.status())  # tiny-a, tiny-b and the model `launch --via` added
    path.write_text(yaml.safe_dump({"models": old["models"] + [{"name": "tiny-d", "model_path": "/no/such/model"}]}))
    gateway.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "the old one kept" in open(gateway.log.name).read(), 60, 0.2, "the bad file refused")
    assert "/no/such/model" in open(gateway.log.name).read() and set(gateway.status()) == before

    tiny_c = dict(old["models"][1], name="tiny-d")
    path.write_text(yaml.safe_dump({"models": [old["models"][0], tiny_c]}))
    gateway.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: set(gateway.status()) == {"tiny-a", "tiny-d"}, 120, 0.2, "the new file applied")
    assert _complete(gateway.client(), "tiny-d")
    code, body = _post(gateway.url + "/v1/completions", json.dumps({"model": "tiny-b", "prompt": "x"}).encode())
    assert code == 404 and body["error"]["code"] == "model_not_found"
    r = cli("status", "tiny-d", "--json", env=env, timeout=60)
    assert json.loads(r.stdout)["gateway"]["state"] == "running", (r.stdout, r.stderr)
    r = cli("gateway", "reload", env=env, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "kept: tiny-a, tiny-d", (r.stdout, r.stderr)
    assert gateway.proc.pid == gw_pid and gateway.proc.poll() is None



def test_ctrl_c_while_a_model_starts_leaves_no_process(tmp_path):
    """SIGINT to a gateway whose model is still starting: the gateway stops it too (a start under way once outlived
    a gateway stopped this way)."""
    import yaml

    from conftest import vllm_processes_here
    from launcher import health

    home = tmp_path / "gw"
    home.mkdir()
    path = home / "models.yaml"
    path.write_text(yaml.safe_dump({"models": [{"name": "tiny-s", "model_path": str(TINY),
                                                "env": {"VLLM_CPU_KVCACHE_SPACE": "1"},
                                                "engine_args": {"max-model-len": 512, **QUICK}}]}))
    gw = GatewayProc(home, path, health.find_free_port(), *SERVE_ARGS).start()
    threading.Thread(target=lambda: _complete_quietly(gw), daemon=True).start()
    wait_for(lambda: gw.status()["tiny-s"]["state"] == "starting", 60, 0.1, "the model starting")
    saved = os.environ.get("LAUNCHER_HOME")
    os.environ["LAUNCHER_HOME"] = str(home)
    try:
        wait_for(lambda: vllm_processes_here(), 60, 0.2, "its server process")
        gw.proc.send_signal(signal.SIGINT)
        gw.proc.wait(120)
        wait_for(lambda: not vllm_processes_here(), 30, 0.2, "no server process left")
    finally:
        for p in vllm_processes_here():
            os.kill(p, signal.SIGKILL)
        if saved is None:
            os.environ.pop("LAUNCHER_HOME", None)
        else:
            os.environ["LAUNCHER_HOME"] = saved


def _complete_quietly(gw):
    try:
        _complete(gw.client(), "tiny-s")
    except Exception:  # noqa: BLE001 - the gateway is stopped under it
        pass

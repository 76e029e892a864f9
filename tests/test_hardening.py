"""One owner per launch name, records that cannot lose a server, signals, the API key and bad state homes:
real supervisor processes over the fake server (tests/fake_server.py), and real vLLM where it matters."""
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import psutil
import pytest

from conftest import TINY, cli, fake_argv, wait_for
from launcher import locks
from launcher.errors import BadInput
from launcher.launching import Prepared, adopt, start_detached, wait_until
from launcher.runs import read_state, run_dir
from launcher.spec import LaunchSpec
from launcher import health
from launcher.process import RUN_ID_ENV


def detached_fake(name: str, mode: str = "ok", delay: float = 0.3, extra_env: dict | None = None):
    """A detached launch exactly as `launch --detach` makes it (launch.json, the daemon `_supervise`, the lock
    handed over), with the fake server as its command line."""
    port = health.find_free_port()
    pids = run_dir(name).parent / f"{name}.pids"
    env = dict(os.environ, FAKE_PIDS_FILE=str(pids), **(extra_env or {}))
    prep = Prepared(LaunchSpec(name=name, startup_timeout_s=20), None, fake_argv(port, mode, delay), env, port)
    sup_pid = start_detached(prep)
    return prep, sup_pid, pids


def pids_of(pids_file) -> list[int]:
    return [int(x) for x in pids_file.read_text().split()] if pids_file.exists() else []


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def tagged(run_id: str) -> list[int]:
    out = []
    for p in psutil.process_iter(["pid"]):
        try:
            if p.environ().get(RUN_ID_ENV) == run_id and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p.pid)
        except psutil.Error:
            pass
    return out


def test_a_held_name_is_refused_at_once_saying_who_holds_it():
    with locks.NameLock.acquire("busy", "a test"):
        t0 = time.monotonic()
        r = cli("launch", "--model-path", str(TINY), "--name", "busy", "--detach", "--max-model-len", "512")
        took = time.monotonic() - t0
        assert r.returncode == 2 and f"held by a test (PID {os.getpid()}" in r.stderr, r.stderr
        assert took < 5  # interpreter start included; the refusal itself is measured in docs/testing.md
        assert not (run_dir("busy") / "launch.json").exists()  # nothing recorded, nothing started
    assert locks.held("busy") is None  # released with its descriptor


def test_the_lock_goes_to_the_detached_supervisor_and_is_gone_with_it():
    prep, sup_pid, pids = detached_fake("owned")
    try:
        st = wait_until("owned", ("READY", "FATAL"), 20)
        assert st["state"] == "READY"
        holder = locks.held("owned")
        assert holder == {**holder, "pid": sup_pid, "role": "supervisor"}
        # a second launch and an adopt of the held name: refused in well under a second each
        for attempt in (lambda: start_detached(Prepared(LaunchSpec(name="owned"), None, ["true"], {}, 1)),
                        lambda: adopt("owned")):
            t0 = time.monotonic()
            with pytest.raises(BadInput, match=f"held by supervisor \\(PID {sup_pid}"):
                attempt()
            assert time.monotonic() - t0 < 1.0
        assert read_state("owned")["state"] == "READY"  # the refused launch changed nothing
    finally:
        assert cli("stop", "owned").returncode == 0
    assert locks.held("owned") is None
    assert not [p for p in pids_of(pids) if alive(p)] and not alive(sup_pid)


def test_a_corrupt_state_file_hides_nothing_and_the_supervisor_rewrites_it(launcher_home):
    prep, sup_pid, pids = detached_fake("damaged")
    try:
        assert wait_until("damaged", ("READY", "FATAL"), 20)["state"] == "READY"
        state = launcher_home / "runs" / "damaged" / "state.json"
        for bad in ("{", state.read_text()[:40]):
            state.write_text(bad)
            seen = read_state("damaged")
            assert seen["state"] in ("UNKNOWN", "READY") and seen["supervisor"]["pid"] == sup_pid
            r = cli("status", "damaged", "--json")
            assert "no launch named" not in r.stderr and json.loads(r.stdout)["state"] in ("UNKNOWN", "READY")
            wait_for(lambda: (json.loads(state.read_text() or "null") if state.read_text().endswith("}") else None),
                     10, what="the supervisor to rewrite state.json")
            assert read_state("damaged")["state"] == "READY"
        assert "state.json was unreadable: rewritten" in (launcher_home / "runs" / "damaged" / "supervisor.log").read_text()
    finally:
        cli("stop", "damaged")
    assert not [p for p in pids_of(pids) if alive(p)]


def test_stop_from_a_damaged_record_with_its_supervisor_dead_leaves_no_process(launcher_home):
    prep, sup_pid, pids = detached_fake("orphan")
    assert wait_until("orphan", ("READY", "FATAL"), 20)["state"] == "READY"
    server = read_state("orphan")["server"]["pid"]
    run_id = read_state("orphan")["run_id"]
    os.kill(sup_pid, signal.SIGKILL)
    wait_for(lambda: not alive(sup_pid), 10, what="the supervisor to die")
    (launcher_home / "runs" / "orphan" / "state.json").write_text("{")  # and the state it kept is lost
    r = cli("ps", "--json")
    rows = {x["name"]: x for x in json.loads(r.stdout)}
    assert rows["orphan"]["state"] == "UNSUPERVISED" and rows["orphan"]["pid"] == server
    r = cli("launch", "--name", "orphan", "--adopt", "--json")  # not lost for adopt either ...
    assert r.returncode == 0 and json.loads(r.stdout)["state"] == "READY", r.stderr
    new_sup = json.loads(r.stdout)["supervisor_pid"]
    os.kill(new_sup, signal.SIGKILL)
    wait_for(lambda: not alive(new_sup), 10, what="the new supervisor to die")
    (launcher_home / "runs" / "orphan" / "state.json").write_text("")
    t0 = time.monotonic()
    r = cli("stop", "orphan", "--json")  # ... nor for stop
    assert r.returncode == 0 and json.loads(r.stdout)[0]["state"] == "STOPPED", r.stderr
    assert time.monotonic() - t0 < 10
    assert not alive(server) and not tagged(run_id) and not [p for p in pids_of(pids) if alive(p)]
    assert read_state("orphan")["state"] == "STOPPED"  # and the record is whole again


def test_the_api_key_reaches_the_server_and_a_request_without_it_is_refused(monkeypatch):
    """--api-key-env: the key goes into the server's environment only (not argv, not the records), and the
    server then refuses requests without it."""
    from launcher.launching import prepare
    from launcher.serving import served

    monkeypatch.setenv("MY_KEY", "s3cret-key")
    spec = LaunchSpec(name="keyed", model_path=str(TINY), host="0.0.0.0", api_key_env="MY_KEY", preflight=False,
                      startup_timeout_s=20)
    prep = prepare(spec, claim=True)
    assert prep.env["VLLM_API_KEY"] == "s3cret-key" and "s3cret-key" not in " ".join(prep.argv)
    prep.argv = fake_argv(prep.port, "ok", 0.2)
    with served(prep, timeout_s=20):
        url = f"http://127.0.0.1:{prep.port}/v1/models"
        with pytest.raises(urllib.error.HTTPError) as no_key:
            urllib.request.urlopen(url, timeout=5)
        assert no_key.value.code == 401
        ok = urllib.request.urlopen(urllib.request.Request(url, headers={"Authorization": "Bearer s3cret-key"}), timeout=5)
        assert ok.status == 200
    recorded = (run_dir("keyed") / "launch.json").read_text() + (run_dir("keyed") / "state.json").read_text()
    assert "s3cret-key" not in recorded


@pytest.mark.parametrize("home_kind", ["file", "under-a-file"])
@pytest.mark.parametrize("command", [["ps"], ["stop", "x"], ["status", "x"],
                                     ["launch", "--model-path", str(TINY), "--detach"],
                                     ["smoke", "--model-path", str(TINY)]])
def test_an_unusable_launcher_home_is_one_line_exit_2(tmp_path, home_kind, command):
    f = tmp_path / "a-file"
    f.write_text("")
    home = f if home_kind == "file" else f / "home"
    r = cli(*command, env=dict(os.environ, LAUNCHER_HOME=str(home)))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "LAUNCHER_HOME" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


def _deaf_supervisor(name: str, state: str):
    """A process that ignores SIGTERM, recorded as the supervisor of a launch in `state`."""
    from launcher.process import ProcRef
    from launcher.runs import run_dir, update_state

    p = subprocess.Popen([sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                          "print('up', flush=True); time.sleep(600)"], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "up"  # its handler is in place
    ref = ProcRef.of(p.pid)
    run_dir(name).mkdir(parents=True, exist_ok=True)
    update_state(name, state=state, supervisor={"pid": ref.pid, "create_time": ref.create_time}, run_id="deaf-" + name)
    return p


def test_stop_of_a_launch_still_starting_does_not_wait_for_a_supervisor_that_ignores_sigterm(launcher_home):
    """Nothing to drain before READY: stop gives the supervisor UNREADY_WAIT_S, then kills it; a READY launch's
    supervisor gets the whole timeout (its server drains its requests)."""
    from launcher.launching.stop import UNREADY_WAIT_S, stop as stop_launch

    p = _deaf_supervisor("starting", "STARTING")
    t0 = time.monotonic()
    assert stop_launch("starting", timeout_s=60)["state"] == "STOPPED"
    took = time.monotonic() - t0
    assert UNREADY_WAIT_S - 0.5 < took < UNREADY_WAIT_S + 5, took
    assert p.wait(timeout=10) == -signal.SIGKILL
    p = _deaf_supervisor("ready", "READY")
    t0 = time.monotonic()
    stop_launch("ready", timeout_s=UNREADY_WAIT_S + 4)
    assert time.monotonic() - t0 >= UNREADY_WAIT_S + 4 - 0.5  # waited its whole timeout, not the short one
    assert p.wait(timeout=10) == -signal.SIGKILL


def test_a_crash_whose_last_line_points_above_is_reported_by_the_error_above_it():
    """vLLM's last word on an engine crash is "EngineCore encountered an issue. See stack trace (above) for the root
    cause.": in a FATAL reason or a 503 nobody can see "above". The error it points to is named, the wrapper after."""
    from launcher.engines import vllm as vllm_engine

    log = ("(EngineCore_DP0 pid=812) ERROR 12-06 17:40:02 [core.py:932] EngineCore encountered a fatal error.\n"
           "(EngineCore_DP0 pid=812) ERROR 12-06 17:40:02 [core.py:932] Traceback (most recent call last):\n"
           "(EngineCore_DP0 pid=812) ERROR 12-06 17:40:02 [core.py:932]   File \"vllm/v1/engine/core.py\", line 923\n"
           "(EngineCore_DP0 pid=812) ERROR 12-06 17:40:02 [core.py:932] NotImplementedError: Could not run "
           "'_C::paged_attention_v1' with arguments from the 'CPU' backend.\n"
           "(APIServer pid=800) ERROR 12-06 17:40:02 [async_llm.py:480] AsyncLLM output_handler failed.\n"
           "(APIServer pid=800) ERROR 12-06 17:40:02 [async_llm.py:480] vllm.v1.engine.exceptions.EngineDeadError: "
           "EngineCore encountered an issue. See stack trace (above) for the root cause.\n")
    kind, line, _ = vllm_engine.root_cause(log)
    assert kind == "engine_died"
    assert line.startswith("NotImplementedError: Could not run '_C::paged_attention_v1'"), line
    assert "See stack trace (above)" in line  # the wrapper kept after it, for the record
    # nothing above it: the wrapper alone, as before
    kind, line, _ = vllm_engine.root_cause(log.split("\n", 4)[-1].replace("NotImplementedError", "x"))
    assert line.startswith("vllm.v1.engine.exceptions.EngineDeadError") or "EngineDeadError" in line

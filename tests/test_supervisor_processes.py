"""The supervisor against a scriptable fake server: real processes, polled with deadlines."""
import os
import socket
import threading

import psutil
import pytest

from conftest import fake_argv, wait_for
from launcher.runs import read_state, run_dir
from launcher import health
from launcher.supervisor.machine import State
from launcher.supervisor.policy import RestartPolicy
from launcher.supervisor.run import GpuReleaseCheck, ServerRun


class NoGpus:
    def list(self):
        return []


FAST = RestartPolicy(startup_timeout_s=5, probe_interval_s=0.1, probe_timeout_s=0.3, liveness_failures=3,
                     backoff_initial_s=0.1, backoff_max_s=0.5, stable_s=30, max_quick_failures=3, stop_grace_s=1.0)


def start(name, mode, delay=0.5, policy=FAST, tmp_path=None, port=None):
    port = port or health.find_free_port()
    d = run_dir(name)
    d.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    pids_file = d / "pids"
    env["FAKE_PIDS_FILE"] = str(pids_file)
    sr = ServerRun(name, fake_argv(port, mode, delay), env, "127.0.0.1", port, d, policy,
                   gpu_check=GpuReleaseCheck(NoGpus()))
    th = threading.Thread(target=sr.run, kwargs={"install_signals": False, "tick_s": 0.05}, daemon=True)
    th.start()
    return sr, th, pids_file


def all_pids(pids_file):
    return [int(x) for x in pids_file.read_text().split()] if pids_file.exists() else []


def none_alive(pids):
    return not [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]


def finish(sr, th):
    sr.request_stop()
    th.join(30)
    assert not th.is_alive()


def test_ready_only_when_health_answers_200():
    sr, th, pids = start("ok", "ok")
    wait_for(lambda: sr.sup.state == State.READY, 10, what="READY")
    st = read_state("ok")
    assert st["state"] == "READY" and st["server"]["pid"] == sr.tree.leader.pid
    finish(sr, th)
    assert read_state("ok")["state"] == "STOPPED"
    assert none_alive(all_pids(pids))


def test_crash_at_start_is_a_configuration_error_not_retried():
    sr, th, _ = start("crash", "crash_at_start", delay=0.2)
    wait_for(lambda: sr.sup.state == State.FATAL, 10, what="FATAL")
    assert sr.sup.restarts == 0
    assert "fake configuration error" in sr.sup.reason and "not retried" in sr.sup.reason
    th.join(10)


def test_oom_at_start_is_not_retried():
    sr, th, _ = start("oom", "oom_at_start", delay=0.2)
    wait_for(lambda: sr.sup.state == State.FATAL, 10, what="FATAL")
    assert sr.sup.restarts == 0 and "OutOfMemoryError" in sr.sup.reason
    th.join(10)


def test_crash_after_ready_restarts_then_fatal_after_k_quick_failures():
    sr, th, pids = start("crashy", "crash_after_ready", delay=0.6)
    wait_for(lambda: sr.sup.restarts >= 1 and sr.sup.state == State.READY, 20, what="restart to READY")
    wait_for(lambda: sr.sup.state == State.FATAL, 30, what="FATAL after quick failures")
    assert sr.sup.restarts == FAST.max_quick_failures - 1
    assert "3 failures in a row" in sr.sup.reason and "fake crash after ready" in sr.sup.reason
    log = (run_dir("crashy") / "supervisor.log").read_text()
    assert log.count("-> BACKOFF") == 2 and "-> FATAL" in log
    th.join(10)
    assert none_alive(all_pids(pids))


def test_never_healthy_hits_the_startup_deadline():
    pol = RestartPolicy(**{**FAST.__dict__, "startup_timeout_s": 1.0, "max_quick_failures": 2})
    sr, th, pids = start("sick", "never_healthy", policy=pol)
    wait_for(lambda: sr.sup.state == State.FATAL, 20, what="FATAL")
    assert "start-up deadline" in sr.sup.reason and sr.sup.restarts == 1
    th.join(10)
    assert none_alive(all_pids(pids))


@pytest.mark.parametrize("mode", ["503_after_ready", "hang_health"])
def test_liveness_failures_after_ready_restart_the_server(mode):
    sr, th, pids = start(mode, mode, delay=1.0)
    wait_for(lambda: sr.sup.restarts >= 1, 20, what="a restart")
    assert "liveness" in sr.sup.reason
    wait_for(lambda: sr.sup.state == State.READY, 20, what="READY again")
    finish(sr, th)
    assert none_alive(all_pids(pids))


def test_stop_kills_a_server_that_ignores_sigterm():
    sr, th, pids = start("stubborn", "ignore_sigterm")
    wait_for(lambda: sr.sup.state == State.READY, 10, what="READY")
    finish(sr, th)
    assert "ignoring SIGTERM" in (run_dir("stubborn") / "server.log").read_text()
    assert none_alive(all_pids(pids))


def test_stop_kills_grandchildren():
    sr, th, pids = start("gc", "grandchild")
    wait_for(lambda: sr.sup.state == State.READY and len(all_pids(pids)) == 2, 10, what="READY with grandchild")
    finish(sr, th)
    assert none_alive(all_pids(pids))


def test_stop_kills_a_grandchild_that_left_the_process_group():
    sr, th, pids = start("escape", "escape_grandchild")
    wait_for(lambda: sr.sup.state == State.READY and len(all_pids(pids)) == 2, 10, what="READY with escaped grandchild")
    escaped = all_pids(pids)[1]
    assert os.getpgid(escaped) != sr.tree.pgid  # really outside the group
    finish(sr, th)
    wait_for(lambda: none_alive([escaped]), 5, what="escaped grandchild gone")


def test_port_taken_by_another_process_is_fatal_and_not_retried():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    port = s.getsockname()[1]
    try:
        assert not health.port_free("127.0.0.1", port)
        sr, th, _ = start("porty", "ok", port=port)
        wait_for(lambda: sr.sup.state == State.FATAL, 10, what="FATAL")
        assert "port_in_use" in sr.sup.reason and sr.sup.restarts == 0
        th.join(10)
    finally:
        s.close()


def test_another_process_answering_on_the_port_does_not_make_the_launch_ready(tmp_path):
    """Two launches that chose the same port (each saw it free), or anything started on it since: until this launch's
    server binds the port, the other's /health 200 must not count. Here the launch's server loads for 3 s before it
    binds (as vLLM does) while another server already answers there: it stays STARTING, says whose port it is, and
    when its own bind fails the launch is FATAL with that cause, never READY."""
    import subprocess
    import sys

    port = health.find_free_port()
    other = subprocess.Popen(fake_argv(port, "ok"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sr = th = pids = None
    try:
        wait_for(lambda: health.probe(f"http://127.0.0.1:{port}/health", 0.3) == 200, 10, what="the other server")
        sr, th, pids = start("late", "bind_late", delay=3.0, port=port)
        log = run_dir("late") / "supervisor.log"
        wait_for(lambda: log.exists() and "not this launch's server" in log.read_text(), 5,
                 what="the note on the port's other owner")
        assert sr.sup.state == State.STARTING
        assert f"from PID {other.pid}" in log.read_text()
        wait_for(lambda: sr.sup.state == State.FATAL, 15, what="its own server's failed bind")
        text = log.read_text()
        assert "-> READY" not in text and "port_in_use" in text  # vLLM's own failure, named; a setting: not retried
    finally:
        if sr is not None:  # whatever failed above, nothing of this test outlives it
            finish(sr, th)
            assert none_alive(all_pids(pids))
        other.terminate()
        other.wait(10)

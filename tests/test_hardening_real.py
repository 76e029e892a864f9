"""The hardening probes that need the real vLLM engine (the rest: tests/test_hardening.py): two launches of one name
at once, stop while starting, SIGHUP to a foreground launch."""
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT, TINY, cli, wait_for
from launcher import locks
from launcher.runs import read_state
from launcher import health
from launcher.launching.stop import UNREADY_WAIT_S, stop as stop_launch
from test_hardening import alive, tagged

pytestmark = pytest.mark.vllm


def test_two_launches_of_one_name_at_once_then_stop_while_starting():
    """The probe as a user ran it: two `launch --detach --name same` at the same moment on two ports. One is
    refused at once; `stop` of the other while vLLM is still starting takes under 3 s and leaves nothing."""
    args = ["launch", "--model-path", str(TINY), "--detach", "--name", "same", "--max-model-len", "512"]
    procs = [subprocess.Popen([sys.executable, "-m", "launcher", *args, "--port", str(port)], cwd=str(ROOT),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for port in (health.find_free_port(), health.find_free_port())]
    try:
        refused = wait_for(lambda: next((p for p in procs if p.poll() is not None), None), 20, poll_s=0.05,
                           what="one launch to be refused")
        out, err = refused.communicate()
        assert refused.returncode == 2 and "the launch name 'same' is held by" in err, err
        winner = next(p for p in procs if p is not refused)
        st = wait_for(lambda: (read_state("same") or {}).get("server"), 60, what="the server to be spawned")
        assert read_state("same")["state"] == "STARTING"
        run_id = read_state("same")["run_id"]
        # the property, whatever the load: a launch still starting has nothing to drain, so stop waits for its
        # supervisor at most UNREADY_WAIT_S before it kills it and sweeps the run (measured here in this process, not
        # counting a CLI's start-up; the CLI's exit code and words are checked below on the stopped launch)
        t0 = time.monotonic()
        res = stop_launch("same")
        took = time.monotonic() - t0
        assert res["state"] == "STOPPED"
        assert took < UNREADY_WAIT_S + 5.0, took
        r = cli("stop", "same")
        assert r.returncode == 0 and "same: STOPPED" in r.stdout, r.stderr
        assert winner.wait(timeout=60) == 4  # never became ready: stopped while starting
        assert not tagged(run_id) and not alive(st["pid"])
        assert locks.held("same") is None
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        cli("stop", "same")


def test_sighup_to_a_foreground_launch_stops_its_server(launcher_home):
    """Closing the terminal of a foreground launch (SIGHUP, and its stdout/stderr gone) stops the server as
    Ctrl-C does: no vLLM process is left with parent 1."""
    p = subprocess.Popen([sys.executable, "-m", "launcher", "launch", "--model-path", str(TINY), "--name", "fg",
                          "--max-model-len", "512"], cwd=str(ROOT), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        st = wait_for(lambda: (read_state("fg") or {}).get("server"), 60, what="the server to be spawned")
        run_id = read_state("fg")["run_id"]
        p.stdout.close()
        p.stderr.close()  # the terminal is gone: whatever it prints now fails
        p.send_signal(signal.SIGHUP)
        p.wait(timeout=30)
        wait_for(lambda: not tagged(run_id), 10, what="no process of the launch")
        assert not alive(st["pid"])
        assert read_state("fg")["state"] == "STOPPED"
    finally:
        if p.poll() is None:
            p.kill()
        cli("stop", "fg")

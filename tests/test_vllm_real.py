"""The real vLLM engine (the CPU build here) with the bundled tiny model."""
import json
import re
import shutil
import signal
import urllib.request

import psutil
import pytest

from conftest import QUICK_VLLM, TINY, cli, run_processes, wait_for
from launcher import hostcpu

pytestmark = pytest.mark.vllm


def status(name):
    r = cli("status", name, "--json", timeout=60)
    return json.loads(r.stdout)


def test_detached_launch_chat_engine_core_kill_restart_and_clean_stop(launcher_home, request):
    request.addfinalizer(lambda: cli("stop", "--all", timeout=120))  # nothing left running if an assertion fails
    r = cli("launch", "--model-path", str(TINY), *QUICK_VLLM, "--detach", "--name", "tiny", "--max_model_len", "1024",
            "--json")
    assert r.returncode == 0, r.stderr[-3000:]
    st = status("tiny")
    assert st["state"] == "READY" and st["restarts"] == 0
    assert "Application startup complete" in cli("logs", "tiny", "--tail", "50").stdout
    assert "READY" in cli("logs", "tiny", "--supervisor").stdout
    listed = json.loads(cli("ps", "--json").stdout)
    assert [(r["name"], r["state"]) for r in listed] == [("tiny", "READY")]
    # the first request is a short one: with the quick settings (eager, uni executor) vLLM skips its warm-up, and on a
    # host with AMX tiles its attention died here with SIGILL until the launcher's plugin asked for tile data
    body = json.dumps({"model": str(TINY), "prompt": "Hello 0", "max_tokens": 2}).encode()
    req = urllib.request.Request(st["endpoint"] + "/completions", data=body, headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as resp:
        first = json.loads(resp.read())
    assert first["usage"]["prompt_tokens"] <= 4 and first["usage"]["completion_tokens"] == 2, first
    server_log = cli("logs", "tiny", "--tail", "2000").stdout
    if hostcpu.has_amx_tiles():  # each vLLM process (API server, engine core) asked for AMX tile data
        assert server_log.count("AMX tile data permitted") >= 2, server_log[-3000:]
    else:
        assert "AMX tile data" not in server_log
    body = json.dumps({"model": str(TINY), "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 8}).encode()
    req = urllib.request.Request(st["endpoint"] + "/chat/completions", data=body, headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as resp:
        out = json.loads(resp.read())
    assert out["choices"][0]["message"]["content"] and out["usage"]["completion_tokens"] > 0

    state = json.loads((launcher_home / "runs" / "tiny" / "state.json").read_text())
    run_id = state["run_id"]
    engine = [p for p in psutil.Process(st["pid"]).children(recursive=True) if "EngineCore" in " ".join(p.cmdline())]
    assert engine, "no EngineCore process found"
    engine[0].send_signal(signal.SIGKILL)
    wait_for(lambda: status("tiny")["restarts"] >= 1 and status("tiny")["state"] == "READY", 300, poll_s=1,
             what="restart after the engine core was killed")
    log = (launcher_home / "runs" / "tiny" / "supervisor.log").read_text()
    assert log.count("-> READY") == 2
    # the back-off names why: the server's exit once its engine died, or its failed health probes
    assert re.search(r"READY -> BACKOFF (server (?:exited with code -?\d+|killed by SIG\w+ .*) after ready|liveness: \d+ failed health probes)",
                     log), log

    new_run_id = json.loads((launcher_home / "runs" / "tiny" / "state.json").read_text())["run_id"]

    # the supervisor is killed (OOM killer, kill -9): status tells, --adopt supervises the same server again
    before = status("tiny")
    psutil.Process(before["supervisor_pid"]).send_signal(signal.SIGKILL)
    wait_for(lambda: status("tiny")["state"] == "UNSUPERVISED", 30, what="status to see the supervisor gone")
    note = status("tiny")["reason"]
    assert f"server still running on :{json.loads(cli('status', 'tiny', '--json').stdout)['port']}" in note
    assert f"(pid {before['pid']})" in note and "--adopt" in note
    assert "supervisor gone" in cli("ps").stdout
    (launcher_home / "runs" / "tiny" / "state.json").write_text("{")  # and its state file is damaged too
    assert status("tiny")["state"] == "UNSUPERVISED" and status("tiny")["pid"] == before["pid"]  # from launch.json
    r = cli("launch", "--name", "tiny", "--adopt", "--json", timeout=180)
    assert r.returncode == 0, r.stderr[-3000:]
    after = status("tiny")
    assert after["state"] == "READY" and after["pid"] == before["pid"] and after["restarts"] == before["restarts"]
    assert after["supervisor_pid"] != before["supervisor_pid"]
    assert "adopted a running server" in cli("logs", "tiny", "--supervisor").stdout
    with urllib.request.urlopen(req, timeout=120) as resp:
        assert json.loads(resp.read())["usage"]["completion_tokens"] > 0

    r = cli("stop", "--all", timeout=120)
    assert r.returncode == 0 and "tiny: STOPPED" in r.stdout, r.stderr
    assert status("tiny")["state"] == "STOPPED"
    wait_for(lambda: not run_processes(run_id) and not run_processes(new_run_id), 10, what="no process of the launch")
    sup = state["supervisor"]["pid"]
    assert not psutil.pid_exists(sup) or psutil.Process(sup).status() == psutil.STATUS_ZOMBIE


def test_smoke_from_a_triton_model_json_passes_and_writes_reports(tmp_path):
    """vLLM's default start (compiled, a worker process), from Triton's vLLM-backend model.json as Triton users write
    it (a boolean key passed through as one); every check, the JSON report and the JUnit XML."""
    f = tmp_path / "model.json"
    f.write_text(json.dumps({"model": str(TINY), "max_model_len": 1024, "enforce_eager": False}))
    rj, jx = tmp_path / "report.json", tmp_path / "junit.xml"
    r = cli("smoke", "--config", str(f), "--name", "smoke-ok", "--stream", "--timeout", "400", "--report-json", str(rj),
            "--junit-xml", str(jx))
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    rep = json.loads(rj.read_text())
    assert rep["passed"] and rep["leftover_pids"] == []
    names = [c["name"] for c in rep["checks"]]
    assert names == ["ready", "list_models", "completion", "chat_completion", "chat_completion_stream"]
    assert isinstance(rep["kv_cache_tokens_vllm"], int) and rep["kv_cache_tokens_vllm"] > 0 and rep["time_to_ready_s"] > 0
    xml = jx.read_text()
    assert xml.count("<testcase") == 5 and 'failures="0"' in xml


def test_smoke_of_a_model_that_cannot_start_reports_vllms_root_cause(tmp_path):
    bad = tmp_path / "bad-model"
    shutil.copytree(TINY, bad)
    cfg = json.loads((bad / "config.json").read_text())
    cfg["architectures"] = ["NoSuchModelForCausalLM"]
    (bad / "config.json").write_text(json.dumps(cfg))
    rj = tmp_path / "report.json"
    r = cli("smoke", "--model-path", str(bad), "--name", "smoke-bad", "--no-preflight", "--timeout", "300",
            "--report-json", str(rj))
    assert r.returncode == 4, (r.stdout[-2000:], r.stderr[-2000:])
    rep = json.loads(rj.read_text())
    assert not rep["passed"] and "NoSuchModelForCausalLM" in rep["reason"]
    assert rep["leftover_pids"] == []

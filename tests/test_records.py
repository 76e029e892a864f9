"""`launcher rm` and `launcher ps --prune`: ended launches' records go, their logs stay unless asked."""
import json
import os
import time

import psutil

from conftest import cli
from launcher.runs import run_dir, update_state


def _record(name: str, state: str, supervisor_alive: bool = False) -> None:
    me = psutil.Process(os.getpid())
    sup = {"pid": me.pid, "create_time": me.create_time()} if supervisor_alive else {"pid": 1, "create_time": 0.0}
    run_dir(name).mkdir(parents=True)
    update_state(name, state=state, port=18000, supervisor=sup, created_at=time.time())
    (run_dir(name) / "server.log").write_text(f"log of {name}\n")
    (run_dir(name) / "supervisor.log").write_text("STARTING -> READY\n")


def test_rm_removes_an_ended_launch_and_keeps_its_logs(launcher_home):
    _record("old", "STOPPED")
    r = cli("rm", "old", "--json")
    assert r.returncode == 0, r.stderr
    kept = json.loads(r.stdout)["logs"]
    assert not (launcher_home / "runs" / "old").exists()
    assert open(os.path.join(kept, "server.log")).read() == "log of old\n"
    assert json.loads(cli("ps", "--json").stdout) == []


def test_rm_with_logs_deletes_everything(launcher_home):
    _record("old", "FATAL")
    assert cli("rm", "old", "--logs").returncode == 0
    assert not (launcher_home / "runs" / "old").exists() and not (launcher_home / "logs").exists()


def test_rm_refuses_a_running_launch_and_an_unknown_name():
    _record("live", "READY", supervisor_alive=True)
    r = cli("rm", "live")
    assert r.returncode == 2 and "is READY" in r.stderr and "launcher stop live" in r.stderr
    r = cli("rm", "nope")
    assert r.returncode == 2 and "no launch named 'nope'" in r.stderr


def test_ps_prune_removes_only_ended_launches(launcher_home):
    _record("a", "STOPPED")
    _record("b", "FATAL")
    _record("c", "READY")  # its supervisor is gone and no server runs: DEAD, which has ended too
    _record("live", "READY", supervisor_alive=True)
    r = cli("ps", "--prune", "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert sorted(d["pruned"]) == ["a", "b", "c"]
    assert [(x["name"], x["state"]) for x in d["launches"]] == [("live", "READY")]
    assert len(list((launcher_home / "logs").iterdir())) == 3


def test_a_restart_gets_the_variables_the_launcher_set(launcher_home):
    """launch.json keeps the variables the launcher set for the server (the CUDA graph share's switch), and the
    environment a detached launch's (re)starts get is rebuilt with them, over the user's own."""
    from launcher.launching import Prepared, env_from_record, graph_budget, record_launch
    from launcher.planning import plan, resolve_model
    from launcher.spec import LaunchSpec

    spec = LaunchSpec(model_name="qwen2.5-instruct", size_in_billions="7", name="graphs", gpu="H200",
                      env={"MY_VAR": "1"})
    p = plan(resolve_model(None, "qwen2.5-instruct", "7", "pytorch", "none"), {}, gpu_preset="H200", env={},
             vllm_version="0.24.0")  # a release whose graph share the launcher keeps (to 0.33)
    args, launcher_env = graph_budget(p.estimate, {})
    assert launcher_env == {"VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS": "0"}
    assert args["gpu-memory-utilization"] == f"{p.estimate.vllm_gpu_memory_utilization:.4f}"
    record_launch(Prepared(spec, p, ["vllm"], {}, 18001, launcher_env=launcher_env))
    rec = json.loads((run_dir("graphs") / "launch.json").read_text())
    assert rec["launcher_env"] == launcher_env
    env = env_from_record(rec)
    assert env["VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS"] == "0" and env["MY_VAR"] == "1"

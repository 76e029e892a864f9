"""A launch's records: launch.json written before the start, the server's environment rebuilt from it."""
from __future__ import annotations

import os
import time
import uuid
from typing import TYPE_CHECKING

from ..engines import vllm as vllm_engine
from ..errors import BadInput
from ..locks import NameLock
from ..runs import ACTIVE, RunState, read_state, run_dir, update_state, write_json
from ..spec import LaunchSpec
from ..supervisor.policy import RestartPolicy
from .prepare import _without_tags
from .status import _alive, _supervisor_alive, effective_state

if TYPE_CHECKING:
    from .prepare import Prepared


def policy_for(spec: LaunchSpec) -> RestartPolicy:
    return RestartPolicy(startup_timeout_s=spec.startup_timeout_s)


def record_launch(prep: Prepared) -> None:
    """launch.json: the resolved launch (no secret values) and its run id, readable by the owner only.
    Takes the name's lock unless prepare(claim=True) took it already."""
    if prep.lock is None:
        prep.lock = NameLock.acquire(prep.spec.name, "launcher launch")
    d = run_dir(prep.spec.name)
    st = read_state(prep.spec.name)
    if st and st.get("state") in ACTIVE and (_supervisor_alive(st) or _alive(st, "server")):
        prep.release_locks()
        prep.lock = None
        raise BadInput(f"a launch named '{prep.spec.name}' is still running ({effective_state(st)}).",
                       hint=f"Stop it with `launcher stop {prep.spec.name}` or pick another --name.")
    d.mkdir(parents=True, exist_ok=True)
    os.chmod(d, 0o700)
    for f in ("state.json",):
        (d / f).unlink(missing_ok=True)
    prep.run_id = uuid.uuid4().hex
    write_json(d / "launch.json", {
        "spec": prep.spec.to_dict(), "argv": prep.argv, "port": prep.port, "run_id": prep.run_id,
        "host": prep.spec.host, "endpoint": f"http://{prep.spec.host}:{prep.port}/v1",
        "env_keys": sorted(set(prep.spec.env) | ({"VLLM_API_KEY"} if prep.spec.api_key_env else set())),
        "estimate": prep.plan.estimate.to_dict() if prep.plan and prep.plan.estimate else None,
        "cpu_kv": prep.plan.cpu_kv if prep.plan else None, "note": prep.note, "cluster": prep.cluster,
        "launcher_env": prep.launcher_env or {},
        "cluster_plan": prep.plan.cluster.to_dict() if prep.plan and prep.plan.cluster else None,
    })
    update_state(prep.spec.name, state=RunState.STARTING, created_at=time.time(), port=prep.port, host=prep.spec.host,
                 endpoint=f"http://{prep.spec.host}:{prep.port}/v1", restarts=0, run_id=prep.run_id)


def env_from_record(rec: dict, spec: LaunchSpec | None = None) -> dict:
    """The server's environment, rebuilt from launch.json (spec.env, the variables the launcher set) and this
    process's environment: what every (re)start of a detached launch gets."""
    spec = spec or LaunchSpec(**rec["spec"])
    inst = vllm_engine.installed()
    env = vllm_engine.server_env(_without_tags(os.environ), spec.env, cpu_build=bool(inst and inst.cpu_build))
    env.update(rec.get("launcher_env") or {})
    if rec.get("cluster"):
        env["RAY_ADDRESS"] = rec["cluster"]["address"]
    return env

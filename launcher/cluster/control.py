"""`launcher cluster up/down`: start and stop the Ray processes of every node in an inventory.

Local nodes run `ray start --block` in their own process group, tagged like a launch's server, so
`down` can stop each node exactly (and several nodes can share this host for testing). Remote nodes
are reached with the inventory's ssh prefix: `ray start` there, `ray stop` on the way down.
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import psutil

from ..errors import BadInput, ClusterError
from ..runs import read_json, write_json
from ..state import home
from .. import process
from .. import health
from .api import GPU_INDEX_RESOURCE, NODE_RESOURCE, Dashboard
from .inventory import Inventory, NodeSpec

if TYPE_CHECKING:
    from collections.abc import Callable


def clusters_dir() -> Path:
    d = home() / "clusters"
    d.mkdir(parents=True, exist_ok=True)
    return d


def record_path(name: str) -> Path:
    return clusters_dir() / name / "cluster.json"


def read_record(name: str) -> dict | None:
    return read_json(record_path(name))


def records() -> list[dict]:
    """Every recorded cluster, by name."""
    return [r for r in (read_json(f) for f in sorted(clusters_dir().glob("*/cluster.json"))) if r]


def ray_binary() -> str:
    here = Path(sys.executable).with_name("ray")
    if here.exists():
        return str(here)
    found = shutil.which("ray")
    if not found:
        raise ClusterError("Ray is not installed here.", hint="pip install 'ray[default]' (or `make setup`).")
    return found


def _node_argv(ray: str, inv: Inventory, name: str, spec: NodeSpec, head: bool, local: bool, index: int) -> list[str]:
    a = [ray, "start"]
    if local:
        a.append("--block")
    if head:
        a += ["--head", "--port", str(inv.head.port), "--include-dashboard", "true",
              "--dashboard-host", "127.0.0.1" if local else "0.0.0.0", "--dashboard-port", str(inv.head.dashboard_port)]
    else:
        a += ["--address", inv.address]
    if local:
        a += ["--node-ip-address", "127.0.0.1"]
        # every local node gets its own ports, so several can share this host (none of them the head's GCS or
        # dashboard port, which the inventory holds but nothing listens on yet)
        taken = {inv.head.port, inv.head.dashboard_port}
        for flag in ("--node-manager-port", "--object-manager-port", "--dashboard-agent-listen-port",
                     "--dashboard-agent-grpc-port", "--metrics-export-port", "--runtime-env-agent-port"):
            a += [flag, str(health.find_free_port(avoid=taken))]
        if head:
            a += ["--ray-client-server-port", str(health.find_free_port(avoid=taken))]
        lo = 20000 + 1000 * index
        a += ["--min-worker-port", str(lo), "--max-worker-port", str(lo + 999)]
    if spec.num_gpus is not None:
        a += ["--num-gpus", str(spec.num_gpus)]
    if spec.num_cpus is not None:
        a += ["--num-cpus", str(spec.num_cpus)]
    if spec.memory is not None:
        from ..units import parse_bytes

        a += ["--memory", str(parse_bytes(spec.memory, what=f"node {name}: memory"))]
    res = {NODE_RESOURCE + name: 1, **spec.resources}
    if spec.cuda_visible_devices:
        # Ray's dashboard agent reports every GPU of the host; these say which ones are this node's
        res.update({f"{GPU_INDEX_RESOURCE}{i.strip()}": 1 for i in spec.cuda_visible_devices.split(",") if i.strip().isdigit()})
    a += ["--resources", json.dumps(res), "--disable-usage-stats"]
    return a


def _node_env(inv: Inventory, spec: NodeSpec) -> dict:
    env = {**inv.env, **spec.env, "RAY_USAGE_STATS_ENABLED": "0"}
    if spec.cuda_visible_devices is not None:
        env["CUDA_VISIBLE_DEVICES"] = spec.cuda_visible_devices
    return env


def _node_ids(dash: Dashboard) -> set[str]:
    try:
        return {n.node_id for n in dash.nodes(with_gpus=False)}
    except ClusterError:
        return set()


def _wait_node(dash: Dashboard, name: str, timeout_s: float, tree: process.ProcessTree | None, log: Path | None,
               before: set[str] = frozenset()) -> str:
    """The id of the node that joined as `name` (not one of `before`: a lost node can look alive for a while)."""
    deadline = time.monotonic() + timeout_s
    while True:
        if tree is not None and tree.exit_code() is not None:
            tail = log.read_text(errors="replace")[-1500:] if log and log.exists() else ""
            raise ClusterError(f"Ray node '{name}' exited during start-up (code {tree.exit_code()}).\n{tail}",
                               hint=f"Full log: {log}")
        try:
            for n in dash.nodes(with_gpus=False):
                if n.alive and n.resources.get(NODE_RESOURCE + name) and n.node_id not in before:
                    return n.node_id
        except ClusterError:
            pass
        if time.monotonic() > deadline:
            raise ClusterError(f"Ray node '{name}' did not join the cluster within {timeout_s:.0f} s.",
                               hint=f"See {log}" if log else None)
        time.sleep(0.5)


def _alive_local(rec_node: dict) -> bool:
    lead = rec_node.get("leader")
    return bool(lead) and process.ProcRef(lead["pid"], lead["create_time"]).alive()


def up(inv: Inventory, timeout_s: float = 120.0, on_node: Callable[[dict], None] | None = None) -> dict:
    """Start every node that is not running yet (head first); returns the cluster record."""
    ray = ray_binary()
    d = clusters_dir() / inv.name
    d.mkdir(parents=True, exist_ok=True)
    rec = read_record(inv.name) or {}
    known = {n["name"]: n for n in rec.get("nodes", [])}
    dash = Dashboard(inv.dashboard, timeout_s=3)
    nodes_out = []
    for i, (name, spec) in enumerate(inv.nodes()):
        head = i == 0
        old = known.get(name)
        if old and old.get("local") and _alive_local(old):
            nodes_out.append(old)
            continue
        if head and not spec.local and dash.alive():
            nodes_out.append({"name": name, "host": spec.host, "local": False, "head": True})
            continue
        if head and spec.local and not health.port_free("127.0.0.1", inv.head.port):
            raise ClusterError(f"port {inv.head.port} is already in use on this host: another Ray head?",
                               hint="Pick another head port in the inventory (or --port), or stop that cluster.")
        before = set() if head else _node_ids(dash)
        argv = _node_argv(ray, inv, name, spec, head, spec.local, i)
        env = _node_env(inv, spec)
        log = d / f"{name}.log"
        entry = {"name": name, "host": spec.host, "local": spec.local, "head": head, "argv": argv, "log": str(log)}
        tree = None
        if spec.local:
            run_id = uuid.uuid4().hex
            tree = process.spawn(argv, {**os.environ, **env}, str(log), run_id)
            entry.update(leader={"pid": tree.leader.pid, "create_time": tree.leader.create_time}, pgid=tree.pgid,
                         run_id=run_id)
        else:
            remote = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
            cmd = f"env {remote} {shlex.quote(inv.ray)} " + " ".join(shlex.quote(x) for x in argv[1:])
            r = subprocess.run([*inv.ssh, spec.host, cmd], capture_output=True, text=True, timeout=timeout_s)
            log.write_text(r.stdout + r.stderr)
            if r.returncode != 0:
                raise ClusterError(f"`ray start` on {spec.host} failed (exit {r.returncode}): "
                                   f"{(r.stderr or r.stdout).strip()[-500:]}")
        entry["node_id"] = _wait_node(dash, name, timeout_s, tree, log, before)
        nodes_out.append(entry)
        # record as we go: a failure half-way still leaves `down` able to stop what started
        write_json(record_path(inv.name), {"name": inv.name, "address": inv.address, "dashboard": inv.dashboard,
                                           "inventory": inv.model_dump(), "nodes": nodes_out + [
                                               n for n in rec.get("nodes", []) if n["name"] not in
                                               {x["name"] for x in nodes_out}]})
        if on_node:
            on_node(entry)
    rec = {"name": inv.name, "address": inv.address, "dashboard": inv.dashboard, "inventory": inv.model_dump(),
           "nodes": nodes_out, "up_at": time.time()}
    write_json(record_path(inv.name), rec)
    return rec


def down(name: str, grace_s: float = 5.0) -> dict:
    """Stop every node of a recorded cluster (workers first) and check that no Ray process of it is left."""
    rec = read_record(name)
    if rec is None:
        raise BadInput(f"no cluster named '{name}'.", hint="See `launcher cluster status`.")
    inv = Inventory.model_validate(rec["inventory"])
    from concurrent.futures import ThreadPoolExecutor

    def stop_node(node: dict) -> list[int]:
        if node.get("local"):
            if not node.get("leader"):
                return []
            tree = node_tree(node)
            # ray start --block stops its node's processes on SIGTERM; the sweep catches the rest
            tree.stop(grace_s=grace_s)
            # then what was started on the node in a session of its own (a server its supervisor there no longer
            # restarts, launching/on_node.py): SIGTERM, then SIGKILL after the grace
            servers = _started_on(node)
            for p in servers:
                _signal(p, signal.SIGTERM)
            _, alive = psutil.wait_procs(servers, timeout=grace_s)
            for p in alive:
                _signal(p, signal.SIGKILL)
            return [r.pid for r in tree.members()] + [p.pid for p in alive if p.is_running()]
        subprocess.run([*inv.ssh, node["host"], f"{shlex.quote(inv.ray)} stop"], capture_output=True,
                       text=True, timeout=120)
        return []

    nodes = list(reversed(rec.get("nodes", [])))
    with ThreadPoolExecutor(max_workers=max(1, len(nodes))) as pool:  # all nodes at once
        results = list(pool.map(stop_node, nodes))
    stopped = [n["name"] for n in nodes]
    left = [pid for r in results for pid in r]
    record_path(name).unlink(missing_ok=True)
    return {"name": name, "stopped": stopped, "left": left}


def node_tree(node: dict) -> process.ProcessTree:
    lead = process.ProcRef(node["leader"]["pid"], node["leader"]["create_time"])
    return process.ProcessTree(leader=lead, pgid=node["pgid"], run_id=node["run_id"])


def _started_on(node: dict) -> list[psutil.Process]:
    """What was started on a local node in a session of its own (a server supervised there, launching/on_node.py):
    it carries the node's tag as LAUNCHER_NODE_RUN_ID."""
    out = []
    for p in psutil.process_iter():
        try:
            if node.get("run_id") and p.environ().get("LAUNCHER_NODE_RUN_ID") == node["run_id"]:
                out.append(p)
        except psutil.Error:
            pass
    return out


def _signal(p: psutil.Process, sig: int) -> None:
    try:
        p.send_signal(sig)
    except psutil.Error:
        pass


def kill_node(name: str, node_name: str) -> None:
    """SIGKILL one local node's processes at once (a node loss, for tests and drills)."""
    rec = read_record(name) or {}
    for n in rec.get("nodes", []):
        if n["name"] == node_name and n.get("local"):
            tree = node_tree(n)
            for ref in tree.members():
                ref.signal(signal.SIGKILL)
            for p in _started_on(n):  # and what was started on the node in a session of its own
                _signal(p, signal.SIGKILL)
            return
    raise BadInput(f"no local node '{node_name}' in cluster '{name}'.")


def inventory_for(address: str) -> Inventory | None:
    """The inventory of the recorded cluster at this address (for what Ray cannot tell, e.g. GPU presets)."""
    for rec in records():
        if rec.get("address") == address and rec.get("inventory"):
            return Inventory.model_validate(rec["inventory"])
    return None


def resolve(address: str | None = None, dashboard: str | None = None, name: str | None = None) -> tuple[str, str]:
    """(GCS address, dashboard URL): --ray-address HOST:PORT, or 'auto' = the named cluster record, else
    $RAY_ADDRESS, else the only recorded cluster."""
    recs = records()
    if address in (None, "", "auto"):
        if name:
            rec = read_record(name)
            if rec is None:
                raise ClusterError(f"no cluster named '{name}' is recorded.", hint="See `launcher cluster status`.")
            return rec["address"], dashboard or rec["dashboard"]
        address = os.environ.get("RAY_ADDRESS")
        if not address:
            if len(recs) == 1:
                return recs[0]["address"], dashboard or recs[0]["dashboard"]
            raise ClusterError("no Ray cluster to use: " + ("several are recorded." if recs else
                               "none is recorded and RAY_ADDRESS is not set."),
                               hint="Start one with `launcher cluster up`, or pass --ray-address HOST:PORT.")
    for rec in recs:
        if rec.get("address") == address:
            return address, dashboard or rec["dashboard"]
    host = address.split("://")[-1].rsplit(":", 1)[0]
    return address, dashboard or f"http://{host}:8265"

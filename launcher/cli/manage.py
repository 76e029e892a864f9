"""`launcher ps / status / logs / stop`: read and act on run records."""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from . import common
from ..errors import ExitCode
from ..runs import RunState

if TYPE_CHECKING:
    from rich.console import Console


def _row(name: str) -> dict:
    from ..launching import effective_state, unsupervised_note
    from ..runs import read_state

    st = read_state(name) or {"name": name}
    eff = effective_state(st)
    if eff == RunState.UNSUPERVISED:
        st = st | {"reason": unsupervised_note(name, st)}
    up = None
    if eff == RunState.READY and st.get("ready_at"):
        up = round(time.time() - float(st["ready_at"]), 1)
    srv = st.get("server") or {}
    return {"name": name, "state": eff, "pid": srv.get("pid"), "supervisor_pid": (st.get("supervisor") or {}).get("pid"),
            "port": st.get("port"), "endpoint": st.get("endpoint"), "restarts": st.get("restarts", 0),
            "uptime_s": up, "reason": st.get("reason", ""), "kv_cache_tokens": _kv_tokens(st)}


def _kv_tokens(st: dict) -> int | None:
    from ..engines.vllm import kv_tokens

    return kv_tokens(st.get("facts") or {})


Logs = Annotated[bool, typer.Option("--logs", help="Delete the logs too (kept under $LAUNCHER_HOME/logs/ otherwise).")]


def ps(json_out: common.Json = False,
       prune: Annotated[bool, typer.Option("--prune", help="Remove the records of launches that ended (STOPPED, FATAL, DEAD).")] = False,
       logs: Logs = False) -> None:
    """List launches and their states (--prune: remove the ended ones first)."""
    from ..runs import ENDED, all_names, remove

    pruned = []
    if prune:
        for n in all_names():
            if _row(n)["state"] in ENDED:
                remove(n, keep_logs=not logs)
                pruned.append(n)
    rows = [_row(n) for n in all_names()]
    _gateway_models(rows)
    if pruned and not json_out:
        common.console(stderr=True).print(f"removed {len(pruned)} ended launch(es): {', '.join(pruned)}")
    common.output({"launches": rows, "pruned": pruned} if prune else rows, json_out, lambda con: _render_ps(rows, con))


def rm(name: Annotated[str, typer.Argument(help="Launch whose record to remove.")], logs: Logs = False,
       json_out: common.Json = False) -> None:
    """Remove the record of a launch that ended (STOPPED, FATAL or DEAD); its logs are kept unless --logs."""
    from ..errors import BadInput
    from ..runs import ENDED, read_state, remove, run_dir

    if read_state(name) is None and not run_dir(name).exists():
        raise BadInput(f"no launch named '{name}'.", hint="See `launcher ps`.")
    state = _row(name)["state"]
    if state not in ENDED:
        raise BadInput(f"'{name}' is {state}; only ended launches are removed.", hint=f"Stop it first: `launcher stop {name}`.")
    kept = remove(name, keep_logs=not logs)
    common.output({"name": name, "removed": True, "logs": str(kept) if kept else None}, json_out,
                  lambda con: con.print(f"removed {name}" + (f"; logs kept in {kept}" if kept else "")))


def status(name: str, json_out: common.Json = False) -> None:
    """State, PID, port, endpoint, restarts and uptime of one launch. Exit 0 when READY, 1 otherwise."""
    from ..errors import BadInput
    from ..runs import read_state

    if read_state(name) is None:
        raise BadInput(f"no launch named '{name}'.", hint="See `launcher ps`.")
    r = _row(name)
    _gateway_models([r], add_missing=False)  # a model of the running gateway: its state there too
    cl = _cluster_view(name)
    if cl is not None:
        r["cluster"] = cl
    common.output(r, json_out, lambda con: _render_status(r, con))
    if r["state"] != RunState.READY:
        raise typer.Exit(ExitCode.FAILED)


def _cluster_view(name: str) -> dict | None:
    """A launch on a Ray cluster: its nodes now (through the dashboard), or as last recorded."""
    from ..cluster.preflight import watch_from_record
    from ..runs import read_json, read_state, run_dir

    rec = (read_json(run_dir(name) / "launch.json") or {}).get("cluster")
    if not rec:
        return None
    st = read_state(name) or {}
    placed = {n["node_id"] for n in (st.get("cluster") or {}).get("nodes", []) if n.get("placement")}
    w = watch_from_record(rec)
    w.nodes = placed
    snap = w.snapshot()
    if "error" in snap and st.get("cluster"):
        snap = st["cluster"] | {"error": snap["error"], "as_of": "last recorded"}
    return snap


def _render_cluster(cl: dict, con: Console) -> None:
    from rich.table import Table

    from ..units import gib

    t = Table(title=f"Ray cluster {cl.get('address')}" + (f" ({cl['error']}; {cl.get('as_of', '')})" if cl.get("error") else ""))
    for c in ("node", "state", "holds the server", "GPUs", "GPU memory used/total GiB"):
        t.add_column(c)
    for n in cl.get("nodes", []):
        mem = ", ".join(f"{g['name']} {gib(g['used_bytes'])}/{gib(g['total_bytes'])}" for g in n.get("gpus", [])) or "-"
        t.add_row(n["label"], "ALIVE" if n["alive"] else "DEAD", "yes" if n.get("placement") else "",
                  f"{int(n['resources'].get('GPU', 0))}", mem)
    con.print(t)


def logs(name: str, follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new lines.")] = False,
         supervisor: Annotated[bool, typer.Option("--supervisor", help="The supervisor's log instead of the server's.")] = False,
         tail: Annotated[Optional[int], typer.Option("--tail", "-n", help="Only the last N lines.")] = None) -> None:
    """Print a launch's server log (or the supervisor's)."""
    import sys

    from ..errors import BadInput
    from ..launching import effective_state
    from ..runs import read_state, run_dir

    path = run_dir(name) / ("supervisor.log" if supervisor else "server.log")
    if not path.exists():
        raise BadInput(f"no log for '{name}'.", hint="See `launcher ps`.")
    with open(path, "rb") as fh:
        data = fh.read()
        lines = data.decode("utf-8", "replace").splitlines(keepends=True)
        sys.stdout.write("".join(lines[-tail:] if tail else lines))
        sys.stdout.flush()
        while follow:
            chunk = fh.read()
            if chunk:
                sys.stdout.write(chunk.decode("utf-8", "replace"))
                sys.stdout.flush()
            else:
                st = read_state(name) or {}
                if effective_state(st) in (RunState.STOPPED, RunState.FATAL, RunState.DEAD):
                    break
                time.sleep(0.3)


def stop(name: Annotated[Optional[str], typer.Argument(help="Launch to stop.")] = None,
         all_: Annotated[bool, typer.Option("--all", help="Stop every launch.")] = False,
         json_out: common.Json = False) -> None:
    """Stop a launch (SIGTERM, wait, SIGKILL the group, sweep every recorded descendant)."""
    from ..errors import BadInput
    from ..launching import effective_state, stop as do_stop
    from ..runs import all_names, read_state

    if not name and not all_:
        raise BadInput("give a launch name or --all.")
    names = all_names() if all_ else [name]
    out = []
    from ..gateway import client

    for n in names:
        st = read_state(n) or {}
        if client.serves(n):  # a model of the running gateway: stopped there alone, never the gateway that hosts it
            res = client.act(n, "stop")
            out.append({"name": n, "state": res.get("state"), "swept": [], "gateway": client.local_url()})
            continue
        if all_ and effective_state(st) in (RunState.STOPPED,) and not st.get("server"):
            continue
        res = do_stop(n)
        row = {"name": n, "state": res.get("state"), "swept": res.get("swept", [])}
        if "ray_leftovers" in res:
            row["ray_leftovers"] = res["ray_leftovers"]
            row["ray_left_behind"] = {k: v for k, v in res["ray_leftovers"].items() if k != "jobs" and v}
        out.append(row)
    common.output(out, json_out, lambda con: _render_stopped(out, con))
    if any(r.get("ray_left_behind") for r in out):
        raise typer.Exit(ExitCode.FAILED)


def _render_stopped(out: list[dict], con: Console) -> None:
    for r in out:
        con.print(f"{r['name']}: {r['state']}" + (f" (killed leftovers {r['swept']})" if r["swept"] else "")
                  + (f" (in the gateway at {r['gateway']}, which keeps serving its other models)" if r.get("gateway") else ""))
        if r.get("ray_leftovers"):
            bad = r["ray_left_behind"]
            con.print(f"  Ray: {'left behind ' + str(bad) if bad else 'no actor, placement group or worker of the launch is left'}")


def _render_status(r: dict, con: Console) -> None:
    for k, v in r.items():
        if k == "gateway" and isinstance(v, dict):
            v = f"{v.get('state')} via {v.get('url')} ({v.get('requests') or 0} requests)"
        if k != "cluster":
            con.print(f"{k:16s} {v if v is not None else '-'}")
    if r.get("cluster") is not None:
        _render_cluster(r["cluster"], con)


def _gateway_models(rows: list[dict], add_missing: bool = True) -> None:
    """The running gateway's models (`launcher serve`): its state of each beside the launch's, and (add_missing) a
    row for each model it serves that has not been started yet."""
    from ..gateway.record import live_gateway

    gw = live_gateway()
    if gw is None:
        return
    by_name = {r["name"]: r for r in rows}
    for name, m in (gw.get("models") or {}).items():
        row = by_name.get(name)
        if row is None and not add_missing:
            continue
        if row is None:
            row = {"name": name, "state": "-", "pid": None, "supervisor_pid": None, "port": None, "endpoint": None,
                   "restarts": 0, "uptime_s": None, "reason": "", "kv_cache_tokens": None}
            rows.append(row)
        row["gateway"] = {"url": gw.get("url"), "state": m.get("state"), "in_flight": m.get("in_flight"),
                          "requests": m.get("requests")}
        if m.get("gpus"):  # the GPUs the gateway placed it on (planned one by one)
            row["gpus"] = ",".join(map(str, m["gpus"]))
        if m.get("node"):  # the Ray node it runs on (serve --ray-address): its address and the start of its id
            row["node"] = f"{m['node']} ({m.get('host')})"


def _render_ps(rows: list[dict], con: Console) -> None:
    from rich.table import Table

    cols = ("name", "state", "pid", "port", "restarts", "uptime_s", "endpoint")
    if any(r.get("gpus") for r in rows):
        cols = cols[:4] + ("gpus",) + cols[4:]
        rows = [{"gpus": None} | r for r in rows]
    if any(r.get("node") for r in rows):
        cols = cols[:4] + ("node",) + cols[4:]
        rows = [{"node": None} | r for r in rows]
    if any(r.get("gateway") for r in rows):
        cols += ("gateway",)
        rows = [r | {"gateway": f"{r['gateway']['state']} via {r['gateway']['url']}" if r.get("gateway") else None}
                for r in rows]
    t = Table()
    for c in cols:  # a narrow terminal folds a long endpoint onto two lines rather than cutting it
        t.add_column(c, overflow="fold", no_wrap=c in ("name", "state", "pid", "port"))
    for r in rows:
        t.add_row(*(str(r[c]) if r[c] is not None else "-" for c in cols))
    con.print(t)
    for r in rows:
        if r["state"] == RunState.UNSUPERVISED:
            con.print(f"{r['name']}: {r['reason']}")

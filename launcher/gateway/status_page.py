"""The gateway's status page at / (and its data at /gateway/status): each model, its state, the memory the estimate
planned against what NVML sees its processes hold, and its last requests. Plain HTML, refreshed every 5 s."""
from __future__ import annotations

import html
import time

GiB = 1 << 30


def snapshot(gw: object) -> dict:
    """What the page shows, as data; gw: the app.Gateway (its backends, options and address)."""
    from ..gpu import memory_by_pid

    seen = memory_by_pid()
    models = []
    for b in gw.backends.by_name.values():
        pids = []
        run = getattr(b.launch, "run", None)  # a server on a Ray node has its supervisor there, not here
        if run is not None and run.tree is not None:
            pids = [run.tree.leader.pid, *run.tree.seen]
        models.append({
            "name": b.name, "state": b.state, "names": list(b.entry.names[1:]), "host": b.host, "port": b.port,
            "in_flight": b.in_flight, "waiting": b.waiting, "requests": b.requests, "pinned": b.entry.pinned,
            "ttl_s": b.entry.ttl_s, "planned_bytes": b.need_bytes, **gw.where_of(b),
            "nvml_bytes": sum(seen.get(p, 0) for p in pids) if seen else None, "error": b.error,
            "last_requests": [{"at": t, "path": p, "status": s, "seconds": d} for t, p, s, d in b.recent]})
    return {"url": gw.url, "gpu": gw.opts.gpu, "budget_bytes": gw.opts.capacity_bytes, "models": models,
            "nvml": bool(seen)}


def _gib(n: int | None) -> str:
    return "-" if n is None else f"{n / GiB:.2f} GiB"


def render(gw: object) -> str:
    s = snapshot(gw)
    rows = []
    for m in s["models"]:
        last = "<br>".join(f"{time.strftime('%H:%M:%S', time.localtime(r['at']))} {html.escape(r['path'])} "
                           f"{r['status']} {r['seconds'] * 1000:.0f} ms" for r in m["last_requests"][:3]) or "-"
        nvml = _gib(m["nvml_bytes"]) if s["nvml"] else "no GPU seen"
        rows.append(
            f"<tr class='{m['state']}'><td><b>{html.escape(m['name'])}</b>"
            f"<div class='names'>{html.escape(', '.join(m['names']))}</div></td>"
            f"<td><span class='state'>{m['state']}</span>{' 📌' if m['pinned'] else ''}"
            f"{'<div class=err>' + html.escape(m['error']) + '</div>' if m['error'] else ''}</td>"
            f"<td>{m['in_flight']} / {m['waiting']}</td><td>{m['requests']}</td>"
            f"<td>{','.join(map(str, m['gpus'])) if m['gpus'] else html.escape(m['node']) if m.get('node') else '-'}</td>"
            f"<td>{_gib(m['planned_bytes'])}</td><td>{nvml}</td><td class='last'>{last}</td></tr>")
    held = sum(m["planned_bytes"] or 0 for m in s["models"] if m["state"] in ("running", "starting"))
    return f"""<!doctype html><html><head><meta charset="utf-8"><meta http-equiv="refresh" content="5">
<title>launcher gateway</title><style>
body{{font-family:system-ui,sans-serif;margin:2em;color:#222}} h1{{font-size:1.4em}}
table{{border-collapse:collapse;width:100%}} th,td{{border-bottom:1px solid #ddd;padding:.5em;text-align:left;vertical-align:top}}
th{{background:#f4f4f4}} .names{{color:#666;font-size:.85em}} .last{{font-size:.85em;color:#444}}
.state{{padding:.15em .5em;border-radius:.6em;background:#ddd}} .running .state{{background:#b7e4c7}}
.starting .state{{background:#ffe8a1}} .sleeping .state{{background:#cfe2ff}} .failed .state{{background:#f5c2c7}}
.err{{color:#a00;font-size:.85em;max-width:30em}}
</style></head><body>
<h1>launcher gateway — {html.escape(s['url'])}</h1>
<p>{len(s['models'])} models · budget {_gib(s['budget_bytes'])} ({'GPU' if s['gpu'] else 'host memory, CPU build'}),
planned for the running ones {_gib(held)}</p>
<table><tr><th>model (other names)</th><th>state</th><th>in flight / waiting</th><th>requests</th>
<th>GPU</th><th>memory planned</th><th>memory NVML sees</th><th>last requests</th></tr>
{''.join(rows)}
</table></body></html>"""

"""From a tune's results.json: which servers to start again for the check, and what to send to each.
One line per server: NAME WORKLOAD@CONCURRENCYxREQUESTS,... "ENGINE ARGS" (the defaults first, with every
workload; then each distinct winner with the workloads it won), at the winner's best load level."""
import json
import sys
from dataclasses import replace

sys.path.insert(0, ".")
from launcher.tune import Candidate, workloads_from_key  # noqa: E402
from launcher.workloads import PRESETS, at_level  # noqa: E402

d = json.load(open(sys.argv[1]))
res = d["result"]
cands = {json.dumps(c["engine_args"], sort_keys=True): Candidate.from_dict(c) for c in res["candidates"]}
tuned = workloads_from_key(d["key"]["workloads"])  # as tuned, overrides included
levels, winners = {}, {}
for w in res["workloads"]:
    if w["winner_engine_args"] is None:
        continue
    wl = replace(PRESETS[w["name"]], workload=tuned[w["name"]], levels=tuple(w["levels"]),
                 slo_ttft_p99_s=w["slo_ttft_p99_s"])
    win = cands[json.dumps(w["winner_engine_args"], sort_keys=True)]
    c = win.best_point(wl).concurrency
    levels[w["name"]] = f"{w['name']}@{c}x{at_level(wl, c, 0).num_requests}"
    if w["winner_engine_args"]:
        winners.setdefault(json.dumps(w["winner_engine_args"], sort_keys=True), []).append(w["name"])
print("dflt", ",".join(levels.values()), '""')
for i, (args, names) in enumerate(winners.items()):
    a = " ".join(f"--{k} {v}" for k, v in json.loads(args).items())
    print(f"tuned{i}", ",".join(levels[n] for n in names), f'"{a}"')

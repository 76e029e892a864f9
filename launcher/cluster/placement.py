"""Reserve, on the real cluster, the placement group vLLM's Ray executor will ask for, see where its bundles
land, and give it back. The only module that imports ray; it runs in its own process:

    python -m launcher.cluster.placement --address HOST:PORT --bundles N --device GPU [--timeout S]

prints one JSON object: {"ok": true, "bundles": [{"index": i, "node_id": ...}], "seconds": s} or
{"ok": false, "reason": "..."}.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time

from ..errors import ClusterError


def try_placement(address: str, bundles: int, device: str = "GPU", timeout_s: float = 15.0) -> dict:
    """Run the check in a subprocess (ray never enters this process)."""
    argv = [sys.executable, "-m", "launcher.cluster.placement", "--address", address, "--bundles", str(bundles),
            "--device", device, "--timeout", str(timeout_s)]
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s + 60)
    except subprocess.TimeoutExpired:
        raise ClusterError(f"the placement check on {address} did not finish.") from None
    for line in reversed(r.stdout.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise ClusterError(f"the placement check on {address} failed (exit {r.returncode}): {r.stderr.strip()[-400:]}")


def _main(argv: list[str]) -> int:
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("--address", required=True)
    ap.add_argument("--bundles", type=int, required=True)
    ap.add_argument("--device", default="GPU")
    ap.add_argument("--timeout", type=float, default=15.0)
    a = ap.parse_args(argv)
    t0 = time.monotonic()
    try:
        import ray
        from ray.util.placement_group import placement_group, placement_group_table, remove_placement_group
    except ImportError:
        print(json.dumps({"ok": False, "reason": "ray is not installed in this environment"}))
        return 0
    try:
        ray.init(address=a.address, log_to_driver=False, logging_level="ERROR", namespace="launcher-preflight")
    except Exception as e:  # noqa: BLE001 - report any connection failure as data
        print(json.dumps({"ok": False, "reason": f"cannot join the Ray cluster at {a.address}: {e}"}))
        return 0
    pg = placement_group([{a.device: 1.0}] * a.bundles, strategy="PACK")
    ready = False
    try:
        ray.get(pg.ready(), timeout=a.timeout)
        ready = True
    except Exception:  # noqa: BLE001 - GetTimeoutError: not placeable now
        pass
    out: dict = {"ok": ready, "seconds": round(time.monotonic() - t0, 2)}
    if ready:
        tab = placement_group_table(pg)
        out["bundles"] = [{"index": int(i), "node_id": nid} for i, nid in sorted(tab["bundles_to_node_id"].items())]
    else:
        out["reason"] = (f"Ray could not place {a.bundles} bundle(s) of {{{a.device}: 1}} within {a.timeout:.0f} s "
                         "(not enough free resources on alive nodes)")
    remove_placement_group(pg)
    ray.shutdown()
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))

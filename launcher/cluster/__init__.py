"""Ray clusters: start/stop them from an inventory (control), read them through Ray's dashboard API (api),
reserve a placement like vLLM does (placement), plan memory across nodes (plan), watch them under a launch (watch).

Only `placement` imports ray, and only in its own subprocess: the CLI and the supervisor talk to the
cluster over HTTP, so a dying cluster can never take the supervisor down with it.
"""

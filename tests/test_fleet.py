"""`launcher plan`: the packing worked by hand (fleet/pack.py, GiB as units), and the command on described GPUs with
catalog models (their footprints from the estimate, no GPU here)."""
import json
import time

import pytest

from conftest import ROOT, cli
from launcher.fleet.pack import Gpu, Need, pack

G = 1 << 30


def gpus(*sizes, node="n1"):
    return [Gpu(node, i, "X", s * G) for i, s in enumerate(sizes)]


def by_name(placements):
    return {p.name: p for p in placements}


def test_pinned_first_then_largest_first_and_one_that_finds_no_room_waits_where_it_fits_after_letting_go():
    """Two 80 GiB GPUs; big (70, pinned) goes first, to GPU 0; a, b, c (30 each): a and b fill GPU 1 to 60 (GPU 0 has
    10 left); c fits awake nowhere, and its home is GPU 1, where letting go of a and b makes 80 (GPU 0 offers 10
    beside the pinned big)."""
    needs = [Need("a", 1, 30 * G, order=0), Need("b", 1, 30 * G, order=1), Need("c", 1, 30 * G, order=2),
             Need("big", 1, 70 * G, pinned=True, order=3)]
    p = by_name(pack(needs, gpus(80, 80)))
    assert (p["big"].gpus, p["big"].awake) == ([0], True)
    assert (p["a"].gpus, p["b"].gpus, p["a"].awake, p["b"].awake) == ([1], [1], True, True)
    assert (p["c"].gpus, p["c"].awake, p["c"].shares_with) == ([1], False, ["a", "b"])
    assert "let go" in p["c"].reason and "30.0 GiB" in p["c"].reason
    assert [x.name for x in pack(needs, gpus(80, 80))] == ["a", "b", "c", "big"]  # the models file's order


def test_each_model_goes_where_it_fills_best_leaving_large_gaps_for_large_models():
    """GPU 0 of 50 and GPU 1 of 35: a 30 goes to GPU 1 (5 left), so that the 45 that comes next fits GPU 0."""
    p = by_name(pack([Need("big45", 1, 45 * G, order=1), Need("small30", 1, 30 * G, order=0)], gpus(50, 35)))
    assert p["small30"].gpus == [1] and p["big45"].gpus == [0] and p["big45"].awake and p["small30"].awake


def test_a_tensor_parallel_model_spans_gpus_of_one_node():
    """tp 2 of 40 each: node n1 has one GPU of 80, node n2 two of 48: it goes to n2 (GPUs 0 and 1)."""
    p = pack([Need("tp2", 2, 40 * G)], [Gpu("n1", 0, "X", 80 * G), Gpu("n2", 0, "X", 48 * G), Gpu("n2", 1, "X", 48 * G)])
    assert (p[0].node, p[0].gpus, p[0].awake) == ("n2", [0, 1], True)
    p = pack([Need("tp4", 4, 10 * G)], gpus(80, 80))
    assert p[0].gpus == [] and p[0].reason == "needs 4 GPUs of one node; the largest node has 2"


def test_a_model_that_fits_on_no_gpu_says_why():
    p = pack([Need("huge", 1, 0, reason="fits on no GPU of this kind alone: weights 131 GiB")], gpus(80))
    assert p[0].gpus == [] and not p[0].awake and "weights 131 GiB" in p[0].reason
    p = pack([Need("pin", 1, 60 * G, pinned=True), Need("x", 1, 30 * G, order=1)], gpus(80))
    assert p[1].gpus == [] and "the most any GPU offers beside the pinned models is 20.0 GiB" in p[1].reason


def test_launcher_plan_on_described_gpus_json_as_scripts_read_it(tmp_path):
    f = tmp_path / "models.yaml"
    f.write_text(
        "models:\n"
        "  - {name: llama-8b, model_name: llama-3.1-instruct, size_in_billions: 8, engine_args: {max-model-len: 32768}}\n"
        "  - {name: qwen-7b, model_name: qwen2.5-instruct, size_in_billions: 7, engine_args: {max-model-len: 32768}}\n"
        "  - {name: qwen-32b, model_name: qwen2.5-instruct, size_in_billions: 32, pinned: true,\n"
        "     engine_args: {max-model-len: 16384}}\n"
        "  - {name: llama-70b, model_name: llama-3.1-instruct, size_in_billions: 70,\n"
        "     engine_args: {max-model-len: 32768, tensor-parallel-size: 2}}\n")
    r = cli("plan", "--models", str(f), "--gpu", "H100-80GB", "--num-gpus", "2", "--json")
    assert r.returncode == 3, r.stderr  # the 70B fits on no pair of GPUs beside the pinned 32B
    d = json.loads(r.stdout)
    m = {x["name"]: x for x in d["models"]}
    assert set(m["llama-8b"]) >= {"name", "node", "gpus", "bytes_per_gpu", "awake", "reason"}
    assert {g["index"] for g in d["gpus"]} == {0, 1} and all(g["total_bytes"] > 80e9 for g in d["gpus"])
    assert m["qwen-32b"]["awake"] and m["llama-8b"]["awake"] and m["qwen-7b"]["awake"]
    assert m["llama-8b"]["gpus"] == m["qwen-7b"]["gpus"] != m["qwen-32b"]["gpus"]
    for g in d["gpus"]:  # never beyond one GPU's memory
        assert g["awake_bytes"] <= g["total_bytes"]
    assert m["llama-70b"]["gpus"] == [] and "2 GPUs of one node" in m["llama-70b"]["reason"]
    # each footprint is what `launcher estimate` plans for that launch at its smallest share, and more than its share
    assert all(x["bytes_per_gpu"] > x["share_bytes"] > 0 for x in d["models"])


def test_twenty_models_on_eight_gpus_are_planned_without_loading_anything(tmp_path):
    kinds = [("llama-3.1-instruct", 8), ("qwen2.5-instruct", 7), ("qwen2.5-instruct", 14), ("qwen2.5-instruct", 3)]
    lines = ["models:"]
    for i in range(20):
        name, size = kinds[i % 4]
        lines.append(f"  - {{name: m{i}, model_name: {name}, size_in_billions: {size}, "
                     f"engine_args: {{max-model-len: {8192 * (1 + i % 3)}}}}}")
    f = tmp_path / "models.yaml"
    f.write_text("\n".join(lines) + "\n")
    t0 = time.monotonic()
    r = cli("plan", "--models", str(f), "--gpu", "H100-80GB", "--num-gpus", "8", "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert len(d["models"]) == 20 and all(m["gpus"] for m in d["models"])
    assert d["seconds"] < 5 and time.monotonic() - t0 < 60  # generous here; benchmarks/plan_time.py measures it


def test_a_cluster_inventory_is_planned_per_node_and_a_tensor_parallel_model_stays_within_one(tmp_path):
    """examples/cluster.yaml: two nodes of 8 H100 80GB, no cluster reached. Two Llama-3.1-70B at tensor parallel 8,
    each on 8 GPUs of one node, never beyond a GPU; one at tensor parallel 16 needs more GPUs than a node has."""
    f = tmp_path / "models.yaml"
    f.write_text(
        "models:\n"
        "  - {name: a, model_name: llama-3.1-instruct, size_in_billions: 70,\n"
        "     engine_args: {max-model-len: 32768, tensor-parallel-size: 8}}\n"
        "  - {name: b, model_name: llama-3.1-instruct, size_in_billions: 70,\n"
        "     engine_args: {max-model-len: 32768, tensor-parallel-size: 8}}\n"
        "  - {name: c, model_name: llama-3.1-instruct, size_in_billions: 70,\n"
        "     engine_args: {max-model-len: 32768, tensor-parallel-size: 16}}\n")
    r = cli("plan", "--models", str(f), "--inventory", str(ROOT / "examples" / "cluster.yaml"), "--json")
    assert r.returncode == 3, r.stderr  # c fits nowhere
    d = json.loads(r.stdout)
    m = {x["name"]: x for x in d["models"]}
    assert {g["node"] for g in d["gpus"]} == {"head", "worker1"} and len(d["gpus"]) == 16
    assert len(m["a"]["gpus"]) == len(m["b"]["gpus"]) == 8 and m["a"]["awake"] and m["b"]["awake"]
    per = {(g["node"], g["index"]): g["awake_bytes"] for g in d["gpus"]}
    assert all(v <= g["total_bytes"] for g in d["gpus"] for k, v in per.items() if k == (g["node"], g["index"]))
    assert m["c"]["gpus"] == [] and m["c"]["reason"] == "needs 16 GPUs of one node; the largest node has 8"


def test_a_pipeline_parallel_model_no_node_holds_goes_stage_by_stage_over_nodes():
    """pp 2 x tp 2 at 30 GiB a GPU: no node has four GPUs with room (n1: three free 80s and a full one; n2 two free);
    stage one takes two GPUs of the node they fill best, stage two two more, on n1 or n2. A tensor-parallel model
    (one stage) never spans nodes; neither does a pipeline one that a single node holds."""
    nodes = [Gpu("n1", i, "X", 80 * G) for i in range(3)] + [Gpu("n2", i, "X", 40 * G) for i in range(2)]
    p = pack([Need("pp", 4, 30 * G, stages=2)], nodes)[0]
    assert p.awake and len(p.stages) == 2 and sum(len(s["gpus"]) for s in p.stages) == 4
    # best fit: the 40 GiB GPUs of n2 first (10 left each), then two of n1
    assert p.stages[0] == {"node": "n2", "gpus": [0, 1]} and p.stages[1]["node"] == "n1"
    assert (p.node, p.gpus) == ("n2", [0, 1])
    from launcher.fleet.plan import FleetPlan

    held = {(g["node"], g["index"]): g["awake"] for g in FleetPlan("f", nodes, [p], "0.24.0", 0).to_dict()["gpus"]}
    assert sum(v == ["pp"] for v in held.values()) == 4 and held[("n2", 0)] == ["pp"]  # every stage's GPUs count it
    assert not pack([Need("tp4", 4, 30 * G)], nodes)[0].awake  # one stage: within one node or not at all
    one = pack([Need("pp2", 2, 30 * G, stages=2)], nodes)[0]
    assert one.awake and one.stages == [] and one.node == "n2"  # a node holds it whole: no stages across
    short = pack([Need("pp3", 6, 30 * G, stages=3)], nodes)[0]
    assert not short.awake and short.stages == []  # 3 stages of 2: n1 holds one, n2 one: no third

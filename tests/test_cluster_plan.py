"""Planning across nodes without a cluster: inventories, rank placement, the node that is short."""
import json

import pytest

from conftest import cli, ray_dashboard_stub
from launcher.cluster import inventory
from launcher.cluster.plan import ClusterNode, assign_ranks, plan_across
from launcher.errors import BadInput
from launcher.estimator import EngineSettings
from launcher.gpu import planned_gpus
from launcher.models import catalog
from launcher.models.config import from_config

INV = """name: lab
head: {host: 10.0.0.1, num_gpus: 1, gpu: H100-80GB}
workers:
  - {host: 10.0.0.2, name: small, num_gpus: 1, gpu: %s}
"""


def _arch(name="llama-3.1-instruct", size="70"):
    e = catalog.lookup(name, size, "pytorch", None)
    return from_config(e.config, source="test")


def test_inventory_rejects_unknown_keys_and_names_nodes(tmp_path):
    p = tmp_path / "inv.yaml"
    p.write_text("head: {host: a, gpus: 2}\n")
    with pytest.raises(BadInput, match="head.gpus"):
        inventory.load(str(p))
    p.write_text(INV % "L40S")
    inv = inventory.load(str(p))
    assert [n for n, _ in inv.nodes()] == ["head", "small"] and inv.address == "10.0.0.1:6379"
    loc = inventory.local(3, gpus_per_node=1)
    assert [s.cuda_visible_devices for _, s in loc.nodes()] == ["0", "1", "2"]


def test_ranks_follow_the_placement_when_ray_gives_one():
    a = ClusterNode("a", "id-a", tuple(planned_gpus(None, "H100", 2)))
    b = ClusterNode("b", "id-b", tuple(planned_gpus(None, "H100", 2)))
    assert [n.label for n in assign_ranks([a, b], 3)] == ["a", "a", "b"]
    assert [n.label for n in assign_ranks([a, b], 2, ["id-b", "id-a"])] == ["b", "a"]


def test_pipeline_across_two_nodes_uses_half_the_layers_per_gpu():
    arch = _arch()
    h100 = tuple(planned_gpus(None, "H100-80GB", 1))
    s = EngineSettings(max_model_len=8192, pipeline_parallel_size=2)
    e, cp = plan_across(arch, s, [ClusterNode("a", "a", h100), ClusterNode("b", "b", h100)], vllm_version=(0, 24, 0))
    assert e.fits and cp.ranks == ["a", "b"] and len(cp.per_node) == 2
    s1 = EngineSettings(max_model_len=8192)
    e1, _ = plan_across(arch, s1, [ClusterNode("a", "a", tuple(planned_gpus("160GiB", None, 1)))], vllm_version=(0, 24, 0))
    assert e.weights_bytes < 0.55 * e1.weights_bytes  # one stage holds about half the model


def test_tensor_group_split_across_nodes_is_flagged():
    h100 = tuple(planned_gpus(None, "H100-80GB", 1))
    _, cp = plan_across(_arch("llama-3.1-instruct", "8"), EngineSettings(tensor_parallel_size=2),
                        [ClusterNode("a", "a", h100), ClusterNode("b", "b", h100)], vllm_version=(0, 24, 0))
    assert any("tensor-parallel group across nodes" in n for n in cp.notes)


def test_estimate_with_an_inventory_names_the_node_that_is_short(tmp_path):
    p = tmp_path / "inv.yaml"
    p.write_text(INV % "L40S")
    args = ("estimate", "--model-name", "llama-3.1-instruct", "--size-in-billions", "70", "--inventory", str(p),
            "--pipeline-parallel-size", "2", "--max-model-len", "8192")
    r = cli(*args, "--json")
    assert r.returncode == 3, r.stderr
    d = json.loads(r.stdout)
    assert d["reason"].startswith("node small: the model does not fit at all")
    assert d["cluster"]["limiting_node"] == "small" and d["cluster"]["ranks"] == ["head", "small"]
    p.write_text(INV % "H100-80GB")
    r = cli(*args, "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    d = json.loads(r.stdout)
    assert d["fits"] and [n["fits"] for n in d["cluster"]["per_node"]] == [True, True]
    r = cli(*args[:-4], "--pipeline-parallel-size", "4")
    assert r.returncode == 3 and "needs 4 GPUs; the cluster has 2" in r.stderr


def test_launch_on_ray_with_the_cpu_build_is_refused_at_once():
    from launcher.engines import vllm as vllm_engine

    inst = vllm_engine.installed()
    if not (inst and inst.cpu_build):
        pytest.skip("the GPU build of vLLM supports Ray")
    r = cli("launch", "--model-path", "examples/tiny-llama", "--ray-address", "127.0.0.1:1")
    assert r.returncode == 2 and "current platform cpu does not support ray" in r.stderr


def test_dashboard_gives_each_node_its_own_gpus(tmp_path):
    """Two Ray nodes on one 2-GPU host: the agent reports both GPUs on each; the launcher_gpu_<i>
    resources set by `cluster up` say which one is whose. Served by a stub of the dashboard's routes."""
    from launcher.cluster.api import Dashboard
    from launcher.cluster.plan import nodes_from_dashboard

    gpus = [{"index": i, "name": "NVIDIA H200", "memoryTotal": 143771, "memoryUsed": 500 + 1000 * i} for i in range(2)]
    nodes = [{"node_id": f"n{i}", "node_ip": "10.0.0.1", "is_head_node": i == 0, "state": "ALIVE",
              "resources_total": {"GPU": 1.0, "CPU": 8.0, f"launcher_node_{'head' if i == 0 else 'worker1'}": 1.0,
                                  f"launcher_gpu_{i}": 1.0}} for i in range(2)]
    srv = ray_dashboard_stub(nodes, [{"raylet": {"nodeId": f"n{i}"}, "gpus": gpus} for i in range(2)])
    try:
        views = Dashboard(f"127.0.0.1:{srv.server_address[1]}").nodes()
    finally:
        srv.shutdown()
    assert [(v.label, [(g.index, g.used_bytes >> 20) for g in v.gpus]) for v in views] == \
        [("head", [(0, 500)]), ("worker1", [(1, 1500)])]
    cn = nodes_from_dashboard(views)
    assert cn[1].gpus[0].free_bytes == (143771 - 1500) << 20


def test_nodes_that_just_joined_are_read_again_until_their_gpu_memory_is_known(monkeypatch):
    from launcher.cluster import plan as cplan
    from launcher.cluster.api import NodeGpu, NodeView

    monkeypatch.setattr("time.sleep", lambda s: None)
    g = NodeGpu(0, "NVIDIA H200", 150 << 30, 1 << 30)
    head = NodeView("id-h", "10.0.0.1", "h", True, True, {"GPU": 1.0, "launcher_node_head": 1.0}, [g])
    late = NodeView("id-w", "10.0.0.1", "w", False, True, {"GPU": 1.0, "launcher_node_worker1": 1.0}, [])
    answers = [[head, late], [head, late], [head, NodeView(**{**late.__dict__, "gpus": [g]})]]

    class Api:
        calls = 0

        def nodes(self):
            Api.calls += 1
            return answers[min(Api.calls, len(answers)) - 1]
    nodes = cplan.live_nodes(Api())
    assert Api.calls == 3 and all(n.gpus for n in nodes)  # the dashboard agent reported on the third read
    Api.calls, answers[2] = 0, [head, late]
    nodes = cplan.live_nodes(Api(), wait_s=0)
    assert [bool(n.gpus) for n in nodes] == [True, False]
    # Ray placed a worker on the node nobody has sized: refused with what to do, not a crash
    s = EngineSettings(pipeline_parallel_size=2, max_model_len=8192)
    e, cp = plan_across(_arch("llama-3.1-instruct", "8"), s, nodes, vllm_version=(0, 24, 0), placement=["id-h", "id-w"])
    assert e is None and "no GPU memory known for node(s) worker1" in " ".join(cp.notes)

"""The gateway on a Ray cluster whose nodes have GPUs (gateway/nodes.py): each GPU as its node's dashboard agent
reports it, models placed per GPU as `launcher plan` places them, a tensor-parallel model on GPUs of one node only,
its server started with that node's GPU indices and the plan's share, a lost node's models homed on the GPUs left.
The numbers are NVML's MiB as Ray's dashboard reports them; the expected homes are worked by hand below."""
import json
from types import SimpleNamespace

from conftest import ray_dashboard_stub
from launcher.engines import vllm as vllm_engine
from launcher.gateway import nodes
from launcher.gateway.gpus import plan_one, room_on_gpus
from launcher.gateway.options import Options
from launcher.gpu import GpuInfo
from launcher.models_file import load_models
from launcher.runs import RunState

MiB, GiB = 1 << 20, 1 << 30
H100 = 81559  # MiB, an H100 80GB HBM3 as NVML reports it


def _gpu(i, free_mib):
    return GpuInfo(i, "NVIDIA H100 80GB HBM3", H100 * MiB, free_mib * MiB, (H100 - free_mib) * MiB)


def _entries(tmp_path, models):
    f = tmp_path / "models.yaml"
    f.write_text(json.dumps({"models": models}))
    return load_models(str(f), vllm_engine.arg_spec(vllm_engine.installed()))


def _llama8(name, **kw):
    return {"name": name, "model_name": "llama-3.1-instruct", "size_in_billions": 8,
            "engine_args": {"max-model-len": 32768, **kw}}


def test_a_tensor_parallel_model_goes_on_gpus_of_one_node_never_one_gpu_of_each(tmp_path):
    # node a: GPU 0 free, GPU 1 nearly full (another tenant); node b: GPU 0 free, GPU 1 nearly full.
    # Two free GPUs exist, one on each node: a TP-2 model must not get them (one server runs on one node).
    gpus = {"a|ida#0": _gpu(0, 81000), "a|ida#1": _gpu(1, 2000), "b|idb#0": _gpu(0, 81000), "b|idb#1": _gpu(1, 2000)}
    h = nodes.plan_node_gpus(_entries(tmp_path, [_llama8("tp2", **{"tensor-parallel-size": 2})]), gpus)
    assert "tp2" not in h.home and "tp2" in h.why_not
    # with node b's second GPU free, it goes on both GPUs of b
    gpus["b|idb#1"] = _gpu(1, 81000)
    h = nodes.plan_node_gpus(_entries(tmp_path, [_llama8("tp2", **{"tensor-parallel-size": 2})]), gpus)
    assert h.home == {"tp2": ("b|idb#0", "b|idb#1")} and h.on_nodes
    # a move looks only at GPUs of one node
    assert h.others(("b|idb#0", "b|idb#1")) == [("a|ida#0", "a|ida#1")]


def test_models_fill_the_gpus_each_node_reports_and_share_a_gpu_where_both_fit(tmp_path):
    # two 8B models at 32k need about 24 GiB each (a third of an H100): both on node a's one free GPU, a's GPU 1
    # (10 GiB free) holds neither, node b's GPU is not needed
    gpus = {"a|ida#0": _gpu(0, 80000), "a|ida#1": _gpu(1, 10240), "b|idb#0": _gpu(0, 60000)}
    h = nodes.plan_node_gpus(_entries(tmp_path, [_llama8("x"), _llama8("y")]), gpus)
    assert set(h.home.values()) <= {("a|ida#0",), ("b|idb#0",)} and not h.why_not
    for name, (d,) in h.home.items():
        assert 20 * GiB < h.share[name] < h.per_gpu[name] < gpus[d].free_bytes
    # a model added later goes on GPUs of one node that each offer its size; none that does: the reason
    late = _entries(tmp_path, [_llama8("late", **{"tensor-parallel-size": 4})])[0]
    plan_one(h, late)
    assert "late" not in h.home and "GPU(s) of one node" in h.why_not["late"]


def _starter(gpus, homes=None):
    s = nodes.RayStarter(Options(capacity_bytes=0, gpu=True),
                         nodes.Cluster("127.0.0.1:1", "http://127.0.0.1:2", "/nonexistent"))
    s.gpus, s.homes = dict(gpus), homes
    return s


def test_its_server_gets_that_nodes_gpu_by_index_and_the_plans_share_of_it(tmp_path):
    gpus = {"a|ida#0": _gpu(0, 2000), "a|ida#3": _gpu(3, 81000)}
    entries = _entries(tmp_path, [_llama8("x")])
    h = nodes.plan_node_gpus(entries, gpus)
    assert h.home == {"x": ("a|ida#3",)}
    s = _starter(gpus, h)
    share = h.share["x"]
    assert 22 * GiB < share < 26 * GiB  # weights 14.96 GiB, 4 GiB of KV cache at 32k, activation and graphs
    prep = s.prepare(entries[0], "key", False, (h.home["x"], share))
    assert prep.env["CUDA_VISIBLE_DEVICES"] == "3" and prep.env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    assert s.node_of["x"] == "a|ida"
    argv = prep.argv
    # the share of an 81,559 MiB GPU as vLLM's --gpu-memory-utilization: share / the total CUDA reports, which is
    # less than NVML's by the driver's reserve (under 1 GiB: vLLM logs 79.18 GiB on an H100 80GB NVML calls 79.65)
    util = float(argv[argv.index("--gpu-memory-utilization") + 1])
    assert (share >> 20) / H100 < util <= (share >> 20) / (H100 - 1024)
    assert "--enable-sleep-mode" in argv
    # planned from the node's GPU, not from this host's (which has none): the estimate names its size
    assert prep.plan.estimate.gpus[0]["total_bytes"] == H100 * MiB


def test_the_job_sent_to_the_node_names_its_gpus_even_where_this_host_has_the_same(tmp_path, monkeypatch):
    from launcher.launching import node_launch

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")  # the gateway's own host happens to say the same
    monkeypatch.setenv("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    gpus = {"a|ida#3": _gpu(3, 81000)}
    entries = _entries(tmp_path, [_llama8("x")])
    s = _starter(gpus, nodes.plan_node_gpus(entries, gpus))
    s.cluster = nodes.Cluster("127.0.0.1:1", "http://127.0.0.1:2", str(tmp_path / "home"))
    prep = s.prepare(entries[0], "key", False, (("a|ida#3",), 24 * GiB))
    monkeypatch.setattr(node_launch, "_follower", lambda *a: SimpleNamespace(stdout=[], wait=lambda: 0))
    launch = s.launch(prep)
    job = json.loads((tmp_path / "home" / "jobs" / "x.json").read_text())
    assert job["env"]["CUDA_VISIBLE_DEVICES"] == "3" and job["env"]["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    assert launch.device == "a|ida"


def test_a_lost_nodes_models_get_gpus_of_a_node_left_and_known_gpus_keep_what_they_offered(monkeypatch, tmp_path):
    gpus = {"a|ida#0": _gpu(0, 81000), "b|idb#0": _gpu(0, 81000)}
    entries = _entries(tmp_path, [_llama8("x"), _llama8("y")])
    h = nodes.plan_node_gpus(entries, gpus)
    assert h.home["x"] == h.home["y"]  # both fit on one GPU: best fit keeps the other free
    full = h.home["x"][0]
    other = next(d for d in gpus if d != full)
    s = _starter(gpus, h)
    s._needs = {e.name: (e, None) for e in entries}
    # Ray reports the GPU our two models run on as nearly full now: what it offered at first stays its capacity
    now = {full: _gpu(0, 30000), other: gpus[other]}
    monkeypatch.setattr(nodes, "node_gpus", lambda cluster, wait_s=0: dict(now))
    s.refresh(h)
    assert h.capacity == {full: 81000 * MiB, other: 81000 * MiB}
    # the node of x and y is lost with x's launch: both homed on the GPU of the node left
    s.started["x"] = SimpleNamespace(state=RunState.FATAL, failure=lambda: "node lost: ActorDiedError",
                                     device=nodes.node_of(full))
    del now[full]
    s.refresh(h)
    assert h.capacity == {other: 81000 * MiB} and h.home == {"x": (other,), "y": (other,)}
    # a node that joins is offered with what it reports free
    now["c|idc#1"] = _gpu(1, 50000)
    s.refresh(h)
    assert h.capacity["c|idc#1"] == 50000 * MiB


def test_room_is_made_only_on_the_gpu_of_that_node(tmp_path):
    from launcher.gateway.placement import Resident

    gpus = {"a|ida#0": _gpu(0, 40000), "b|idb#0": _gpu(0, 40000)}
    h = nodes.plan_node_gpus(_entries(tmp_path, [_llama8("x"), _llama8("y")]), gpus)
    assert h.home["x"] != h.home["y"]  # 2 x ~24 GiB does not fit in 39 GiB: one on each node
    need = h.per_gpu["y"]
    # z comes later, homed with y; idle x on the other node must not be let go for it, idle y must
    h.home["z"], h.per_gpu["z"] = h.home["y"], need
    residents = [Resident("x", need, 0, False, 1.0, False, True, 2 * GiB, devices=h.home["x"]),
                 Resident("y", need, 0, False, 2.0, False, True, 2 * GiB, devices=h.home["y"])]
    b = SimpleNamespace(name="z", gpus=None)
    room, where = room_on_gpus(h, b, need, 0, residents)
    assert room.fits and where == h.home["y"] and [s.name for s in room.steps] == ["y"]


def test_serve_on_a_cluster_of_gpu_nodes_plans_each_gpu_its_node_reports(tmp_path, monkeypatch):
    """`launcher serve --ray-address` with GPU nodes (it was refused before): sleep mode on, each model homed on a
    GPU of a node, the pooled budget the nodes' free GPU memory. Ray's dashboard stubbed with its routes' shapes."""
    from launcher.gateway import run

    monkeypatch.setenv("LAUNCHER_HOME", str(tmp_path / "home"))
    gpus = [{"index": 0, "name": "NVIDIA H100 80GB HBM3", "memoryTotal": H100, "memoryUsed": 559}]
    nodes_json = [{"node_id": f"n{i}", "node_ip": "10.0.0.1", "is_head_node": i == 0, "state": "ALIVE",
                   "resources_total": {"GPU": 1.0, "CPU": 8.0, f"launcher_node_w{i}": 1.0, "launcher_gpu_0": 1.0}}
                  for i in range(2)]
    srv = ray_dashboard_stub(nodes_json, [{"raylet": {"nodeId": f"n{i}"}, "gpus": gpus} for i in range(2)])
    f = tmp_path / "models.yaml"
    f.write_text(json.dumps({"models": [_llama8("x"), _llama8("y", **{"max-model-len": 131072})]}))
    try:
        gw = run.build(run.GatewaySettings(str(f), ray_address="127.0.0.1:6379",
                                           ray_dashboard=f"http://127.0.0.1:{srv.server_address[1]}"))
    finally:
        srv.shutdown()
    h = gw.opts.homes
    assert gw.opts.gpu and h.on_nodes and not h.by_memory
    assert gw.opts.capacity_bytes == 2 * (H100 - 559) * MiB
    assert set(h.capacity) == {"w0|n0#0", "w1|n1#0"} and set(h.home) == {"x", "y"}
    assert gw.opts.host_budget_bytes is None  # the nodes' host memory is theirs


def test_a_gateway_started_again_adopts_a_server_with_the_gpus_its_node_gave_it(monkeypatch):
    """The actor reports its server's CUDA_VISIBLE_DEVICES (on_node.NodeHost.state): the adopting gateway counts the
    model on those GPUs of that node, not on the node as a whole."""
    from launcher.launching import node_launch

    gpus = {"w0|n0#0": _gpu(0, 81000), "w0|n0#2": _gpu(2, 81000)}
    s = _starter(gpus)
    adopted = SimpleNamespace(node_id="n0", gpus="0,2", port=4321, host="10.0.0.1", devices=())
    monkeypatch.setattr(node_launch.NodeLaunch, "adopt", classmethod(lambda cls, *a, **k: adopted))
    monkeypatch.setattr(s, "alive_actors", lambda: {"x"})
    monkeypatch.setattr(nodes, "node_memory", lambda cluster: {"w0|n0": 64 * GiB})
    launch, port, _ = s.adopt("x", "key")
    assert launch.device == "w0|n0" and launch.devices == ("w0|n0#0", "w0|n0#2") and port == 4321

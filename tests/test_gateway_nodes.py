"""The gateway's plan on a Ray cluster's nodes (gateway/nodes.py), worked by hand: each node's memory as Ray reports
it, models placed as `launcher plan` places them on GPUs (pinned, preloaded, then the largest, each where it fits
best), a lost node's models homed again on the nodes left, a node a launch was lost with never offered again."""
from types import SimpleNamespace

from launcher.gateway import nodes
from launcher.runs import RunState

GiB = 1 << 30


def test_models_go_where_they_fit_best_pinned_first_and_one_no_node_holds_says_why():
    h = nodes.plan_nodes([("y", 2 * GiB, False, False), ("x", int(2.5 * GiB), True, False),
                          ("z", int(1.5 * GiB), False, False), ("w", 5 * GiB, False, False)],
                         {"A": 4 * GiB, "B": 3 * GiB})
    # x (pinned) first: A would keep 1.5 GiB, B 0.5: B; then y (2): only A; then z (1.5): A keeps 2, fits
    assert h.home == {"x": ("B",), "y": ("A",), "z": ("A",)}
    assert h.why_not == {"w": "needs 5.00 GiB and the largest node offers 4.00 GiB (Ray's memory resource of each "
                              "node: `ray start --memory`)"}
    assert h.by_memory and h.per_gpu["z"] == int(1.5 * GiB)


def test_a_model_with_no_room_beside_the_others_waits_where_the_least_must_be_freed():
    h = nodes.plan_nodes([(n, 2 * GiB, False, False) for n in ("a", "b", "c")], {"n1": 3 * GiB, "n2": 4 * GiB})
    # a: n1 would keep 1, n2 2: n1; b: n2; c: room on neither (1 and 2 left): home on n2, where the least is missing
    assert h.home == {"a": ("n1",), "b": ("n2",), "c": ("n2",)} and not h.why_not


def _starter(monkeypatch, reported):
    monkeypatch.setattr(nodes, "node_memory", lambda cluster: dict(reported))
    return nodes.RayStarter(SimpleNamespace(), nodes.Cluster("127.0.0.1:1", "http://127.0.0.1:2", "/nonexistent"))


def test_a_lost_nodes_models_get_a_home_on_the_nodes_left_and_a_joined_node_is_offered(monkeypatch):
    h = nodes.plan_nodes([("a", 2 * GiB, False, False), ("b", 2 * GiB, False, False), ("big", 5 * GiB, False, False)],
                         {"n1": 3 * GiB, "n2": 3 * GiB})
    assert h.home == {"a": ("n1",), "b": ("n2",)} and "big" in h.why_not
    _starter(monkeypatch, {"n1": 3 * GiB, "n3": 6 * GiB}).refresh(h)  # n2 lost, n3 joined
    assert h.capacity == {"n1": 3 * GiB, "n3": 6 * GiB}
    assert h.home == {"a": ("n1",), "b": ("n3",), "big": ("n3",)} and not h.why_not


def test_a_node_a_launch_was_lost_with_is_not_offered_while_ray_still_reports_it(monkeypatch):
    """Ray's dashboard says a node is dead some seconds after its launches' actors are lost with it: a start in that
    time would go to the dead node and fail again."""
    h = nodes.plan_nodes([("a", 2 * GiB, False, False)], {"n1": 3 * GiB, "n2": 3 * GiB})
    s = _starter(monkeypatch, {"n1": 3 * GiB, "n2": 3 * GiB})
    s.started["a"] = SimpleNamespace(state=RunState.FATAL, failure=lambda: "node lost: ActorUnavailableError",
                                     device=h.home["a"][0])
    s.refresh(h)
    assert h.capacity == {"n2": 3 * GiB} and h.home == {"a": ("n2",)}


def test_a_model_added_while_serving_gets_the_largest_node_that_holds_it_or_the_reason():
    from launcher.gateway.gpus import plan_one

    h = nodes.plan_nodes([("a", 2 * GiB, False, False)], {"n1": 3 * GiB, "n2": 4 * GiB})
    plan_one(h, SimpleNamespace(name="late"), 3 * GiB)  # room is made there at its first request
    assert h.home["late"] == ("n2",) and h.per_gpu["late"] == 3 * GiB
    plan_one(h, SimpleNamespace(name="huge"), 5 * GiB)
    assert "huge" not in h.home and h.why_not["huge"] == "needs 5.00 GiB: more than any node offers"

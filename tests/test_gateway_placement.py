"""Which idle models make room for the next one (gateway/placement.py), worked by hand in GiB."""
from launcher.gateway.placement import Resident, Step, make_room

G = 1 << 30


def r(name, gib, used, **kw):
    return Resident(name, int(gib * G), last_used=used, **kw)


def test_fits_beside_the_running_ones_touches_nothing():
    # 40 GiB budget, 10 + 12 held: 18 free, 16 needed
    room = make_room(16 * G, 40 * G, [r("a", 10, 1.0), r("b", 12, 2.0)])
    assert room.fits and room.steps == ()


def test_least_recently_used_idle_model_goes_first_and_only_as_many_as_needed():
    # 40 budget, a 10 (used at t=3), b 12 (t=1), c 14 (t=2): 4 free; 20 needed -> b (12: 16 free) then c (14: 30)
    room = make_room(20 * G, 40 * G, [r("a", 10, 3.0), r("b", 12, 1.0), r("c", 14, 2.0)])
    assert room.fits and [s.name for s in room.steps] == ["b", "c"]
    assert all(s.action == "stop" for s in room.steps)


def test_busy_and_pinned_models_are_never_touched():
    # b (oldest) serves a request, c is pinned: only a may go; 4 + 10 = 14 free < 20 needed -> refused, nothing done
    room = make_room(20 * G, 40 * G, [r("a", 10, 3.0), r("b", 12, 1.0, in_flight=1), r("c", 14, 2.0, pinned=True)])
    assert not room.fits and room.steps == ()
    assert "serving a request: b" in room.reason and "pinned: c" in room.reason
    # once b drains there would be room (4 + 10 + 12 = 26): the gateway waits instead of refusing
    assert room.wait


def test_cannot_fit_even_alone_is_refused_without_waiting():
    room = make_room(50 * G, 40 * G, [r("a", 10, 1.0, in_flight=2)])
    assert not room.fits and not room.wait and "cannot fit even alone" in room.reason


def test_sleep_where_the_model_can_and_count_what_sleep_keeps():
    # 40 budget, a 30 held (can sleep, keeps 1 asleep): 10 free; 25 needed -> sleeping a frees 29: 39 free
    room = make_room(25 * G, 40 * G, [r("a", 30, 1.0, can_sleep=True, sleeping_bytes=1 * G)])
    assert room.fits and room.steps == (Step("a", "sleep", 29 * G),)


def test_a_sleeping_model_is_stopped_before_an_awake_one_is_slept():
    # 40 budget: a asleep keeps 2 (held 2), b awake 30 (keeps 1 asleep): 8 free; 9 needed -> stop a (2): 10 free
    room = make_room(9 * G, 40 * G, [r("a", 2, 5.0, sleeping=True, can_sleep=True, sleeping_bytes=2 * G),
                                     r("b", 30, 1.0, can_sleep=True, sleeping_bytes=1 * G)])
    assert room.fits and room.steps == (Step("a", "stop", 2 * G),)


def test_the_model_being_started_is_not_its_own_room():
    room = make_room(20 * G, 30 * G, [r("x", 20, 0.0)], starting="x")
    assert not room.fits


def test_what_a_model_keeps_asleep_is_planned_from_its_estimate():
    """Measured on an H100 (vLLM 0.26.0, docs/gateway-gpu-table.md): an 8B model asleep kept 1.91 GiB, its CUDA
    context, graph pool and non-torch memory; the plan is what vLLM takes beside its share plus its non-torch memory,
    per GPU (the estimate of that launch: 2.303 + 0.230 GiB). The gateway had assumed 1 GiB for every model: low."""
    from launcher.gateway.lifecycle import Lifecycle, Phase
    from launcher.gateway.model import Backend
    from launcher.gateway.options import Options
    from launcher.models_file import ModelEntry
    from launcher.gateway.sizing import asleep_of

    est = {"requested_bytes": int(29.993 * G), "outside_budget_bytes": int(2.303 * G),
           "non_torch_bytes": int(0.230 * G), "gpus": [{"index": 0}]}
    assert asleep_of(est) == int(2.303 * G) + int(0.230 * G) > int(1.91 * G)
    assert asleep_of({**est, "gpus": [{"index": 0}, {"index": 1}]}) == 2 * asleep_of(est)
    assert asleep_of(None) is None
    opts = Options(capacity_bytes=80 * G, gpu=True)
    entry = ModelEntry.__new__(ModelEntry)
    b = Backend(entry=entry, key="k", life=Lifecycle("m", phase=Phase.SLEEPING), need_bytes=int(32.3 * G), asleep_bytes=asleep_of(est))
    from launcher.gateway.room import kept_asleep

    assert kept_asleep(b, opts) == asleep_of(est)
    b.asleep_bytes = None  # nothing planned (an adopted launch without an estimate): the measured default
    assert kept_asleep(b, opts) == opts.sleeping_bytes == 2 * G > int(1.91 * G)


# per GPU (make_room_on): the case, two 80 GiB GPUs each 60 GiB full, a 30 GiB model to start
def test_two_gpus_each_three_quarters_full_hold_no_room_for_one_more_on_either():
    from launcher.gateway.placement import make_room_on

    cap = {0: 80 * G, 1: 80 * G}
    res = [r("a", 60, 1.0, devices=(0,)), r("b", 60, 2.0, devices=(1,))]
    # pooled, 40 GiB are free in all and nothing would be let go; per GPU, 20 on each: its home GPU 0 must lose a
    room = make_room_on({0: 30 * G}, cap, res)
    assert room.fits and [s.name for s in room.steps] == ["a"]  # only the model on GPU 0 is let go, not b (older)
    assert make_room(30 * G, 160 * G, [r("a", 60, 1.0), r("b", 60, 2.0)]).steps == ()  # the pooled budget sees room


def test_a_model_on_another_gpu_is_never_let_go_for_this_one():
    from launcher.gateway.placement import make_room_on

    # GPU 0: a (40, busy) + b (30, idle, used last); GPU 1: c (70, idle, least recently used of all)
    res = [r("a", 40, 1.0, devices=(0,), in_flight=1), r("b", 30, 5.0, devices=(0,)), r("c", 70, 0.0, devices=(1,))]
    room = make_room_on({0: 35 * G}, {0: 80 * G, 1: 80 * G}, res)
    assert room.fits and [s.name for s in room.steps] == ["b"]  # 10 free + 30 = 40 >= 35; c untouched


def test_a_tensor_parallel_model_needs_room_on_each_of_its_gpus():
    from launcher.gateway.placement import make_room_on

    # needs 50 on GPUs 0 and 1; GPU 0 holds x (40), GPU 1 holds y (20, least recent) and z (20);
    # w spans both (10 on each, used last): free 40 / 40; letting go y: GPU 1 60; x: GPU 0 80 -> fits
    res = [r("x", 40, 2.0, devices=(0,)), r("y", 20, 1.0, devices=(1,)), r("z", 20, 3.0, devices=(1,)),
           r("w", 10, 9.0, devices=(0, 1))]
    room = make_room_on({0: 50 * G, 1: 50 * G}, {0: 90 * G, 1: 90 * G}, res)
    assert room.fits and [s.name for s in room.steps] == ["y", "x"]
    # a model busy on GPU 1 and the rest not enough: wait only where draining it would make room on both GPUs
    busy = [r("x", 40, 2.0, devices=(0,)), r("y", 60, 1.0, devices=(1,), in_flight=1)]
    wait = make_room_on({0: 50 * G, 1: 50 * G}, {0: 90 * G, 1: 90 * G}, busy)
    assert not wait.fits and wait.wait and "on GPU 1: it needs 50.00 GiB" in wait.reason
    pinned = [r("x", 40, 2.0, devices=(0,)), r("y", 60, 1.0, devices=(1,), pinned=True)]
    no = make_room_on({0: 50 * G, 1: 50 * G}, {0: 90 * G, 1: 90 * G}, pinned)
    assert not no.fits and not no.wait and "pinned: y" in no.reason

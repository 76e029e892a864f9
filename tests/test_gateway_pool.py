"""The gateway's pool and each model's lifecycle against a fake launch (as tests/test_machine.py does for the
supervisor): starts, room made, the supervisor's READY/BACKOFF/FATAL followed, failed starts, the retry window,
ttl expiry and its faults, no lock across a start, and a models file applied while models serve. The fake launch
stands where launching.inprocess.Launch stands; the real engine's side is in tests/test_gateway_real.py."""
import asyncio
import threading
import time

import pytest

from launcher.gateway import housekeeping
from launcher.gateway.backends import Backends
from launcher.gateway.lifecycle import Phase
from launcher.gateway.metrics import GatewayMetrics
from launcher.gateway.model import GatewayError
from launcher.models_file import ModelEntry
from launcher.gateway.options import Options
from launcher.gateway.reload import FileWatch, apply, diff
from launcher.spec import LaunchSpec
from launcher.supervisor.machine import State

G = 1 << 30


class FakeLaunch:
    """A launch whose supervisor the test drives: `state`, `alive`, wait_ready, failure, stop."""

    def __init__(self, name, starter):
        self.name, self.starter = name, starter
        self.state, self.alive, self.stopped_at = State.STARTING, True, None
        self.why = ""

    def wait_ready(self, timeout_s, poll_s=0.01):
        gate = self.starter.gates.get(self.name)
        if gate is not None:
            gate.wait(timeout_s)
        if self.name in self.starter.fail:
            self.state, self.why = State.FATAL, self.starter.fail[self.name]
        else:
            self.state = State.READY
        return self.state

    def failure(self):
        return self.why or self.state.value

    def stop(self, timeout_s=None):
        if self.name in self.starter.stop_raises:
            raise RuntimeError(self.starter.stop_raises[self.name])
        self.state, self.alive, self.stopped_at = State.STOPPED, False, time.monotonic()
        return self.state

    # what the test does to it, as a real supervisor would
    def crash_for_good(self, why):
        self.state, self.alive, self.why = State.FATAL, False, why


class FakePrep:
    def __init__(self, port):
        self.port, self.released = port, False

    def release_locks(self):
        self.released = True


class FakeStarter:
    def __init__(self, need):
        self.need_by_name, self.launches, self.gates, self.fail, self.stop_raises = need, [], {}, {}, {}
        self.host_by_name, self.placed = {}, {}

    def need(self, entry, key):
        return self.need_by_name[entry.name], None, self.host_by_name.get(entry.name)

    def prepare(self, entry, key, claim, placed=None):
        self.placed[entry.name] = placed  # (GPU indices, share) where GPUs are planned one by one
        return FakePrep(9000 + len(self.launches))

    def refresh(self, homes):  # the GPUs of one host stay what the gateway started with
        pass

    def adopt(self, name, key):
        return None


def entry(name, **kw):
    return ModelEntry(LaunchSpec(name=name, model_path="/models/" + name), **kw)


def pool_of(entries, capacity_gib, need_gib=1.0, gpu_opts=False, **opts):
    starter = FakeStarter({e.name: int(need_gib * G) for e in entries})
    opts.setdefault("min_stay_s", 0.0)  # the fairness tests below set their own
    opts.setdefault("sleeping_bytes", 0)  # asleep it keeps nothing on the device here
    opts.setdefault("first_sleep_after_s", None)  # the first sleep paid early: its own tests below
    pool = Backends(entries, Options(capacity_bytes=int(capacity_gib * G), gpu=gpu_opts, **opts), GatewayMetrics(),
                    starter)

    # the model a prepared launch is for: the one the pool is starting (its phase is starting)
    def launch(prep):
        name = next(b.name for b in pool.by_name.values() if b.life.phase == Phase.STARTING and b.launch is None)
        la = FakeLaunch(name, starter)
        starter.launches.append(la)
        return la

    starter.launch = launch
    return pool, starter


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 20))


def metric(pool, name, **labels):
    return pool.metrics.registry.get_sample_value(name, labels) or 0.0


def test_a_request_starts_its_model_and_another_model_lets_the_idle_one_go():
    async def go():
        pool, starter = pool_of([entry("a"), entry("b")], capacity_gib=1.5)
        a = await pool.acquire("a")
        assert a.life.phase == Phase.RUNNING and a.in_flight == 1 and a.port == 9000
        pool.release(a, "/v1/completions", 200, 0.1)
        b = await pool.acquire("b")
        assert b.life.phase == Phase.RUNNING and a.life.phase == Phase.STOPPED
        assert starter.launches[0].stopped_at is not None and a.launch is None
        assert metric(pool, "launcher_gateway_evictions_total", model="a", action="stop") == 1
        assert metric(pool, "launcher_gateway_model_state", model="a", state="stopped") == 1
    run(go())


def test_a_model_serving_a_request_is_not_let_go_the_other_start_waits_for_it_to_finish():
    async def go():
        pool, starter = pool_of([entry("a"), entry("b")], capacity_gib=1.5)
        a = await pool.acquire("a")
        want_b = asyncio.get_running_loop().create_task(pool.acquire("b"))
        await asyncio.sleep(0.3)
        assert not want_b.done() and a.life.phase == Phase.RUNNING and len(starter.launches) == 1
        pool.release(a, "/v1/completions", 200, 0.3)
        b = await want_b
        assert b.life.phase == Phase.RUNNING and a.life.phase == Phase.STOPPED
    run(go())


def test_a_fatal_supervisor_makes_the_model_failed_with_503_and_its_cause_then_a_fresh_start_after_the_window():
    async def go():
        pool, starter = pool_of([entry("a")], capacity_gib=4, failed_retry_s=0.3)
        a = await pool.acquire("a")
        pool.release(a, "/v1/completions", 200, 0.1)
        starter.launches[0].crash_for_good("server killed by SIGKILL (3 failures in a row, giving up)")
        a.sync()  # what housekeeping does every second
        assert a.life.phase == Phase.FAILED and "giving up" in a.error and a.launch is None
        with pytest.raises(GatewayError) as e:
            await pool.acquire("a")
        assert e.value.status == 503 and e.value.code == "model_failed" and "SIGKILL" in e.value.message
        assert 1 <= e.value.retry_after_s <= 1
        await asyncio.sleep(0.35)
        a2 = await pool.acquire("a")  # the window is over: this request starts it afresh
        assert a2 is a and a.life.phase == Phase.RUNNING and len(starter.launches) == 2 and a.error is None
    run(go())


def test_a_start_that_fails_is_failed_with_vllms_cause_and_the_waiting_requests_get_503():
    async def go():
        pool, starter = pool_of([entry("a")], capacity_gib=4)
        starter.fail["a"] = "FATAL [oom: CUDA out of memory. Tried to allocate 2.00 GiB]"
        with pytest.raises(GatewayError) as e:
            await pool.acquire("a")
        assert e.value.status == 503 and "CUDA out of memory" in e.value.message
        assert pool.by_name["a"].life.phase == Phase.FAILED and not starter.launches[0].alive
    run(go())


def test_a_server_restarted_by_its_supervisor_is_restarting_with_503_then_running():
    async def go():
        pool, starter = pool_of([entry("a")], capacity_gib=4)
        a = await pool.acquire("a")
        pool.release(a, "/v1/completions", 200, 0.1)
        la = starter.launches[0]
        la.state, la.why = State.BACKOFF, "server killed by SIGKILL after ready"
        with pytest.raises(GatewayError) as e:
            await pool.acquire("a")  # acquire follows the supervisor first
        assert e.value.code == "model_restarting" and "SIGKILL" in e.value.message
        la.state = State.READY
        assert (await pool.acquire("a")).life.phase == Phase.RUNNING and len(starter.launches) == 1
    run(go())


def test_a_start_under_way_holds_no_lock_that_ttl_expiry_of_another_model_waits_on():
    async def go():
        pool, starter = pool_of([entry("a"), entry("b", ttl_s=0.05)], capacity_gib=4)
        b = await pool.acquire("b")
        pool.release(b, "/v1/completions", 200, 0.1)
        starter.gates["a"] = gate = threading.Event()
        want_a = asyncio.get_running_loop().create_task(pool.acquire("a"))
        await asyncio.sleep(0.2)
        assert pool.by_name["a"].life.phase == Phase.STARTING
        t0 = time.monotonic()
        assert await housekeeping.expire_idle(pool, time.monotonic()) == ["b"]
        assert time.monotonic() - t0 < 1 and b.life.phase == Phase.STOPPED and not want_a.done()
        gate.set()
        assert (await want_a).life.phase == Phase.RUNNING
    run(go())


def test_a_ttl_expiry_that_fails_is_counted_and_the_other_models_still_expire():
    async def go():
        pool, starter = pool_of([entry("a", ttl_s=0.01), entry("b", ttl_s=0.01)], capacity_gib=4)
        for n in ("a", "b"):
            pool.release(await pool.acquire(n), "/v1/completions", 200, 0.1)
        starter.stop_raises["a"] = "the server did not answer"
        await asyncio.sleep(0.05)
        assert await housekeeping.expire_idle(pool, time.monotonic()) == ["b"]
        assert metric(pool, "launcher_gateway_housekeeping_errors_total", job="ttl") == 1
        assert pool.by_name["b"].life.phase == Phase.STOPPED
    run(go())


def test_a_pinned_model_and_one_with_requests_in_flight_are_never_expired():
    async def go():
        pool, _ = pool_of([entry("a", ttl_s=0.01, pinned=True), entry("b", ttl_s=0.01)], capacity_gib=4)
        pool.release(await pool.acquire("a"), "/v1/completions", 200, 0.1)
        b = await pool.acquire("b")  # in flight
        await asyncio.sleep(0.05)
        assert await housekeeping.expire_idle(pool, time.monotonic()) == []
        pool.release(b, "/v1/completions", 200, 0.1)
        assert await housekeeping.expire_idle(pool, time.monotonic() + 1) == ["b"]
    run(go())


def test_the_gateway_stopping_during_a_start_stops_that_start_too():
    async def go():
        pool, starter = pool_of([entry("a")], capacity_gib=4)
        starter.gates["a"] = gate = threading.Event()
        want = asyncio.get_running_loop().create_task(pool.acquire("a"))
        await asyncio.sleep(0.2)
        stopping = asyncio.get_running_loop().create_task(pool.stop_all())
        gate.set()
        await stopping
        with pytest.raises(GatewayError):
            await want
        assert not any(la.alive for la in starter.launches)
        assert pool.by_name["a"].life.phase == Phase.STOPPED  # stopped as asked, not failed
    run(go())


def test_a_models_file_changed_while_serving_adds_drains_and_stops_and_leaves_the_rest_alone():
    async def go():
        pool, starter = pool_of([entry("keep"), entry("edit"), entry("gone")], capacity_gib=8)
        starter.need_by_name["new"] = G
        keep = await pool.acquire("keep")
        pool.release(keep, "/v1/completions", 200, 0.1)
        gone = await pool.acquire("gone")  # one request still in flight when the file changes
        new = [entry("keep"), entry("edit", ttl_s=60.0), entry("new", aliases=("fresh",))]
        changes = diff({n: b.entry for n, b in pool.by_name.items()}, new)
        assert ([e.name for e in changes.added], changes.removed, [e.name for e in changes.changed], changes.kept) \
            == (["new"], ("gone",), ["edit"], ("keep",))
        released_at = []

        async def finish_later():
            await asyncio.sleep(0.2)
            released_at.append(time.monotonic())
            pool.release(gone, "/v1/completions", 200, 0.2)

        async def drain(b, act):
            b.draining = True
            while b.in_flight:
                await asyncio.sleep(0.01)
            await act()

        await asyncio.gather(finish_later(), apply(pool, changes, drain, lambda b: None))
        gone_launch = next(la for la in starter.launches if la.name == "gone")
        assert gone_launch.stopped_at >= released_at[0]  # its request finished first
        assert "gone" not in pool.by_name and keep.life.phase == Phase.RUNNING and keep.launch.alive
        assert pool.by_name["edit"].entry.ttl_s == 60.0 and pool.route("fresh").name == "new"
        with pytest.raises(GatewayError) as e:
            pool.route("gone")
        assert e.value.status == 404
    run(go())


def test_the_file_watch_sees_each_edit_once(tmp_path):
    f = tmp_path / "models.yaml"
    f.write_text("models: []\n")
    w = FileWatch(str(f))
    assert not w.changed()
    f.write_text("models: [1]\n")
    assert w.changed() and not w.changed()
    f.unlink()
    assert not w.changed()  # gone for a moment (an editor's save): nothing read


def test_a_500_that_points_above_is_completed_with_the_models_log_and_any_other_body_passes_as_it_came():
    """vLLM answers a request whose engine died with "EngineCore encountered an issue. See stack trace (above) for the
    root cause." (its ErrorResponse shape); the gateway adds what the model's server log says."""
    import json as _json

    from launcher.gateway.proxy import explained

    body = _json.dumps({"error": {"message": "EngineCore encountered an issue. See stack trace (above) for the root "
                                             "cause.", "type": "InternalServerError", "param": None, "code": 500}})
    out = _json.loads(explained(body.encode(), lambda: "server killed by SIGILL (illegal instruction)"))
    assert out["error"]["message"].endswith("The model's server log says: server killed by SIGILL (illegal instruction)")
    assert out["error"]["type"] == "InternalServerError"
    plain = _json.dumps({"error": {"message": "out of tokens", "code": 500}}).encode()
    assert explained(plain, lambda: "x") == plain and explained(b"not json", lambda: "x") == b"not json"


def test_steady_traffic_to_one_model_does_not_starve_another_and_its_own_requests_wait_for_their_turn():
    """Room for one model; two clients keep a request to `a` in flight at every moment. `b` asks once: before, it
    waited as long as `a` stayed busy (its requests never all ended). Now after max_wait_s (0.3 s here) `a` yields:
    no new request of `a` is admitted (they wait, none refused), its in-flight ones finish, it is let go, `b` runs
    and answers; then `a` comes back for its held requests."""
    async def go():
        pool, starter = pool_of([entry("a"), entry("b")], capacity_gib=1.5, max_wait_s=0.3)
        stop, served, refused = asyncio.Event(), {"a": 0}, []

        async def client():
            while not stop.is_set():
                try:
                    x = await pool.acquire("a")
                except GatewayError as e:
                    refused.append(e.code)
                    continue
                await asyncio.sleep(0.05)
                pool.release(x, "/v1/completions", 200, 0.05)
                served["a"] += 1

        clients = [asyncio.get_running_loop().create_task(client()) for _ in range(2)]
        await asyncio.sleep(0.3)
        t0 = time.monotonic()
        b = await pool.acquire("b")
        waited = time.monotonic() - t0
        assert b.life.phase == Phase.RUNNING and 0.3 <= waited < 1.5, waited
        assert pool.by_name["a"].life.phase == Phase.STOPPED and pool.by_name["a"].waiting > 0  # held, not refused
        before = served["a"]
        pool.release(b, "/v1/completions", 200, 0.01)
        await asyncio.sleep(0.5)  # b idle: a's held requests bring it back
        assert pool.by_name["a"].life.phase == Phase.RUNNING and served["a"] > before
        stop.set()
        await asyncio.gather(*clients)
        assert not refused, refused
        assert metric(pool, "launcher_gateway_evictions_total", model="a", action="yield") == 1
    run(go())


def test_a_model_up_for_less_than_min_stay_is_not_let_go_for_another():
    """min_stay_s 0.5: `a` just came up and is idle; `b`'s request waits until `a` has been up 0.5 s (it was let go
    at once before, and two models taking turns request by request restarted each other endlessly)."""
    async def go():
        pool, _ = pool_of([entry("a"), entry("b")], capacity_gib=1.5, min_stay_s=0.5)
        a = await pool.acquire("a")
        pool.release(a, "/v1/completions", 200, 0.01)
        up = a.life.since
        b = await pool.acquire("b")
        assert b.life.phase == Phase.RUNNING and a.life.phase == Phase.STOPPED
        assert a.life.history[-1][0] - up >= 0.5  # stopped no sooner than its minimum stay
    run(go())


def _no_http(monkeypatch):
    """Sleep and wake without a server: the fake launches have none (Backend.call posts to /sleep, /wake_up)."""
    async def call(self, path):
        return None

    monkeypatch.setattr("launcher.gateway.model.Backend.call", call)


def test_sleeping_models_weights_are_counted_against_host_memory_and_the_oldest_sleeper_is_stopped(monkeypatch):
    """GPU, room for one model on the device; each keeps 12 GiB of weights in host memory asleep, and sleepers may
    keep 20: a sleeps for b (12 of 20); for c, b cannot sleep beside a (24 > 20): a, the least recently used sleeper,
    is stopped, then b sleeps. With 10 (less than one model's weights) b is stopped instead of put to sleep."""
    _no_http(monkeypatch)

    async def go(host_gib):
        pool, starter = pool_of([entry("a"), entry("b"), entry("c")], capacity_gib=1.5, gpu_opts=True,
                                host_budget_bytes=host_gib * G)
        starter.host_by_name.update(a=12 * G, b=12 * G, c=12 * G)
        for name in ("a", "b", "c"):
            pool.release(await pool.acquire(name), "/v1/completions", 200, 0.01)
            await asyncio.sleep(0.01)
        return {n: b.life.phase for n, b in pool.by_name.items()}, pool

    phases, pool = run(go(20))
    assert phases == {"a": Phase.STOPPED, "b": Phase.SLEEPING, "c": Phase.RUNNING}
    assert metric(pool, "launcher_gateway_evictions_total", model="a", action="host") == 1
    from launcher.gateway.room import host_asleep_bytes

    assert host_asleep_bytes(pool) == 12 * G
    phases, _ = run(go(10))
    assert phases == {"a": Phase.STOPPED, "b": Phase.STOPPED, "c": Phase.RUNNING}


def test_a_model_asleep_past_its_sleep_ttl_is_stopped(monkeypatch):
    _no_http(monkeypatch)

    async def go():
        pool, _ = pool_of([entry("a", sleep_ttl_s=0.05), entry("b")], capacity_gib=1.5, gpu_opts=True)
        pool.release(await pool.acquire("a"), "/v1/completions", 200, 0.01)
        pool.release(await pool.acquire("b"), "/v1/completions", 200, 0.01)
        assert pool.by_name["a"].life.phase == Phase.SLEEPING
        await asyncio.sleep(0.1)
        assert await housekeeping.expire_idle(pool, time.monotonic()) == ["a"]
        assert pool.by_name["a"].life.phase == Phase.STOPPED
    run(go())


def homes_pool(gpus, plan, pinned=()):
    """A pool on GPUs planned one by one: gpus {index: GiB}, plan {name: (home GPUs, GiB per GPU, share GiB)}."""
    from launcher.gateway.gpus import Homes

    homes = Homes({i: int(g * G) for i, g in gpus.items()}, home={n: h for n, (h, _, _) in plan.items()},
                  share={n: int(s * G) for n, (_, _, s) in plan.items()},
                  per_gpu={n: int(p * G) for n, (_, p, _) in plan.items()})
    entries = [entry(n, pinned=n in pinned) for n in plan]
    return pool_of(entries, capacity_gib=sum(gpus.values()), need_gib=1.0, homes=homes)


def test_per_gpu_room_two_gpus_three_quarters_full_let_go_only_the_model_on_the_home_gpu():
    """The issue's case: GPUs 0 and 1 (80 GiB) each hold a 60 GiB model; c (30 GiB, its home GPU 0) is asked for.
    Pooled, 40 GiB are free and nothing would be let go (then the start fails); per GPU, a (GPU 0) is let go and
    b (GPU 1), although used longer ago, is not. Each starts on its planned GPU with its planned share."""
    async def go():
        pool, starter = homes_pool({0: 80, 1: 80}, {"b": ((1,), 60, 58), "a": ((0,), 60, 58), "c": ((0,), 30, 28)})
        for n in ("b", "a"):
            m = await pool.acquire(n)
            pool.release(m, "/v1/completions", 200, 0.1)
        assert starter.placed["a"] == ((0,), 58 * G) and starter.placed["b"] == ((1,), 58 * G)
        c = await pool.acquire("c")
        assert c.life.phase == Phase.RUNNING and starter.placed["c"] == ((0,), 28 * G)
        assert pool.by_name["a"].life.phase == Phase.STOPPED and pool.by_name["b"].life.phase == Phase.RUNNING
    run(go())


def test_a_model_moves_to_another_gpu_only_when_its_own_has_no_room_and_goes_where_the_fewest_are_let_go():
    """a is pinned on GPU 0 (60 of 80): c (30, home GPU 0) cannot have room there. GPU 1 holds b (idle, 60), GPU 2
    nothing: c starts on GPU 2, b untouched. d (home GPU 1, 15) fits beside b: it stays home."""
    async def go():
        pool, starter = homes_pool({0: 80, 1: 80, 2: 80},
                                   {"a": ((0,), 60, 58), "b": ((1,), 60, 58), "c": ((0,), 30, 28), "d": ((1,), 15, 13)},
                                   pinned=("a",))
        for n in ("a", "b"):
            m = await pool.acquire(n)
            pool.release(m, "/v1/completions", 200, 0.1)
        c = await pool.acquire("c")
        assert starter.placed["c"] == ((2,), 28 * G) and c.gpus == (2,)
        assert pool.by_name["b"].life.phase == Phase.RUNNING
        await pool.acquire("d")
        assert starter.placed["d"] == ((1,), 13 * G) and pool.by_name["b"].life.phase == Phase.RUNNING
    run(go())


def test_a_model_the_plan_placed_nowhere_is_refused_with_the_plans_reason():
    from launcher.gateway.gpus import Homes
    from launcher.gateway.model import GatewayError

    async def go():
        homes = Homes({0: 80 * G}, why_not={"big": "fits on no GPU of this kind alone: weights 140 GiB"})
        pool, _ = pool_of([entry("big")], capacity_gib=80, homes=homes)
        with pytest.raises(GatewayError, match="the plan placed it on no GPU: fits on no GPU of this kind alone"):
            await pool.acquire("big")
    run(go())


def test_a_planned_launch_runs_on_its_gpus_with_its_share_unless_the_entry_gives_its_own():
    from launcher.gateway.starting import launch_spec

    opts = Options(capacity_bytes=160 * G, gpu=True)
    spec = launch_spec(entry("a"), opts, ((0, 1), 20 * G))
    assert spec.gpus == "0,1" and spec.gpu_memory_budget == "20480MiB" and spec.host == "127.0.0.1"
    own = ModelEntry(LaunchSpec(name="b", model_path="/models/b", gpu_memory_budget="30GiB"))
    assert launch_spec(own, opts, ((1,), 20 * G)).gpu_memory_budget == "30GiB"
    assert launch_spec(entry("c"), opts).gpus is None  # pooled: the launch picks its GPUs itself


def test_a_model_moved_away_goes_home_again_at_its_next_start():
    async def go():
        pool, starter = homes_pool({0: 80, 1: 80}, {"a": ((0,), 60, 58), "c": ((0,), 30, 28)}, pinned=("a",))
        m = await pool.acquire("a")
        pool.release(m, "/v1/completions", 200, 0.1)
        c = await pool.acquire("c")
        pool.release(c, "/v1/completions", 200, 0.1)
        assert starter.placed["c"] == ((1,), 28 * G)
        await pool.by_name["a"].stop("test")  # its home has room again
        await c.stop("test")
        await pool.acquire("c")
        assert starter.placed["c"] == ((0,), 28 * G)
    run(go())


def _recording_http(monkeypatch, slow_sleep_s=0.0):
    calls = []

    async def call(self, path):
        calls.append((self.name, path))
        if path.startswith("/sleep"):
            await asyncio.sleep(slow_sleep_s)

    monkeypatch.setattr("launcher.gateway.model.Backend.call", call)
    return calls


def test_the_first_sleep_is_paid_once_the_model_is_idle_and_a_request_meanwhile_waits_for_the_wake(monkeypatch):
    """GPU, room for one of a and b, host room for a's weights: idle 0.05 s after its start, a is put to sleep and
    woken (one sleep, one wake, never again); a request that comes during that sleep (0.3 s here) is answered once a
    is awake."""
    calls = _recording_http(monkeypatch, slow_sleep_s=0.3)

    async def go():
        pool, starter = pool_of([entry("a"), entry("b")], capacity_gib=1.5, gpu_opts=True, host_budget_bytes=40 * G,
                                first_sleep_after_s=0.05)
        starter.host_by_name["a"] = 12 * G
        a = await pool.acquire("a")
        pool.release(a, "/v1/completions", 200, 0.01)
        await asyncio.sleep(0.15)  # idle long enough: the sleep is under way
        assert a.paying is not None and a.in_flight == 1  # busy: nothing lets it go meanwhile
        t0 = time.monotonic()
        again = await pool.acquire("a")
        assert again is a and calls == [("a", "/sleep?level=1"), ("a", "/wake_up")] and time.monotonic() - t0 > 0.1
        pool.release(a, "/v1/completions", 200, 0.01)
        await asyncio.sleep(0.2)
        assert a.slept and a.paying is None and len(calls) == 2 and a.life.phase == Phase.RUNNING
        assert metric(pool, "launcher_gateway_first_sleep_seconds", model="a") >= 0.3
    run(go())


def test_no_first_sleep_paid_where_the_host_may_not_keep_the_weights_or_no_switch_can_come(monkeypatch):
    """Host room for 10 GiB, a's weights 12: not paid. Host room enough, but a and b fit awake together (or a is
    alone): no switch will ever put a to sleep, so no host memory is pinned for it."""
    calls = _recording_http(monkeypatch)

    async def go(names, capacity_gib, host_gib):
        pool, starter = pool_of([entry(n) for n in names], capacity_gib=capacity_gib, gpu_opts=True,
                                host_budget_bytes=host_gib * G, first_sleep_after_s=0.02)
        starter.host_by_name["a"] = 12 * G
        if "b" in names:  # b sized (as its first request would have it) without starting it
            pool.by_name["b"].need_bytes = G
        pool.release(await pool.acquire("a"), "/v1/completions", 200, 0.01)
        await asyncio.sleep(0.2)
        return list(calls)
    assert run(go(("a", "b"), 1.5, 10)) == []
    assert run(go(("a", "b"), 4, 40)) == []
    assert run(go(("a",), 4, 40)) == []
    assert run(go(("a", "b"), 1.5, 40)) == [("a", "/sleep?level=1"), ("a", "/wake_up")]  # the control: paid


def test_a_model_that_slept_keeps_its_pinned_host_memory_awake_and_it_is_counted(monkeypatch):
    """a paid its first sleep (12 GiB pinned, kept after the wake); the host may keep 20 GiB: b (12 more) cannot go
    to sleep beside it for c (24 > 20) and a, awake, is no sleeper to stop: b is stopped instead."""
    _recording_http(monkeypatch)

    async def go():
        pool, starter = pool_of([entry("a"), entry("b"), entry("c")], capacity_gib=2.5, gpu_opts=True,
                                host_budget_bytes=20 * G, first_sleep_after_s=0.02)
        starter.host_by_name.update(a=12 * G, b=12 * G, c=12 * G)
        pool.release(await pool.acquire("a"), "/v1/completions", 200, 0.01)
        await asyncio.sleep(0.2)
        from launcher.gateway.room import host_asleep_bytes
        assert pool.by_name["a"].slept and host_asleep_bytes(pool) == 12 * G
        pool.release(await pool.acquire("b"), "/v1/completions", 200, 0.01)
        pool.opts.first_sleep_after_s = None
        pool.by_name["a"].last_used = time.monotonic()  # a used last: b is the one let go for c
        pool.release(await pool.acquire("c"), "/v1/completions", 200, 0.01)
        return {n: m.life.phase for n, m in pool.by_name.items()}
    assert run(go()) == {"a": Phase.RUNNING, "b": Phase.STOPPED, "c": Phase.RUNNING}


def test_a_model_added_while_serving_on_planned_gpus_is_planned_then_placed_where_there_is_room(monkeypatch):
    """A model the plan did not have (added by a reload or `launcher gateway add`): its footprint planned as the
    others' were (fleet/needs.py, stubbed here to 50 GiB a GPU), its home the lowest GPU; GPU 0 is held by a pinned
    model, so it starts on GPU 1. One that fits on no GPU is refused with the plan's reason."""
    from launcher.fleet.pack import Need
    from launcher.gateway.model import GatewayError

    sizes = {"late": Need("late", 1, 50 * G, share_bytes=48 * G), "huge": Need("huge", 1, 0, reason="weights 140 GiB")}
    monkeypatch.setattr("launcher.fleet.needs.need_of", lambda e, name, total, order, v=None: sizes[e.name])

    async def go():
        pool, starter = homes_pool({0: 80, 1: 80}, {"a": ((0,), 60, 58)}, pinned=("a",))
        pool.release(await pool.acquire("a"), "/v1/completions", 200, 0.01)
        starter.need_by_name.update(late=G, huge=G)
        pool.add(entry("late"))
        pool.add(entry("huge"))
        await pool.acquire("late")
        assert starter.placed["late"] == ((1,), 48 * G) and pool.opts.homes.home["late"] == (0,)
        with pytest.raises(GatewayError, match="placed it on no GPU: weights 140 GiB"):
            await pool.acquire("huge")
    run(go())


def test_an_adopted_server_takes_requests_once_its_new_supervisor_saw_it_answer():
    """A gateway started again adopts a server whose new supervisor is STARTING until its first health probe: a
    request that comes meanwhile is served once the probe answers, not refused as "restarting" (a 503)."""
    async def go():
        pool, starter = pool_of([entry("a")], capacity_gib=2)
        adopted = FakeLaunch("a", starter)  # STARTING: the new supervisor has not probed it yet
        starter.adopt = lambda name, key: (adopted, 9100, (G, None, None)) if name == "a" else None
        assert await pool.by_name["a"].adopt(starter)
        a = await pool.acquire("a")
        assert a.life.phase == Phase.RUNNING and a.port == 9100 and not starter.launches
    run(go())

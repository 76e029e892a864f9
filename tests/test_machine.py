"""The state machine with an injected clock: no processes, no sleeps."""
from launcher.supervisor.machine import Hooks, State, Supervisor
from launcher.supervisor.policy import RestartPolicy


class FakeServer:
    def __init__(self):
        self.code = None
        self.stopped = False

    def exit_code(self):
        return self.code

    def stop(self, grace_s):
        self.stopped = True
        return []

    def refresh(self):
        pass


class World:
    def __init__(self, policy=None):
        self.servers, self.health, self.cause, self.gpu_free = [], 200, None, True
        self.sup = Supervisor(Hooks(spawn=self.spawn, probe=lambda: self.health, root_cause=lambda: self.cause,
                                    gpu_released=lambda: self.gpu_free), policy or RestartPolicy(probe_interval_s=1))

    def spawn(self):
        self.servers.append(FakeServer())
        return self.servers[-1]


def test_backoff_is_capped_exponential():
    p = RestartPolicy(backoff_initial_s=2, backoff_factor=2, backoff_max_s=10)
    assert [p.backoff_s(i) for i in range(1, 6)] == [2, 4, 8, 10, 10]


def test_ready_after_health_200_then_crash_backoff_restart():
    w = World()
    w.sup.start(0)
    w.health = None
    assert w.sup.tick(0) == State.STARTING
    w.health = 200
    assert w.sup.tick(1) == State.READY
    w.servers[-1].code = 1
    assert w.sup.tick(2) == State.BACKOFF and w.servers[-1].stopped
    assert w.sup.tick(3) == State.BACKOFF  # backoff 2 s not over yet
    assert w.sup.tick(4) == State.STARTING and w.sup.restarts == 1 and len(w.servers) == 2


def test_restart_waits_until_gpu_memory_is_released():
    w = World(RestartPolicy(probe_interval_s=1, gpu_free_timeout_s=100))
    w.sup.start(0)
    w.sup.tick(0)
    w.servers[-1].code = -9
    w.sup.tick(1)
    w.gpu_free = False
    for t in (5, 10, 50):
        assert w.sup.tick(t) == State.BACKOFF
    w.gpu_free = True
    assert w.sup.tick(51) == State.STARTING


def test_gpu_wait_gives_up_after_its_timeout():
    w = World(RestartPolicy(probe_interval_s=1, gpu_free_timeout_s=10))
    w.sup.start(0)
    w.sup.tick(0)
    w.servers[-1].code = -9
    w.sup.tick(1)
    w.gpu_free = False
    assert w.sup.tick(5) == State.BACKOFF
    assert w.sup.tick(14) == State.STARTING


def test_configuration_error_is_fatal_at_once():
    w = World()
    w.sup.start(0)
    w.cause = ("port_in_use", "OSError: [Errno 98] Address already in use", False)
    w.servers[-1].code = 1
    assert w.sup.tick(0) == State.FATAL and w.sup.restarts == 0 and "Address already in use" in w.sup.reason


def test_k_quick_failures_are_fatal_but_a_stable_period_resets_the_streak():
    w = World(RestartPolicy(probe_interval_s=1, stable_s=100, max_quick_failures=3, backoff_initial_s=1))
    t = 0
    w.sup.start(t)
    for _ in range(2):  # two quick failures
        w.sup.tick(t)
        w.servers[-1].code = 1
        w.sup.tick(t + 1)
        t += 5
        w.sup.tick(t)
    assert w.sup.streak == 2 and w.sup.state == State.STARTING
    w.sup.tick(t)  # READY
    t += 200
    w.sup.tick(t)  # healthy past the stable period: streak forgotten
    assert w.sup.streak == 0
    w.servers[-1].code = 1
    assert w.sup.tick(t + 1) == State.BACKOFF and w.sup.streak == 1


def test_liveness_needs_n_consecutive_misses():
    w = World(RestartPolicy(probe_interval_s=1, liveness_failures=3))
    w.sup.start(0)
    w.sup.tick(0)
    w.health = 503
    assert w.sup.tick(1) == State.READY
    assert w.sup.tick(2) == State.READY
    w.health = 200
    assert w.sup.tick(3) == State.READY  # a good probe resets the count
    w.health = None
    w.sup.tick(4)
    w.sup.tick(5)
    assert w.sup.tick(6) == State.BACKOFF and "3 failed health probes" in w.sup.reason


def test_startup_deadline():
    w = World(RestartPolicy(probe_interval_s=1, startup_timeout_s=10))
    w.sup.start(0)
    w.health = None
    assert w.sup.tick(5) == State.STARTING
    assert w.sup.tick(11) == State.BACKOFF and "start-up deadline" in w.sup.reason


def test_a_restart_does_not_keep_the_back_off_reason():
    w = World(RestartPolicy(probe_interval_s=1, startup_timeout_s=10, backoff_initial_s=1))
    w.sup.start(0)
    assert w.sup.reason == "starting"
    w.health = None
    assert w.sup.tick(11) == State.BACKOFF and "start-up deadline" in w.sup.reason
    w.health = 200
    for t in range(12, 40):
        if w.sup.tick(t) == State.STARTING:
            break
    assert w.sup.state == State.STARTING and w.sup.reason.startswith("restart 1 after: ") and "deadline" in w.sup.reason


def test_a_server_answering_503_or_500_while_starting_is_not_ready():
    """vLLM's HTTP server can answer before its engine is usable (503 once the engine is dead, 500 in older
    releases): only 200 means ready."""
    w = World(RestartPolicy(startup_probe_interval_s=0.5, startup_timeout_s=100))
    w.sup.start(0)
    for t, code in enumerate((503, 500, 404, None, 503)):
        w.health = code
        assert w.sup.tick(t) == State.STARTING, code
    w.health = 200
    assert w.sup.tick(10) == State.READY


class GraceServer(FakeServer):
    def stop(self, grace_s):
        self.grace = grace_s
        return super().stop(grace_s)


def test_a_server_still_starting_gets_the_short_grace_a_ready_one_the_long():
    """stop of a launch still STARTING: nothing to drain, so SIGKILL follows after stop_grace_unready_s
    (vLLM on the CPU build took 16.7 s to go with the full grace); a READY server drains for stop_grace_s."""
    policy = RestartPolicy(stop_grace_s=15, stop_grace_unready_s=1.5, startup_probe_interval_s=1)
    for ready, grace in ((False, 1.5), (True, 15)):
        server = GraceServer()
        sup = Supervisor(Hooks(spawn=lambda: server, probe=lambda: 200 if ready else None, root_cause=lambda: None), policy)
        sup.start(0)
        sup.tick(0)
        assert sup.state == (State.READY if ready else State.STARTING)
        sup.stop()
        assert server.grace == grace and sup.state == State.STOPPED

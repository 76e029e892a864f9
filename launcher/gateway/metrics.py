"""The gateway's Prometheus metrics (prometheus_client), per model: requests, latency, queue depth, starts, sleeps,
wakes, evictions, state."""
from __future__ import annotations

from .lifecycle import Phase

STATES = tuple(p.value for p in Phase)


class GatewayMetrics:
    """One registry per gateway (tests run several in one process)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        r = self.registry = CollectorRegistry()
        self.requests = Counter("launcher_gateway_requests", "Requests answered, by model and HTTP status",
                                ["model", "status"], registry=r)
        self.latency = Histogram("launcher_gateway_request_seconds", "Time from request to the end of the answer",
                                 ["model"], registry=r,
                                 buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300))
        self.queue_depth = Gauge("launcher_gateway_queue_depth", "Requests waiting for their model to start",
                                 ["model"], registry=r)
        self.starts = Counter("launcher_gateway_starts", "Model starts", ["model"], registry=r)
        self.sleeps = Counter("launcher_gateway_sleeps", "Models put to sleep", ["model"], registry=r)
        self.wakes = Counter("launcher_gateway_wakes", "Models woken", ["model"], registry=r)
        self.first_sleeps = Gauge("launcher_gateway_first_sleep_seconds",
                                  "Seconds a model's first sleep took, paid while it was idle", ["model"], registry=r)
        self.evictions = Counter("launcher_gateway_evictions", "Models let go to make room or when idle",
                                 ["model", "action"], registry=r)
        self.housekeeping_errors = Counter("launcher_gateway_housekeeping_errors",
                                           "Failures of the gateway's own jobs (ttl expiry, the record, following a "
                                           "supervisor), logged and survived", ["job"], registry=r)
        self.model_state = Gauge("launcher_gateway_model_state", "1 for the state a model is in", ["model", "state"],
                                 registry=r)

    def request(self, model: str, status: int, seconds: float) -> None:
        self.requests.labels(model, str(status)).inc()
        self.latency.labels(model).observe(seconds)

    def queue(self, model: str, depth: int) -> None:
        self.queue_depth.labels(model).set(depth)

    def started(self, model: str) -> None:
        self.starts.labels(model).inc()

    def slept(self, model: str) -> None:
        self.sleeps.labels(model).inc()

    def first_sleep(self, model: str, seconds: float) -> None:
        self.first_sleeps.labels(model).set(seconds)

    def woke(self, model: str) -> None:
        self.wakes.labels(model).inc()

    def evicted(self, model: str, action: str) -> None:
        self.evictions.labels(model, action).inc()

    def housekeeping_error(self, job: str) -> None:
        self.housekeeping_errors.labels(job).inc()

    def state(self, model: str, state: str) -> None:
        for s in STATES:
            self.model_state.labels(model, s).set(1 if s == state else 0)

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST

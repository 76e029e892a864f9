"""Smoke launches: launch, real requests, a verdict, a clean stop, a report (JSON and JUnit XML)."""
from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from xml.sax.saxutils import escape
from typing import TYPE_CHECKING

from .errors import EXIT_FAILED, EXIT_NOT_READY, EXIT_OK

if TYPE_CHECKING:
    from collections.abc import Callable

    from .launching import Prepared
    from .launching.start import OnEvent


@dataclass
class Check:
    name: str
    passed: bool
    seconds: float
    detail: str = ""


@dataclass
class SmokeReport:
    name: str
    model: str
    endpoint: str = ""
    passed: bool = False
    exit_code: int = EXIT_FAILED
    time_to_ready_s: float | None = None
    kv_cache_tokens_vllm: int | None = None
    kv_cache_tokens_estimate: int | None = None
    reason: str = ""
    checks: list[Check] = field(default_factory=list)
    leftover_pids: list[int] = field(default_factory=list)
    command: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def junit_xml(self) -> str:
        """The checks as a JUnit XML test suite (for CI systems that read it)."""
        cases = []
        for c in self.checks:
            body = "" if c.passed else f'<failure message="{escape(c.detail[:300], {chr(34): "&quot;"})}">{escape(c.detail)}</failure>'
            cases.append(f'  <testcase classname="launcher.smoke.{escape(self.name)}" name="{escape(c.name)}" time="{c.seconds:.3f}">{body}</testcase>')
        fails = sum(not c.passed for c in self.checks)
        total = sum(c.seconds for c in self.checks)
        props = (f'  <properties><property name="endpoint" value="{escape(self.endpoint)}"/>'
                 f'<property name="kv_cache_tokens_vllm" value="{escape(str(self.kv_cache_tokens_vllm))}"/>'
                 f'<property name="kv_cache_tokens_estimate" value="{self.kv_cache_tokens_estimate}"/></properties>')
        return ('<?xml version="1.0" encoding="UTF-8"?>\n'
                f'<testsuite name="launcher-smoke-{escape(self.name)}" tests="{len(self.checks)}" failures="{fails}" '
                f'errors="0" time="{total:.3f}">\n{props}\n' + "\n".join(cases) + "\n</testsuite>\n")


class Client:
    def __init__(self, base: str, api_key: str | None, timeout_s: float):
        self.base, self.key, self.timeout = base.rstrip("/"), api_key, timeout_s

    def _req(self, method: str, path: str, body: dict | None = None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("content-type", "application/json")
        if self.key:
            req.add_header("authorization", f"Bearer {self.key}")
        return urllib.request.urlopen(req, timeout=self.timeout)

    def json(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        """(HTTP status, JSON body) of one request; for an HTTP error its status and {"error": the body's start}."""
        try:
            with self._req(method, path, body) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, {"error": e.read().decode("utf-8", "replace")[:500]}

    def stream(self, path: str, body: dict) -> tuple[int, list[dict]]:
        """(HTTP status, the server-sent JSON chunks) of one streamed request."""
        chunks = []
        try:
            with self._req("POST", path, body) as r:
                for raw in r:
                    line = raw.decode().strip()
                    if line.startswith("data: ") and line != "data: [DONE]":
                        chunks.append(json.loads(line[6:]))
                    elif line == "data: [DONE]":
                        chunks.append({"done": True})
                return r.status, chunks
        except urllib.error.HTTPError as e:
            return e.code, []


def _usage_ok(u: dict | None, max_tokens: int) -> tuple[bool, str]:
    if not u:
        return False, "no usage in the response"
    p, c, t = u.get("prompt_tokens"), u.get("completion_tokens"), u.get("total_tokens")
    if None in (p, c, t) or p + c != t:
        return False, f"usage does not add up: prompt {p} + completion {c} != total {t}"
    if not (0 < c <= max_tokens):
        return False, f"completion_tokens {c} outside 1..{max_tokens}"
    return True, f"prompt {p} + completion {c} = {t} tokens"


def run_checks(client: Client, model: str, *, max_tokens: int, stream: bool, expect: str | None,
               deadline: float) -> list[Check]:
    """The smoke's checks against a ready server, each timed and stopped at the deadline: /v1/models lists the
    model, a completion and a chat completion answer with their token usage, a streamed chat (with --stream), and
    --expect matched against the answers."""
    checks: list[Check] = []
    pat = re.compile(expect) if expect else None
    texts: list[str] = []

    def timed(name: str, fn: Callable[[], tuple[bool, str]]) -> None:
        if time.monotonic() > deadline:
            checks.append(Check(name, False, 0.0, "smoke deadline reached before this check"))
            return
        t0 = time.monotonic()
        try:
            ok, detail = fn()
        except Exception as e:  # noqa: BLE001 - a broken request is a failed check, with its reason
            ok, detail = False, f"{type(e).__name__}: {e}"
        checks.append(Check(name, ok, time.monotonic() - t0, detail))

    def models():
        code, body = client.json("GET", "/v1/models")
        ids = [m.get("id") for m in body.get("data", [])]
        return code == 200 and model in ids, f"HTTP {code}, models {ids}"

    def completion():
        code, body = client.json("POST", "/v1/completions", {"model": model, "prompt": "Hello, my name is",
                                                              "max_tokens": max_tokens, "temperature": 0})
        text = (body.get("choices") or [{}])[0].get("text", "")
        texts.append(text)
        ok_u, du = _usage_ok(body.get("usage"), max_tokens)
        return code == 200 and bool(text) and ok_u, f"HTTP {code}, text {text!r}, {du}"

    def chat():
        code, body = client.json("POST", "/v1/chat/completions", {
            "model": model, "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": max_tokens, "temperature": 0})
        text = ((body.get("choices") or [{}])[0].get("message") or {}).get("content") or ""
        texts.append(text)
        ok_u, du = _usage_ok(body.get("usage"), max_tokens)
        return code == 200 and bool(text) and ok_u, f"HTTP {code}, text {text!r}, {du}"

    def streaming():
        code, chunks = client.stream("/v1/chat/completions", {
            "model": model, "messages": [{"role": "user", "content": "Count to three."}], "max_tokens": max_tokens,
            "stream": True, "stream_options": {"include_usage": True}})
        text = "".join(((c.get("choices") or [{}])[0].get("delta") or {}).get("content") or "" for c in chunks if "choices" in c)
        texts.append(text)
        done = any(c.get("done") for c in chunks)
        usage = next((c["usage"] for c in chunks if c.get("usage")), None)
        ok_u, du = _usage_ok(usage, max_tokens)
        return code == 200 and bool(text) and done and ok_u, f"HTTP {code}, {len(chunks)} chunks, [DONE] {done}, text {text!r}, {du}"

    timed("list_models", models)
    timed("completion", completion)
    timed("chat_completion", chat)
    if stream:
        timed("chat_completion_stream", streaming)
    if pat:
        t0 = time.monotonic()
        hit = any(pat.search(t) for t in texts)
        checks.append(Check("expect", hit, time.monotonic() - t0, f"/{expect}/ {'matched' if hit else 'matched none of'} {texts!r}"))
    return checks


def smoke(prep: Prepared, *, timeout_s: float, max_tokens: int = 8, stream: bool = False, expect: str | None = None,
          api_key: str | None = None, on_event: OnEvent | None = None) -> SmokeReport:
    """Launch `prep` in-process, wait for ready within the deadline, run the checks, always stop."""
    from .engines import vllm as vllm_engine
    from .errors import NotReady
    from .runs import run_dir
    from .serving import served
    from .supervisor.run import read_tail

    t0 = time.monotonic()
    deadline = t0 + timeout_s
    name = prep.spec.name
    rep = SmokeReport(name=name, model=vllm_engine.served_model_name(prep.argv), command=prep.argv,
                      endpoint=f"http://{prep.spec.host}:{prep.port}/v1")
    if prep.plan and prep.plan.estimate:
        rep.kv_cache_tokens_estimate = prep.plan.estimate.kv_cache_tokens
    elif prep.plan and prep.plan.cpu_kv:
        rep.kv_cache_tokens_estimate = prep.plan.cpu_kv.get("kv_cache_tokens")
    server = served(prep, timeout_s=timeout_s, on_event=on_event)
    try:
        with server:
            rep.time_to_ready_s = round(time.monotonic() - t0, 2)
            rep.checks.append(Check("ready", True, rep.time_to_ready_s, "GET /health answered 200"))
            rep.kv_cache_tokens_vllm = vllm_engine.kv_tokens(vllm_engine.parse_log_facts(read_tail(run_dir(name) / "server.log")))
            host = "127.0.0.1" if prep.spec.host in ("0.0.0.0", "") else prep.spec.host
            client = Client(f"http://{host}:{prep.port}", api_key, timeout_s=max(5.0, deadline - time.monotonic()))
            rep.checks += run_checks(client, rep.model, max_tokens=max_tokens, stream=stream, expect=expect,
                                     deadline=deadline)
        rep.passed = all(c.passed for c in rep.checks)
        rep.exit_code = EXIT_OK if rep.passed else EXIT_FAILED
        if not rep.passed:
            rep.reason = "; ".join(f"{c.name}: {c.detail}" for c in rep.checks if not c.passed)
    except NotReady as e:
        rep.reason = e.message
        rep.exit_code = EXIT_NOT_READY
        rep.checks.append(Check("ready", False, time.monotonic() - t0, rep.reason))
    finally:
        rep.leftover_pids = server.leftover_pids()
    return rep

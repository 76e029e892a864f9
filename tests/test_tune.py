"""`launcher tune` without a server: workloads, proposals, choice of the winner, budget, resume."""
import json
from dataclasses import replace
from types import SimpleNamespace

import pytest

from launcher.bench import Workload, make_sessions, parse_counters
from launcher.units import parse_duration
from launcher.errors import BadInput
from launcher.tune import Candidate, Point, Tuner, TuneResult, combine, propose
from launcher.workloads import PRESETS, at_level, named


def test_agent_sessions_resend_their_history_on_one_shared_system_prompt():
    w = replace(PRESETS["agent"].workload, num_requests=12, prefix_len=(50, 50), prompt_len=(5, 9), output_len=(3, 4))
    warm, sessions = make_sessions(w, "m", vocab_size=1000)
    assert [len(s) for s in sessions] == [5, 5, 2]  # 12 requests in sessions of 5 turns
    system = sessions[0][0]["prompt"][:50]
    for s in sessions:
        assert s[0]["prompt"][:50] == system  # every session starts from the same system prompt
        for prev, nxt in zip(s, s[1:]):  # each turn = the previous prompt + its answer + a new message
            grown = len(nxt["prompt"]) - len(prev["prompt"])
            assert nxt["prompt"][:len(prev["prompt"])] == prev["prompt"]
            assert prev["max_tokens"] + 5 <= grown <= prev["max_tokens"] + 9
    assert all(b["prompt"][:50] != system for b in warm)  # warm-up does not fill the prefix cache for them
    assert w.max_seq_len() == 50 + 5 * (9 + 4)


def test_rag_prompts_start_with_one_of_the_shared_documents():
    w = replace(PRESETS["rag"].workload, num_requests=40, prefix_len=(20, 30), num_prefixes=3, prompt_len=(4, 4))
    _, sessions = make_sessions(w, "m", vocab_size=1000)
    bodies = [s[0] for s in sessions]
    assert len(bodies) == 40 and all(len(s) == 1 for s in sessions)
    docs = {tuple(b["prompt"][:-4]) for b in bodies}
    assert len(docs) == 3 and all(20 <= len(d) <= 30 for d in docs)
    # KV in flight counts each shared document once
    w8 = replace(w, concurrency=8)
    mean_doc = 25
    assert w8.kv_tokens_in_flight() == pytest.approx(8 * (w8.mean_seq_len() - mean_doc) + 3 * mean_doc)


def test_named_workloads_apply_overrides_and_reject_unknown_names():
    rag, batch = named("rag,batch", num_requests=10, prompt_len=(7, 9))
    assert rag.workload.prompt_len == (7, 9) and rag.workload.prefix_len == PRESETS["rag"].workload.prefix_len
    assert batch.levels == (10,) and batch.slo_ttft_p99_s is None  # offline: everything at once, no latency target
    assert named("chat", slo_ttft_p99_s=0.2)[0].slo_ttft_p99_s == 0.2
    assert named("batch", slo_ttft_p99_s=0.2)[0].slo_ttft_p99_s is None
    with pytest.raises(BadInput, match="unknown workload 'chatty'"):
        named("chatty")
    with pytest.raises(BadInput):
        named("chat,chat")
    lv = named("chat", levels=[8, 2])[0]
    assert lv.levels == (2, 8)
    assert at_level(lv, 8, 1).concurrency == 8 and at_level(lv, 8, 1).seed != at_level(lv, 2, 0).seed


def test_budget_durations():
    assert parse_duration("900") == 900 and parse_duration("15m") == 900 and parse_duration("1h30m") == 5400
    assert parse_duration("90s") == 90
    with pytest.raises(BadInput):
        parse_duration("15 minutes")


def test_server_counters_from_prometheus_text():
    text = """# HELP vllm:prefix_cache_hits_total x
vllm:prefix_cache_hits_total{engine="0",model_name="m"} 30.0
vllm:prefix_cache_hits_created{engine="0",model_name="m"} 1.7e9
vllm:prefix_cache_queries_total{engine="0",model_name="m"} 100.0
vllm:num_preemptions_total{engine="0",model_name="m"} 2.0
vllm:num_preemptions_total{engine="1",model_name="m"} 1.0
"""
    c = parse_counters(text)
    assert c == {"prefix_cache_hits": 30.0, "prefix_cache_queries": 100.0, "preemptions": 3.0}


def _pt(conc, tput, ttft=0.1, meets=True, preempt=0.0):
    return Point(conc, tput, tput / 100, ttft, ttft, 0.01, 0.01, 0.01, 10, 0, 1.0, preemptions=preempt, meets=meets)


def _cand(label, args, pts):
    return Candidate(label, args, fits=True, start_s=60.0, sweep_s=30.0, points={"chat": pts})


def test_the_winner_must_beat_the_defaults_by_the_minimum_gain_in_both_starts():
    wl = named("chat")[0]
    d = _cand("vLLM defaults", {}, [_pt(32, 1000), _pt(128, 3000, ttft=0.9, meets=False)])
    small = _cand("a", {"max-num-seqs": 64}, [_pt(32, 1040)])
    big = _cand("b", {"max-num-batched-tokens": 4096}, [_pt(32, 1200)])
    res = TuneResult([wl], [d, small], min_gain=0.05)
    assert d.score(wl) == 1000  # the load level that missed the target does not count
    assert res.winner(wl) is d and res.improvement(wl) == 0.0  # +4% is within the noise
    res.candidates.append(big)
    assert res.winner(wl) is big and res.improvement(wl) == pytest.approx(0.2)
    res.defaults_again = _cand("vLLM defaults (again)", {}, [_pt(32, 1180)])
    assert res.defaults_score(wl) == 1180 and res.winner(wl) is d  # the second start of the defaults was as good
    assert [c.label for c in res.ranked(wl)] == ["b", "a", "vLLM defaults"]


def test_proposals_follow_the_workload_and_what_vllm_resolved():
    rag, batch, chat = named("rag,batch,chat")
    defaults = Candidate("vLLM defaults", {}, vllm_kv_tokens=400_000, vllm_resolved={"max-num-batched-tokens": 8192},
                         points={"batch": [_pt(600, 8000)]})
    spec = SimpleNamespace(engine_args={"max-model-len": 8192})
    est = SimpleNamespace(max_num_batched_tokens=8192, max_num_seqs=1024)
    got = {c.label: c.why for c in propose([rag, batch, chat], defaults, spec, est)}
    # long prompts and offline throughput: larger prefill steps; short chat prompts: a smaller step
    assert {"max-num-batched-tokens=16384", "max-num-batched-tokens=32768", "max-num-batched-tokens=4096"} <= set(got)
    assert "rag:" in got["max-num-batched-tokens=16384"] and "batch:" in got["max-num-batched-tokens=16384"]
    # batch keeps ~576k KV tokens in flight at 600 requests, more than the 400k vLLM sized: more memory share
    assert "gpu-memory-utilization=0.95" in got
    assert not any(k.startswith("max-num-seqs") for k in got)  # no preemption was measured: no cap
    defaults.points["batch"] = [_pt(600, 8000, preempt=37)]
    caps = [c for c in propose([batch], defaults, spec, est) if "max-num-seqs" in c.engine_args]
    assert caps and caps[0].engine_args["max-num-seqs"] == 400_000 // 960 // 8 * 8 and "preempted 37" in caps[0].why
    pinned = SimpleNamespace(engine_args={"max-num-batched-tokens": 4096, "gpu-memory-utilization": 0.8})
    assert not [c for c in propose([batch], defaults, pinned, est) if set(c.engine_args) & set(pinned.engine_args)]


def test_fp8_kv_cache_is_proposed_only_when_allowed_and_where_decode_reads_much_kv():
    batch, chat, agent = named("batch,chat,agent")
    defaults = Candidate("vLLM defaults", {}, vllm_kv_tokens=460_000, vllm_resolved={"max-num-batched-tokens": 8192})
    spec = SimpleNamespace(engine_args={})
    # an 8B model in 16 bits: 15 GiB of weights, 128 KiB of KV per token
    est = SimpleNamespace(max_num_batched_tokens=8192, max_num_seqs=1024, weights_bytes=15 << 30,
                          kv_bytes_per_token=128 << 10)
    assert not [c for c in propose([batch], defaults, spec, est) if "kv-cache-dtype" in c.engine_args]
    got = propose([batch, agent], defaults, spec, est, allow_fp8_kv=True)
    assert got[0].engine_args == {"kv-cache-dtype": "fp8"}  # first: the one with a modelled effect
    assert "batch:" in got[0].why and "agent:" in got[0].why
    # batch: 600 requests would read ~520k tokens a step, capped at the 460k vLLM sized = 56 GiB vs 15 GiB
    from launcher.tune import fp8_kv_gain
    assert fp8_kv_gain(batch, 460_000, est) == pytest.approx((15 + 56.15) / (15 + 56.15 / 2) - 1, rel=1e-3)
    # agent: the system prompt is common to all 64 sessions and read once (cascade attention)
    w = agent.workload
    ctx = w.mean_seq_len() - sum(w.output_len) / 4
    assert w.decode_reads() == pytest.approx(64 * (ctx - 2048) + 2048)
    # short chats: at 256 they read ~14 GiB of KV a step (proposed); at 32 under 2 GiB against 15 GiB of
    # weights, at most +5%, which is not told from noise (not proposed)
    assert fp8_kv_gain(chat, 460_000, est) > 0.25
    assert {"kv-cache-dtype": "fp8"} in [c.engine_args for c in propose([chat], defaults, spec, est, allow_fp8_kv=True)]
    chat32 = replace(chat, workload=replace(chat.workload, concurrency=32))
    assert fp8_kv_gain(chat32, 460_000, est) < 0.05
    assert not [c for c in propose([chat32], defaults, spec, est, allow_fp8_kv=True) if "kv-cache-dtype" in c.engine_args]
    # nor when the user pinned the KV dtype
    pinned = SimpleNamespace(engine_args={"kv-cache-dtype": "auto"})
    assert not [c for c in propose([batch], defaults, pinned, est, allow_fp8_kv=True) if "kv-cache-dtype" in c.engine_args]


def test_the_defaults_start_again_as_soon_as_a_candidate_beats_them(tmp_path, monkeypatch):
    from launcher.tune import tuner as tune_mod

    started = []
    speed = {(): 1000, (("kv-cache-dtype", "fp8"),): 1300, (("max-num-batched-tokens", 16384),): 990}

    def run_one(self, c):
        started.append(c.label)
        c.start_s, c.sweep_s = 60.0, 30.0
        c.points["chat"] = [_pt(32, speed[tuple(c.engine_args.items())])]
    monkeypatch.setattr(Tuner, "_run_one", run_one)
    monkeypatch.setattr(tune_mod, "default_estimate", lambda spec: None)
    monkeypatch.setattr(tune_mod, "propose", lambda *a, **k: [Candidate.of({"kv-cache-dtype": "fp8"}, "x"),
                                                             Candidate.of({"max-num-batched-tokens": 16384}, "y")])
    res = _tuner(tmp_path).run()
    assert started == ["vLLM defaults", "kv-cache-dtype=fp8", "vLLM defaults (again)", "max-num-batched-tokens=16384"]
    wl = res.workloads[0]
    assert res.winner(wl).label == "kv-cache-dtype=fp8" and res.improvement(wl) == pytest.approx(0.3)
    from launcher.tune import launch_file
    spec = SimpleNamespace(name="tune-m", engine_args={}, to_dict=lambda: {"model_path": "m"})
    text = launch_file(spec, res.winner(wl), wl, res)
    assert "+30.0% output tokens/s" in text and "accuracy" in text and "kv-cache-dtype: fp8" in text


def test_settings_that_each_beat_the_defaults_are_tried_together():
    wl = named("chat")[0]
    res = TuneResult([wl], [_cand("vLLM defaults", {}, [_pt(32, 1000)]),
                            _cand("s", {"max-num-seqs": 64}, [_pt(32, 1100)]),
                            _cand("b", {"max-num-batched-tokens": 4096}, [_pt(32, 1150)]),
                            _cand("u", {"gpu-memory-utilization": 0.95}, [_pt(32, 1010)])])
    both = combine(res, [wl], 0.05)
    assert [c.engine_args for c in both] == [{"max-num-seqs": 64, "max-num-batched-tokens": 4096}]


def _tuner(tmp_path, workloads=None, **kw):
    spec = SimpleNamespace(model_path="m", model_name=None, size_in_billions=None, model=None, revision=None,
                           engine_args={}, name="tune-m")
    return Tuner(spec, workloads or named("chat"), vocab_size=1000, results_path=tmp_path / "results.json", **kw)


def test_a_candidate_that_would_overrun_the_budget_is_not_started(tmp_path, monkeypatch):
    t = _tuner(tmp_path, budget_s=60)
    monkeypatch.setattr(Tuner, "_run_one", lambda self, c: pytest.fail("started despite the budget"))
    t.res.candidates.append(_cand("vLLM defaults", {}, [_pt(32, 1000)]))  # 60 s start + 30 s sweep measured
    c = t.measure(Candidate("x", {"max-num-seqs": 64}))
    assert c.skipped.startswith("not run:") and "takes about 100 s" in c.skipped
    assert json.loads((tmp_path / "results.json").read_text())["result"]["candidates"][1]["skipped"]


def test_a_resumed_run_still_keeps_to_its_budget(tmp_path, monkeypatch):
    t = _tuner(tmp_path, budget_s=60)
    monkeypatch.setattr(Tuner, "_run_one", lambda self, c: pytest.fail("started despite the budget"))
    old = _cand("vLLM defaults", {}, [_pt(32, 1000)])
    old.resumed = True  # measured by an earlier run: its 100 s still tell what a start costs
    t.res.candidates.append(old)
    assert t.measure(Candidate("x", {"max-num-seqs": 64})).skipped.startswith("not run:")


def test_resume_reuses_measurements_only_for_the_same_launch_and_workloads(tmp_path, monkeypatch):
    t = _tuner(tmp_path)
    t.res.candidates.append(_cand("vLLM defaults", {}, [_pt(32, 1000)]))
    t.save()
    monkeypatch.setattr(Tuner, "_run_one", lambda self, c: c.points.update(chat=[_pt(32, 1)]))
    again = _tuner(tmp_path, resume=True)
    c = again.measure(Candidate("vLLM defaults", {}))
    assert c.resumed and c.score(again.workloads[0]) == 1000
    other = _tuner(tmp_path, named("chat", num_requests=7), resume=True)
    assert other.previous == []  # measured for another workload: not reused


def test_the_sweep_stops_at_the_first_miss_and_bisects_towards_where_the_target_binds(tmp_path, monkeypatch):
    from launcher.tune import measure as tune_mod

    sent = []

    def fake_bench(base, model, w, **kw):  # p99 TTFT grows with load: the 0.5 s target binds at 80
        sent.append(w.concurrency)
        ttft = {"p50": 0.1, "p90": 0.2, "p99": w.concurrency / 160}
        d = {"mean": 0.01, "p50": 0.01, "p90": 0.01, "p99": 0.01}
        return SimpleNamespace(output_throughput=30.0 * w.concurrency, request_throughput=1.0, ttft_s=ttft, tpot_s=d,
                               itl_s=d, completed=10, failed=0, duration_s=1.0, aborted="", server={}, gpu={})
    monkeypatch.setattr(tune_mod, "run_bench", fake_bench)
    t = _tuner(tmp_path, refine=2)
    wl = replace(named("chat")[0], levels=(32, 128, 256))
    pts = t.starts.sweep(wl, "http://x", "m", lambda: True, "c")
    assert sent == [32, 128, 80, 104]  # 256 is never sent; 80 meets, 104 does not
    assert [p.concurrency for p in pts] == [32, 80, 104, 128]
    c = Candidate("c", {}, points={"chat": pts})
    assert c.score(wl) == 30.0 * 80
    sent.clear()
    assert [p.concurrency for p in _tuner(tmp_path, refine=0).starts.sweep(wl, "u", "m", lambda: True, "c")] == [32, 128]


def test_a_workload_longer_than_the_servers_max_model_len_is_refused_naming_those_that_fit():
    """Worked by hand from the presets: agent reaches 2048 + 5 x (384 + 256) = 5248 tokens; at 1024 only chat
    (512 + 384 = 896) fits (rag 7680 + 256 + 128, batch 1024 + 512 do not)."""
    from launcher.errors import BadInput
    from launcher.workloads import PRESETS, check_fits

    assert PRESETS["agent"].workload.max_seq_len() == 5248
    with pytest.raises(BadInput) as e:
        check_fits(PRESETS["agent"].workload, 1024)
    assert "reaches 5248 tokens" in e.value.message and "at most 1024" in e.value.message
    assert e.value.hint.startswith("Named workloads that fit: chat.")
    check_fits(PRESETS["chat"].workload, 896)  # exactly at the limit: fits
    check_fits(PRESETS["agent"].workload, None)  # the server said nothing: not checked


def test_bench_with_a_named_workload_keeps_its_lengths_unless_given():
    """`bench --workload agent` sent bench's own default lengths (128/64) in place of the workload's: 3008 tokens a
    session, not agent's 2048 + 5 x (384 + 256) = 5248."""
    from launcher.cli.bench import _workload

    assert _workload("agent", 0, None, None, 8, 64, None, 0, None).max_seq_len() == 5248
    assert _workload("agent", 0, "100", "50", 8, 64, None, 0, None).max_seq_len() == 2048 + 5 * 150
    assert _workload(None, 0, None, None, 8, 64, None, 0, None).max_seq_len() == 128 + 64

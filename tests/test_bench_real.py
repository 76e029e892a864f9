"""`launcher bench` and `launcher tune` against the real vLLM engine (CPU build) with the tiny model."""
import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from conftest import QUICK_VLLM, ROOT, TINY, cli, vllm_processes_here, wait_for

pytestmark = pytest.mark.vllm


def test_bench_starts_measures_plots_and_stops(tmp_path):
    png = tmp_path / "bench.png"
    r = cli("bench", "--model-path", str(TINY), *QUICK_VLLM, "--max-model-len", "1024", "-n", "12", "-c", "3", "--prompt-len", "16:48",
            "--output-len", "8", "--json", "--plot", str(png))
    assert r.returncode == 0, r.stderr[-3000:]
    d = json.loads(r.stdout)
    assert d["completed"] == 12 and d["failed"] == 0 and not d["aborted"]
    assert d["output_throughput"] > 0 and d["request_throughput"] > 0
    assert 0 < d["ttft_s"]["p50"] <= d["ttft_s"]["p99"] <= d["latency_s"]["p99"]
    assert d["tpot_s"]["p50"] > 0 and len(d["timeline"]) == 12
    assert all(t["output_tokens"] == 8 for t in d["timeline"])  # ignore_eos + max_tokens: exact output lengths
    assert png.stat().st_size > 10_000
    assert not vllm_processes_here()


def test_bench_whose_server_dies_reports_partial_results_and_fails(tmp_path, launcher_home):
    # the README's way: a model path relative to the project folder
    r = cli("launch", "--model-path", "examples/tiny-llama", *QUICK_VLLM, "--detach", "--name", "victim",
            "--max-model-len", "1024")
    assert r.returncode == 0, r.stderr[-2000:]
    try:
        # from another folder, a workload longer than the launch's 1024 tokens: refused before any request (it sent
        # 13 requests that all failed 400, and from another folder the relative path was not found)
        log = launcher_home / "runs" / "victim" / "server.log"
        sent = log.read_text(errors="replace").count("POST /v1/completions")
        t = subprocess.run([sys.executable, "-m", "launcher", "bench", "--name", "victim", "--workload", "agent",
                            "-c", "8"], capture_output=True, text=True, cwd=str(tmp_path), env=os.environ.copy(),
                           timeout=300)
        assert t.returncode == 2 and "the server takes at most 1024" in t.stderr, t.stderr
        assert "Named workloads that fit: chat." in t.stderr and "does not exist" not in t.stderr, t.stderr
        assert log.read_text(errors="replace").count("POST /v1/completions") == sent
        out = tmp_path / "bench.json"
        with open(out, "w") as fh:
            b = subprocess.Popen([sys.executable, "-m", "launcher", "bench", "--name", "victim", "-n", "3000", "-c", "2",
                                  "--prompt-len", "16", "--output-len", "32", "--json"], stdout=fh, stderr=subprocess.PIPE,
                                 cwd=str(ROOT), env=os.environ.copy())
        wait_for(lambda: log.read_text(errors="replace").count("POST /v1/completions") >= 20, 120, poll_s=0.2,
                 what="the benchmark to be under way")
        st = json.loads((launcher_home / "runs" / "victim" / "state.json").read_text())
        psutil.Process(st["server"]["pid"]).send_signal(signal.SIGKILL)
        rc = b.wait(timeout=300)
        d = json.loads(out.read_text())
        assert rc == 1
        assert d["completed"] >= 1 and d["failed"] >= 1 and "died" in d["aborted"]  # partial results, and why
        assert d["errors"]
    finally:
        cli("stop", "victim", timeout=120)


def test_tune_sweeps_named_workloads_on_one_start_per_candidate_and_resumes(tmp_path):
    out = tmp_path / "tune"
    args = ["tune", "--model-path", str(TINY), *QUICK_VLLM, "--max-model-len", "1024", "--workload", "rag,agent",
            "--prefix-len", "64:128", "--prompt-len", "16:32", "--output-len", "8", "-n", "12",
            "--concurrency-levels", "2,4", "--max-num-batched-tokens-grid", "1024", "--min-gain", "100",
            "--out-dir", str(out), "--plot", str(out / "tradeoff.png"), "--json"]
    r = cli(*args, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    d = json.loads(r.stdout)
    cands = {c["label"]: c for c in d["candidates"]}
    assert set(cands) == {"vLLM defaults", "max-num-batched-tokens=1024"}
    for c in cands.values():
        assert c["start_s"] > 0 and c["error"] == ""
        for w in ("rag", "agent"):  # both workloads, every load level, on the one start of each candidate
            assert [p["concurrency"] for p in c["points"][w]] == [2, 4]
            assert all(p["failed"] == 0 and p["output_throughput"] > 0 for p in c["points"][w])
        # multi-turn sessions re-send their history: vLLM's own counter sees prefix-cache hits
        assert c["points"]["agent"][-1]["prefix_cache_hit_rate"] > 0.2
    assert cands["vLLM defaults"]["vllm_kv_tokens"] > 0
    for w in d["workloads"]:  # a 100x gain is required: the defaults stay, and say so
        assert w["winner"] == "vLLM defaults" and w["improvement"] == 0.0
        text = (out / f"{w['name']}.yaml").read_text()
        assert "max-model-len: 1024" in text and "max-num-batched-tokens" not in text
    assert d["defaults_again"] is None  # nothing beat the defaults: no second start of them
    assert (out / "tradeoff.png").stat().st_size > 10_000
    r2 = cli("launch", "--config", str(out / "rag.yaml"), "--print-config", "--json")
    assert r2.returncode == 0, r2.stderr

    t0 = time.monotonic()
    r3 = cli(*args, "--resume", timeout=300)
    assert r3.returncode == 0, r3.stderr[-2000:]
    assert time.monotonic() - t0 < 60 and r3.stderr.count("measured before") == 2  # nothing started again
    d3 = json.loads(r3.stdout)
    assert [w["winner_score"] for w in d3["workloads"]] == [w["winner_score"] for w in d["workloads"]]

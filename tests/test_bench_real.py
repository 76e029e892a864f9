"""`launcher bench` and `launcher tune` against the real vLLM engine (CPU build) with the tiny model."""
import json
import os
import signal
import subprocess
import sys

import psutil
import pytest

from conftest import ROOT, TINY, cli, wait_for

pytestmark = pytest.mark.vllm


def test_bench_starts_measures_plots_and_stops(tmp_path):
    png = tmp_path / "bench.png"
    r = cli("bench", "--model-path", str(TINY), "--max-model-len", "1024", "-n", "12", "-c", "3", "--prompt-len", "16:48",
            "--output-len", "8", "--json", "--plot", str(png))
    assert r.returncode == 0, r.stderr[-3000:]
    d = json.loads(r.stdout)
    assert d["completed"] == 12 and d["failed"] == 0 and not d["aborted"]
    assert d["output_throughput"] > 0 and d["request_throughput"] > 0
    assert 0 < d["ttft_s"]["p50"] <= d["ttft_s"]["p99"] <= d["latency_s"]["p99"]
    assert d["tpot_s"]["p50"] > 0 and len(d["timeline"]) == 12
    assert all(t["output_tokens"] == 8 for t in d["timeline"])  # ignore_eos + max_tokens: exact output lengths
    assert png.stat().st_size > 10_000
    left = [p for p in psutil.process_iter(["cmdline"]) if "vllm.entrypoints" in " ".join(p.info["cmdline"] or [])
            and str(TINY) in " ".join(p.info["cmdline"] or [])]
    assert not left


def test_bench_whose_server_dies_reports_partial_results_and_fails(tmp_path, launcher_home):
    r = cli("launch", "--model-path", str(TINY), "--detach", "--name", "victim", "--max-model-len", "1024")
    assert r.returncode == 0, r.stderr[-2000:]
    try:
        out = tmp_path / "bench.json"
        with open(out, "w") as fh:
            b = subprocess.Popen([sys.executable, "-m", "launcher", "bench", "--name", "victim", "-n", "3000", "-c", "2",
                                  "--prompt-len", "16", "--output-len", "32", "--json"], stdout=fh, stderr=subprocess.PIPE,
                                 cwd=str(ROOT), env=os.environ.copy())
        log = launcher_home / "runs" / "victim" / "server.log"
        wait_for(lambda: log.read_text(errors="replace").count("POST /v1/completions") >= 20, 120, poll_s=0.2,
                 what="the benchmark to be under way")
        st = json.loads((launcher_home / "runs" / "victim" / "state.json").read_text())
        psutil.Process(st["server"]["pid"]).send_signal(signal.SIGKILL)
        rc = b.wait(timeout=300)
        d = json.loads(out.read_text())
        assert rc == 1
        assert d["completed"] >= 10 and d["failed"] >= 1 and "died" in d["aborted"]
        assert d["errors"]
    finally:
        cli("stop", "victim", timeout=120)


def test_tune_ranks_candidates_and_writes_a_launch_file(tmp_path):
    lf = tmp_path / "tuned.yaml"
    r = cli("tune", "--model-path", str(TINY), "--max-model-len", "1024", "--max-num-seqs-grid", "2,32",
            "--max-num-batched-tokens-grid", "", "-n", "12", "-c", "8", "--prompt-len", "16", "--output-len", "8",
            "--out", str(lf), "--json", timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    d = json.loads(r.stdout)
    labels = [c["label"] for c in d["ranked"]]
    assert sorted(labels) == sorted(["vLLM defaults", "max-num-seqs=2", "max-num-seqs=32"])
    ran = [c for c in d["ranked"] if c["output_throughput"]]
    assert ran and ran == sorted(ran, key=lambda c: -c["output_throughput"]) or any(c["stopped_early"] for c in d["ranked"])
    assert d["winner"]["label"] == d["ranked"][0]["label"]
    text = lf.read_text()
    assert "engine_args" in text and "max-model-len: 1024" in text
    r2 = cli("launch", "--config", str(lf), "--print-config", "--json")
    assert r2.returncode == 0, r2.stderr

"""What users launch, on the real vLLM engine (the CPU build here): a LoRA adapter and n-gram speculative decoding,
two launches started at the same moment on one host, each with a memory budget in bytes."""
import json
import subprocess
import sys
import time
import urllib.request

import pytest

from conftest import QUICK_VLLM, ROOT, TINY, cli, run_processes

pytestmark = pytest.mark.vllm

ADAPTER = ROOT / "examples" / "tiny-llama-lora"
NGRAM = '{"method": "ngram", "num_speculative_tokens": 3, "prompt_lookup_max": 3}'


def _complete(endpoint: str, model: str, prompt: str) -> dict:
    body = json.dumps({"model": model, "prompt": prompt, "max_tokens": 12, "temperature": 0}).encode()
    req = urllib.request.Request(endpoint + "/completions", data=body, headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as resp:
        return json.loads(resp.read())


def test_lora_and_ngram_launches_started_together_both_answer(launcher_home, tmp_path):
    common = ["--model-path", str(TINY), *QUICK_VLLM, "--detach", "--max_model_len", "1024", "--gpu-memory-budget", "1GiB", "--json"]
    lora = ["--name", "lora", "--port", "18631", "--enable-lora", "--lora-modules", f"tinylora={ADAPTER}",
            "--max-lora-rank", "8"]
    ngram = ["--name", "ngram", "--port", "18632", "--speculative-config", NGRAM]
    procs = {name: subprocess.Popen([sys.executable, "-m", "launcher", "launch", *common, *extra], cwd=str(ROOT),
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for name, extra in (("lora", lora), ("ngram", ngram))}
    t0 = time.monotonic()
    try:
        _check_both(launcher_home, procs, {name: p.communicate(timeout=600) for name, p in procs.items()}, t0)
    finally:
        for name in procs:
            cli("stop", name)


def _check_both(launcher_home, procs, out, t0):
    for name, p in procs.items():
        assert p.returncode == 0, (name, out[name][1][-3000:])
    took = time.monotonic() - t0
    states = {name: json.loads(cli("status", name, "--json").stdout) for name in procs}
    assert all(s["state"] == "READY" for s in states.values()), states

    # one of them waited for the other's start, and its plan says what the first holds
    waited = [n for n in procs if "to finish starting" in out[n][1]]
    assert len(waited) == 1, {n: out[n][1][-2000:] for n in procs}
    second, first = waited[0], ({"lora", "ngram"} - set(waited)).pop()
    rec = json.loads((launcher_home / "runs" / second / "launch.json").read_text())
    assert f"Beside '{first}' (READY, CPU) holds" in rec["note"], rec["note"]
    assert "GiB of KV cache in host memory" in rec["note"]
    # the budget became the KV cache beside the weights: 1 GiB less the weights (and the adapters' stacks)
    for name in procs:
        r = json.loads((launcher_home / "runs" / name / "launch.json").read_text())
        assert 0 < r["cpu_kv"]["kv_cache_bytes"] < 1 << 30 and "--kv-cache-memory-bytes" in r["argv"]
        assert r["cpu_kv"]["weights_bytes"] + r["cpu_kv"]["kv_cache_bytes"] == 1 << 30
    assert json.loads((launcher_home / "runs" / "lora" / "launch.json").read_text())["cpu_kv"]["lora_bytes"] > 0

    # the adapter is served under its name and changes the answer; the n-gram launch answers
    lo = states["lora"]["endpoint"]
    with urllib.request.urlopen(lo + "/models", timeout=30) as resp:
        assert "tinylora" in [m["id"] for m in json.loads(resp.read())["data"]]
    adapted, base = _complete(lo, "tinylora", "Hello"), _complete(lo, str(TINY), "Hello")
    assert adapted["usage"]["completion_tokens"] > 0 and adapted["choices"][0]["text"] != base["choices"][0]["text"]
    ng = _complete(states["ngram"]["endpoint"], str(TINY), "one two three one two three one two")
    assert ng["usage"]["completion_tokens"] > 0
    assert "speculative_config" in (launcher_home / "runs" / "ngram" / "server.log").read_text()

    run_ids = {n: json.loads((launcher_home / "runs" / n / "state.json").read_text())["run_id"] for n in procs}
    for name in procs:
        assert cli("stop", name).returncode == 0
    assert not any(run_processes(r) for r in run_ids.values())
    print(f"both READY {took:.0f} s after the two launches began")

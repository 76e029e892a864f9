"""LoRA, speculative decoding and two models on one GPU, as vLLM 0.24.0 sized them on an H200 (2026-12-05,
benchmarks/results/h200-users/: raw lines and logs of starts made as `launcher launch` makes them, and two
launches through `launcher launch` at once). Each is planned again here exactly as it was started (the case's
config, draft and flags; the launcher's CUDA graph share) and must come within 1% of vLLM's KV cache, never above."""
import json
import shutil

import pytest

from conftest import ROOT

from launcher.engine_args import parse_argv
from launcher.engines import vllm as vllm_engine
from launcher.models import catalog
from launcher.planning import plan, resolve_model

RESULTS = ROOT / "benchmarks" / "results" / "h200-users"
CASES = {c["case"]: c for c in json.loads((ROOT / "benchmarks" / "gpu" / "cases-h200-users.json").read_text())}
MEASURED = [json.loads(line) for line in (RESULTS / "results.jsonl").read_text().splitlines()]


def _config(case: dict) -> dict:
    return case["config"] if "config" in case else catalog.lookup(case["model"], case["size"]).config


def _folder(tmp_path, case: dict) -> str:
    d = tmp_path / case["case"]
    d.mkdir()
    (d / "config.json").write_text(json.dumps(_config(case)))
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(ROOT / "benchmarks" / "gpu" / f, d)
    return str(d)


def _kv_tokens(text: str) -> int:
    return int(text.replace(",", ""))


@pytest.mark.parametrize("row", MEASURED, ids=[r["case"] for r in MEASURED])
def test_each_start_within_1_percent_and_never_above(row, tmp_path):
    case = CASES[row["case"]]
    for draft in case.get("drafts", []):
        _folder(tmp_path, draft)
    args = [a.replace("{MODELS}", str(tmp_path)) for a in case["args"]]
    spec = vllm_engine.arg_spec(allow_dump=False)
    p = plan(resolve_model(_folder(tmp_path, case), None, None, None, "none"), parse_argv(args, spec), env={},
             gpu_preset="H200", vllm_version="0.24.0")  # the release these starts were measured on
    vllm_tokens = _kv_tokens(row["kv_tokens"])
    err = (p.estimate.kv_cache_tokens - vllm_tokens) / vllm_tokens
    assert -0.01 <= err <= 0, f"{row['case']}: {p.estimate.kv_cache_tokens:,} against vLLM's {vllm_tokens:,} ({err:+.2%})"


@pytest.mark.parametrize("name, folder, budget", [("qwen", ("qwen2.5-instruct", "7"), "50GiB"),
                                                  ("llama", ("llama-3.1-instruct", "8"), "60GiB")])
def test_two_launches_on_one_gpu_within_1_percent(name, folder, budget, tmp_path):
    """two_models.sh: both launches started at the same moment with their own --gpu-memory-budget; the KV cache
    each vLLM logged (server-NAME.log) against the plan of the same launch."""
    log = (RESULTS / "two" / f"server-{name}.log").read_text(errors="replace")
    vllm_tokens = _kv_tokens(log.split("GPU KV cache size: ")[1].split(" tokens")[0])
    d = _folder(tmp_path, {"case": name, "config": catalog.lookup(*folder).config})
    p = plan(resolve_model(d, None, None, None, "none"), {"load-format": "dummy"}, env={}, gpu_preset="H200", vllm_version="0.24.0",
             gpu_memory_budget=budget)
    err = (p.estimate.kv_cache_tokens - vllm_tokens) / vllm_tokens
    assert -0.01 <= err <= 0, f"{name}: {p.estimate.kv_cache_tokens:,} against vLLM's {vllm_tokens:,} ({err:+.2%})"

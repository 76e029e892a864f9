"""Several launches on one GPU or host: one start at a time, what the running ones hold, a budget in bytes, how many
copies fit; and the matrix of GPU kinds x counts."""
import json
import subprocess
import sys
import time

import pytest

from conftest import ROOT, TINY, cli

from launcher.errors import BadInput
from launcher.estimator import EngineSettings, GpuBudget
from launcher.estimator.sharing import copies, smallest_share
from launcher.models.config import from_config
from launcher.planning import budget_settings

CFG = json.loads((TINY / "config.json").read_text())
MiB, GiB = 1 << 20, 1 << 30


def test_start_lock_makes_the_second_start_wait_and_names_the_first(launcher_home):
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from launcher.locks import StartLock\n"
        "lock = StartLock.acquire_waiting('first', 5)\nprint('held', flush=True)\nsys.stdin.readline()\n"
        "lock.release()\nprint('released', flush=True)\ntime.sleep(5)")],
        cwd=str(ROOT), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        from launcher.locks import StartLock, starting

        assert starting()["launch"] == "first"
        seen = []
        with pytest.raises(BadInput, match="'?first'? by launcher launch .PID"):
            StartLock.acquire_waiting("second", 0.3, on_wait=seen.append)
        assert seen and seen[0]["launch"] == "first"
        holder.stdin.write("\n")
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == "released"
        t0 = time.monotonic()
        lock = StartLock.acquire_waiting("second", 5)  # the holder process is still alive: released means released
        assert time.monotonic() - t0 < 1 and starting()["launch"] == "second"
        lock.release()
        assert starting() is None
    finally:
        holder.kill()


def test_neighbours_are_the_launches_whose_supervisor_holds_their_name(launcher_home):
    from launcher.locks import NameLock
    from launcher.neighbours import on_gpus, running
    from launcher.runs import run_dir, update_state, write_json

    for name, gpus in (("a", [0]), ("b", [1]), ("gone", [0])):
        run_dir(name).mkdir(parents=True)
        write_json(run_dir(name) / "launch.json", {"estimate": {
            "gpus": [{"index": i} for i in gpus], "requested_bytes": 40 * GiB, "outside_budget_bytes": GiB}})
        update_state(name, state="READY")
    with NameLock.acquire("a", "supervisor"), NameLock.acquire("b", "supervisor"):  # 'gone' has no supervisor
        found = running()
        assert [n.name for n in found] == ["a", "b"]
        assert [n.name for n in on_gpus(found, [0])] == ["a"] and found[0].held_bytes == 41 * GiB
        assert "holds 40.00 GiB per GPU (its share) + 1.00 GiB beside it" in found[0].describe()
        assert [n.name for n in running(exclude="a")] == ["b"]
    assert running() == []


def test_budget_becomes_the_utilization_of_that_share_on_a_gpu():
    """H100 80GB: CUDA reports 81,079 MiB (81,559 in nvidia-smi less 480); 20 GiB = 20,480 MiB is 0.25259 of it,
    rounded down to vLLM's 4 decimals: 0.2525."""
    m = from_config(CFG)
    s = budget_settings(m, EngineSettings(), "20GiB", GpuBudget("H100-80GB", 81559 * MiB))
    assert s.gpu_memory_utilization == 0.2525
    with pytest.raises(BadInput, match="not both"):
        budget_settings(m, EngineSettings(gpu_memory_utilization=0.5), "20GiB", GpuBudget("H100-80GB", 81559 * MiB))
    with pytest.raises(BadInput, match="more than the GPU"):
        budget_settings(m, EngineSettings(), "90GiB", GpuBudget("H100-80GB", 81559 * MiB))


def test_budget_on_the_cpu_build_is_the_kv_cache_beside_the_weights():
    """tiny-llama's weights in bfloat16: 2 x 512 x 256 (embedding, head) + 2 layers x (3 x 256 x 512 MLP +
    256 x (256 + 128 + 128) QKV + 256 x 256 o_proj + 2 x 256 norms) + 256 final norm, and the rotary cache
    2,048 x 64; x 2 bytes = 3,148,288 bytes; and each attention layer's four float32 scales (vLLM's Attention:
    _k_scale, _v_scale, _q_scale, _prob_scale), 2 x 16 bytes."""
    s = budget_settings(from_config(CFG), EngineSettings(), "1GiB", None)
    assert s.kv_cache_memory_bytes == GiB - 3_148_288 - 32
    with pytest.raises(BadInput, match="not more than the weights"):
        budget_settings(from_config(CFG), EngineSettings(), "1MiB", None)


def test_cpu_plan_refuses_a_kv_cache_the_host_cannot_hold():
    """vLLM 0.32.0's CPU worker, VLLM_CPU_KVCACHE_SPACE=100 on a 23.5 GiB host: "Available memory on node 0
    (22.1/23.54 GiB) on kv cache allocation is less than requested memory for kv (100.0 GiB)" after loading
    (2026-12-05); the pre-flight says so before."""
    from launcher.planning import cpu_kv_cache, settings_from_engine_args

    s = settings_from_engine_args({"max-model-len": 1024})
    out = cpu_kv_cache(from_config(CFG), s, {"VLLM_CPU_KVCACHE_SPACE": "100"}, available_bytes=int(22.1 * GiB))
    assert out["fits"] is False and "would refuse the KV cache" in out["reason"]
    assert "reason" not in cpu_kv_cache(from_config(CFG), s, {"VLLM_CPU_KVCACHE_SPACE": "1"}, available_bytes=int(22.1 * GiB))


def test_copies_take_the_smallest_share_that_fits_and_what_each_needs_beside_it():
    m = from_config({**CFG, "num_hidden_layers": 32, "hidden_size": 4096, "num_attention_heads": 32,
                                   "num_key_value_heads": 8, "head_dim": 128, "intermediate_size": 14336,
                     "vocab_size": 128256, "max_position_embeddings": 131072, "dtype": "bfloat16"})  # Llama-3.1-8B
    gpu = GpuBudget("H200", 143771 * MiB)
    u, e = smallest_share(m, EngineSettings(), gpu, (0, 24, 0), 8192)
    assert e.fits and e.max_model_len == 8192
    from launcher.estimator import estimate

    assert not estimate(m, EngineSettings(gpu_memory_utilization=round(u - 0.01, 2), max_model_len=8192),
                        GpuBudget("H200", 143771 * MiB, None), vllm_version=(0, 24, 0), suggest=False).fits
    c = copies(m, EngineSettings(), gpu, (0, 24, 0), 8192)
    assert c["copies"] * c["footprint_bytes"] <= gpu.total_bytes < (c["copies"] + 1) * c["footprint_bytes"]
    assert c["footprint_bytes"] > e.requested_bytes + e.outside_budget_bytes  # each with its own CUDA context
    half = copies(m, EngineSettings(), GpuBudget("H200", 143771 * MiB, 143771 * MiB // 2), (0, 24, 0), 8192)
    assert half["copies"] < c["copies"]  # what others hold is not there to share


def test_matrix_cells_agree_with_the_single_estimate(tmp_path):
    """Each cell of `estimate --gpu all` is what `estimate --gpu KIND --num-gpus N` says with that layout."""
    r = cli("estimate", "--model-name", "llama-3.1-instruct", "--size-in-billions", "70", "--gpu", "all",
            "--max_model_len", "32768", "--json", "--plot", str(tmp_path / "m.png"))
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert (tmp_path / "m.png").stat().st_size > 1000
    cells = out["cells"]
    assert len(cells) == 11 * 4 and {c["num_gpus"] for c in cells} == {1, 2, 4, 8}
    assert any(c["fits"] for c in cells) and any(c["fits"] is False for c in cells)
    from launcher.cli import run
    import contextlib
    import io

    for c in cells[::3]:  # a third of them through the CLI's own path, in-process
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            run(["estimate", "--model-name", "llama-3.1-instruct", "--size-in-billions", "70", "--gpu", c["gpu"],
                 "--num-gpus", str(c["num_gpus"]), "--max_model_len", "32768", "--tensor-parallel-size",
                 str(c["tensor_parallel_size"]), "--pipeline-parallel-size", str(c["pipeline_parallel_size"]), "--json"])
        single = json.loads(buf.getvalue())
        assert (single["fits"], single["max_model_len_fit"], single["max_concurrency"]) == \
            (c["fits"], c["max_model_len_fit"], c["max_concurrency"]), (c, single["reason"])


def test_matrix_refuses_unknown_kinds_and_per_count_options():
    r = cli("estimate", "--model-path", str(TINY), "--gpu", "L4,H300")
    assert r.returncode == 2 and "unknown GPU kind 'H300'" in r.stderr
    r = cli("estimate", "--model-path", str(TINY), "--gpu", "all", "--num-gpus", "2")
    assert r.returncode == 2 and "drop" in r.stderr

"""CLI through typer's CliRunner (and a subprocess where exit codes and imports matter)."""
import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from conftest import ROOT, TINY, cli
from launcher.cli import app

runner = CliRunner()
QWEN32 = ["--model-name", "deepseek-r1-distill-qwen", "--size-in-billions", "32", "--gpu", "H100-80GB"]




def test_estimate_json_has_the_documented_keys():
    r = runner.invoke(app, ["estimate", *QWEN32, "--max-model-len", "auto", "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    for k in ("fits", "max_model_len", "max_model_len_fit", "kv_cache_tokens", "kv_cache_bytes", "weights_bytes",
              "activation_bytes", "cudagraph_bytes", "non_torch_bytes", "requested_bytes", "gpus", "vllm_version"):
        assert k in d
    assert d["fits"] and d["max_model_len"] == d["max_model_len_fit"]


@pytest.mark.parametrize("spelling", ["--max_model_len", "--max-model-len"])
def test_both_spellings_and_exit_3_when_it_does_not_fit(spelling):
    r = cli("estimate", *QWEN32, spelling, "131072", "--json")
    assert r.returncode == 3
    d = json.loads(r.stdout)
    assert d["fits"] is False and 0 < d["max_model_len_fit"] < 131072 and d["max_model_len"] == 131072


def test_human_output_shows_breakdown_verdict_and_suggestion():
    r = runner.invoke(app, ["estimate", *QWEN32, "--max_model_len", "131072"])
    assert r.exit_code == 3
    for s in ("weights", "KV cache", "does not fit", "--max-model-len"):
        assert s in r.stdout


@pytest.mark.parametrize("args,msg", [
    (["--max_model_len", "abc"], "expects an integer"),
    (["--max-model-len", "-5"], "must be at least 1"),
    (["--gpu-memory-utilization", "1.5"], "(0, 1]"),
    (["--tensor-parallel-size", "3"], "does not divide"),
    (["--max-model-lenn", "5"], "Did you mean 'max-model-len'"),
    (["--kv-cache-dtype", "fp9"], "must be one of"),
])
def test_bad_engine_input_is_one_line_and_exit_2(args, msg):
    r = cli("estimate", *QWEN32, *args)
    assert r.returncode == 2, r.stderr
    assert msg in r.stderr and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_bad_model_inputs(tmp_path):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text("{not json")
    (tmp_path / "arch").mkdir()
    (tmp_path / "arch" / "config.json").write_text(json.dumps({"architectures": ["BertModel"], "hidden_size": 8}))
    cases = [(["--model-path", str(tmp_path / "nope")], "does not exist"),
             (["--model-path", str(tmp_path)], "no config.json"),
             (["--model-path", str(tmp_path / "bad")], "malformed JSON"),
             (["--model-path", str(tmp_path / "arch")], "has no 'num_hidden_layers'"),
             (["--model-name", "qwen25", "--size-in-billions", "7"], "Close matches")]
    for args, msg in cases:
        r = cli("estimate", *args, "--gpu-memory", "80GiB")
        assert r.returncode == 2 and msg in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)


def test_no_gpu_and_no_budget_is_said_plainly(monkeypatch):
    env = dict(__import__("os").environ, CUDA_VISIBLE_DEVICES="")
    r = cli("estimate", "--model-name", "qwen2.5", "--size-in-billions", "7", "--device", "cuda", env=env)
    assert r.returncode == 2 and "no GPU found" in r.stderr


def test_cpu_build_reports_the_kv_cache_from_vllm_cpu_kvcache_space():
    env = dict(__import__("os").environ, VLLM_CPU_KVCACHE_SPACE="1", CUDA_VISIBLE_DEVICES="")
    r = cli("estimate", "--model-path", str(TINY), "--device", "cpu", "--max_model_len", "1024", "--json", env=env)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    # what vLLM's CPU build logged for this model and space: "CPU KV cache size: 1,048,576 tokens"
    assert d["device"] == "cpu" and d["kv_cache_tokens"] == 1048576


def test_help_and_estimate_do_not_import_torch_vllm_or_transformers():
    code = ("import sys\n"
            "from launcher.cli import app\n"
            "from typer.testing import CliRunner\n"
            "r = CliRunner().invoke(app, ['estimate', '--model-name', 'qwen3', '--size-in-billions', '8', '--gpu', 'H200', '--json'])\n"
            "assert r.exit_code == 0, r.output\n"
            "r = CliRunner().invoke(app, ['--help'])\n"
            "bad = [m for m in ('torch', 'vllm', 'transformers') if m in sys.modules]\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_core_does_not_import_typer_or_rich():
    code = ("import sys\nimport launcher.estimator, launcher.planning, launcher.supervisor.run, launcher.launching, launcher.smoke\n"
            "bad = [m for m in ('typer', 'rich') if m in sys.modules]\nassert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


@pytest.mark.parametrize("args,rc", [
    (["--help"], 0),
    (["estimate", *QWEN32, "--max-model-len", "auto", "--json"], 0),
    (["launch", *QWEN32, "--max_model_len", "131072"], 3),
    (["smoke", "--model-path", str(TINY), "--max-model-lenn", "1024"], 2),
])
def test_start_up_paths_on_a_fresh_home_import_only_what_they_need(args, rc, tmp_path):
    """--help, estimate, a refusal and a bad engine argument: no pydantic, torch, vllm or transformers,
    and no subprocess reading vLLM's argument list (the shipped list of the installed version is used)."""
    import os
    env = dict(os.environ, LAUNCHER_HOME=str(tmp_path / "fresh"), LAUNCHER_CACHE=str(tmp_path / "cache"))
    r = subprocess.run([sys.executable, "-X", "importtime", "-m", "launcher", *args], capture_output=True, text=True,
                       env=env, timeout=120)
    assert r.returncode == rc, r.stderr[-2000:]
    mods = {line.split("|")[-1].strip() for line in r.stderr.splitlines() if line.startswith("import time:")}
    bad = sorted(m for m in mods if m.split(".")[0] in ("pydantic", "torch", "vllm", "transformers"))
    assert not bad, bad
    assert not (tmp_path / "cache").exists(), "vLLM's argument list was dumped instead of the shipped one"


@pytest.mark.parametrize("cmd", [["estimate", "--model-name", "qwen3", "--size-in-billions", "8", "--gpu", "H200"],
                                 ["launch", "--model-path", str(TINY)], ["smoke", "--model-path", str(TINY)]])
@pytest.mark.parametrize("n", ["0", "-2"])
def test_impossible_gpu_counts_exit_2(cmd, n):
    r = cli(*cmd, "--num-gpus", n)
    assert r.returncode == 2 and "--num-gpus" in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_a_launch_file_with_zero_gpus_exits_2(tmp_path):
    f = tmp_path / "l.yaml"
    f.write_text(f"model_path: {TINY}\nnum_gpus: 0\n")
    r = cli("launch", "--config", str(f))
    assert r.returncode == 2 and "num_gpus must be at least 1" in r.stderr, r.stderr


# Flags whose meaning differs between the commands that take them (each declared where its meaning is)
PER_COMMAND_FLAGS = {
    "--name": "a launch (common), a cluster (cluster), the running launch to benchmark (bench)",
    "--port": "the server's port (common), the Ray head's GCS port (cluster up), the gateway's own (serve: 8080)",
    "--timeout": "the smoke's whole deadline, bench's start and request timeout, tune's per candidate, a node's join",
    "--plot": "a different figure per command",
    "--workload": "one named workload (bench), several compared on the same starts (tune)",
    "--num-requests": "bench's count (default 100) and tune's override of each workload's own",
    "--prompt-len": "bench's length and tune's override of each workload's own",
    "--output-len": "bench's length and tune's override of each workload's own",
    "--adopt": "launch --adopt, and the hidden supervisor command's own",
}


def test_each_cli_option_is_declared_once():
    """Every typer.Option flag of launcher/cli is declared in one place (cli/common.py for those several commands
    share), but for the flags whose meaning differs between commands (PER_COMMAND_FLAGS)."""
    import ast
    import collections

    seen = collections.defaultdict(list)
    for f in sorted((ROOT / "launcher" / "cli").glob("*.py")):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "Option" and node.args \
                    and isinstance(node.args[0], ast.Constant):
                seen[node.args[0].value].append(f.name)
    again = {flag: where for flag, where in seen.items() if len(where) > 1}
    assert set(again) == set(PER_COMMAND_FLAGS), again


def test_a_draft_model_that_is_nowhere_is_one_line_exit_2():
    """Was "internal error: HFValidationError" (exit 1): a path that does not exist went to the Hub as a repo id."""
    r = cli("estimate", "--model-path", str(TINY), "--gpu", "H100-80GB",
            "--speculative-config", '{"model": "/nonexistent", "num_speculative_tokens": 4}')
    assert r.returncode == 2, r.stderr
    assert "draft model '/nonexistent' was not found" in r.stderr and "internal error" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("rank,ok", [("7", False), ("8", True), ("300", False)])
def test_max_lora_rank_only_the_ranks_vllm_lists(rank, ok):
    """vLLM's LoRAConfig takes max_lora_rank from a fixed list (1, 8, 16, ..., 512); 7 passed before."""
    r = cli("estimate", "--model-path", str(TINY), "--gpu", "H100-80GB", "--enable-lora", "--max-lora-rank", rank)
    assert (r.returncode == 0) is ok, r.stderr
    if not ok:
        assert r.returncode == 2 and "--max-lora-rank must be one of" in r.stderr


def _json(*args):
    r = cli("estimate", *args, "--json")
    return r.returncode, json.loads(r.stdout)


def test_a_planned_card_never_blames_other_processes_and_its_advice_fits():
    """Llama-3.1-8B at 8k on a planned L4: nothing else runs on a card described with --gpu, so the verdict says the
    bare card lacks vLLM's room beside its share (not 'other processes hold it'), and the utilization it advises
    is re-estimated here and fits."""
    base = ["--model-name", "llama-3.1-instruct", "--size-in-billions", "8", "--gpu", "L4", "--max_model_len", "8192",
            "--vllm-version", "0.24.0"]  # 0.24's default share (0.9); newer releases take the card differently
    rc, d = _json(*base)
    assert rc == 3 and d["cause"] == "free_memory"
    assert "other processes" not in d["reason"] + " ".join(d["suggestions"]) and "bare card" in d["reason"]
    flag, value = d["suggestions"][0].split(" (")[0].split()
    assert flag == "--gpu-memory-utilization"
    rc, again = _json(*base, flag, value)
    assert rc == 0 and again["fits"]


def test_more_gpus_than_the_launch_uses_advises_tensor_parallel_that_fits():
    """--gpu L4 --num-gpus 8 without --tensor-parallel-size planned one GPU holding 131 GiB of weights and advised
    about free memory; now the cause is the weights and the advice splits the model over the 8 GPUs."""
    base = ["--model-name", "llama-3.1-instruct", "--size-in-billions", "70", "--gpu", "L4", "--num-gpus", "8",
            "--vllm-version", "0.24.0",
            "--max_model_len", "32768"]
    rc, d = _json(*base)
    assert rc == 3 and d["cause"] == "weights"
    advice = [w for w in d["suggestions"][0].split(" on ")[0].split() if w != "with"]
    assert advice[:2] == ["--tensor-parallel-size", "8"], d["suggestions"]
    rc, again = _json(*base, *advice)  # with the share and length it names where 8 GPUs need them too
    assert rc == 0 and again["fits"]


def test_a_fit_matrix_cell_says_the_change_that_fits_not_a_length_above_the_one_asked():
    """L4 x8 for Llama-3.1-70B at 32k read '✗ 75,744': a length above the one asked beside a cross. The cell's cause
    is the room beside the share: it now names the utilization at which it fits."""
    r = runner.invoke(app, ["estimate", "--model-name", "llama-3.1-instruct", "--size-in-billions", "70",
                            "--max_model_len", "32768", "--gpu", "L4,H200", "--vllm-version", "0.24.0", "--json"])
    rows = json.loads(r.stdout)
    cell = next(c for c in (rows["cells"] if isinstance(rows, dict) else rows) if c["gpu"] == "L4" and c["num_gpus"] == 8)
    assert cell["fits"] is False and cell["fix"].startswith("--gpu-memory-utilization")


def test_every_option_of_every_command_shows_a_readable_metavar():
    """No `<function>` or `object at 0x...` in any command's --help (a click_type typer wraps as a function)."""
    import re

    from typer.testing import CliRunner

    from launcher.cli import _command, app

    def commands(cmd, path=()):
        yield path
        for name, sub in getattr(cmd, "commands", {}).items():
            if not sub.hidden:
                yield from commands(sub, path + (name,))

    bad = []
    for path in commands(_command()):
        out = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "200"}).output
        bad += [f"{' '.join(path)}: {m}" for m in re.findall(r"<function>|object at 0x\w+|<\w+\.\w+[^>]*>", out)]
    assert not bad, bad


def test_ps_at_80_columns_folds_a_long_endpoint_instead_of_cutting_it():
    """At 80 columns `ps` showed `http://127.0.0.1:…`: the endpoint a user copies was cut."""
    import io

    from rich.console import Console

    from launcher.cli.manage import _render_ps

    buf = io.StringIO()
    row = {"name": "qwen-7b-instruct", "state": "READY", "pid": 123456, "port": 18001, "restarts": 0,
           "uptime_s": 12345.6, "endpoint": "http://127.0.0.1:18001/v1", "reason": "",
           "gateway": {"state": "running", "url": "http://127.0.0.1:8080"}}
    _render_ps([row], Console(file=buf, width=80, color_system=None))
    text = buf.getvalue()
    assert "…" not in text and max(len(ln) for ln in text.splitlines()) <= 80
    cells = "".join(ln.split("│")[7].strip() for ln in text.splitlines() if ln.count("│") > 7)
    assert cells == "http://127.0.0.1:18001/v1", text


def test_a_free_port_is_never_handed_out_twice(monkeypatch):
    """`cluster up --local-nodes` picks a port for each Ray component before any is bound; the system offered the
    dashboard's port again for the dashboard agent and the head node refused to start (seen in CI). Offered the
    same port twice, find_free_port asks again."""
    import socket as socket_mod

    from launcher import health

    offered = iter([40001, 40001, 40002])
    real = socket_mod.socket

    class Fake(real):
        def getsockname(self):
            return ("127.0.0.1", next(offered))

    monkeypatch.setattr(health.socket, "socket", Fake)
    monkeypatch.setattr(health, "_GIVEN", set())
    assert [health.find_free_port(), health.find_free_port()] == [40001, 40002]
    # a port promised elsewhere (the dashboard port another process chose) is asked again too
    offered = iter([40005, 40006])
    assert health.find_free_port(avoid={40005}) == 40006


def test_a_local_nodes_ports_avoid_the_heads_gcs_and_dashboard_ports(monkeypatch):
    """The head's GCS and dashboard ports come from the inventory (the caller chose them; nothing listens yet): the
    ports picked for a local node's other components are never those."""
    from launcher import health
    from launcher.cluster import control
    from launcher.cluster.inventory import local

    inv = local(2, port=40101, dashboard_port=40102)
    offered = iter([40102, 40101, *range(40200, 40230)])
    monkeypatch.setattr(health, "_GIVEN", set())

    def first_offered(host="127.0.0.1", avoid=frozenset()):
        port = next(offered)
        while port in avoid:
            port = next(offered)
        return port

    monkeypatch.setattr(health, "find_free_port", first_offered)
    name, spec = inv.nodes()[0]
    argv = control._node_argv("ray", inv, name, spec, True, True, 0)
    ports = [argv[i + 1] for i, x in enumerate(argv) if x.endswith("-port") and x not in ("--port", "--dashboard-port")]
    assert "40101" not in ports and "40102" not in ports and len(set(ports)) == len(ports)

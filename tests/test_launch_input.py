"""Bad input to launch/smoke: a clear error and nothing started."""
import json
import math
import os

import pytest

from conftest import ROOT, TINY, cli, vllm_processes_here


@pytest.fixture
def nothing_started():
    before = set(vllm_processes_here())
    yield
    assert set(vllm_processes_here()) - before == set(), "a server was started"


@pytest.mark.parametrize("args,msg", [
    (["--max_model_lenn", "1024"], "Did you mean 'max-model-len'"),
    (["--max-model-len", "lots"], "expects an integer"),
    (["--max-num-seqs", "--enforce-eager"], "needs a value"),
    (["--served-model-name", "--port"], "requires an argument"),
    (["--served-model-name", "--tokenizer"], "needs a value"),
    (["--enforce-eager=maybe"], "is a switch"),
    (["--port", "70000"], "1..65535"),
    (["--model", "other"], "either --model or --model-path"),  # --model is the launcher's (a Hub id or folder)
    (["--model-engine", "llama.cpp"], "not supported"),
])
@pytest.mark.parametrize("command", ["launch", "smoke"])
def test_bad_flags_fail_fast_with_exit_2(command, args, msg, nothing_started):
    r = cli(command, "--model-path", str(TINY), *args)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert msg in r.stderr and "Traceback" not in r.stderr


def test_injection_attempts_stay_literal_argv_elements(nothing_started):
    r = cli("launch", "--model-path", str(TINY), "--served-model-name", "x; rm -rf /", "--print-config", "--json")
    assert r.returncode == 0, r.stderr
    cmd = json.loads(r.stdout)["command"]
    i = cmd.index("--served-model-name")
    assert cmd[i + 1] == "x; rm -rf /"  # one argv element, never given to a shell


@pytest.mark.parametrize("spelling", ["--config", "-f"])  # README and docs/gateway.md say `launch -f`
def test_launch_file_merges_and_flags_win(tmp_path, nothing_started, spelling):
    f = tmp_path / "launch.yaml"
    f.write_text(f"model_path: {TINY}\nname: from-file\nport: 18555\nengine_args:\n  max_model_len: 512\n  enforce-eager: true\n")
    r = cli("launch", spelling, str(f), "--port", "18556", "--max-model-len", "256", "--print-config", "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    cmd = d["command"]
    assert d["launch"]["name"] == "from-file" and d["port"] == 18556
    assert cmd[cmd.index("--max-model-len") + 1] == "256" and "--enforce-eager" in cmd


@pytest.mark.parametrize("text,msg", [
    ("model_path: [unclosed", "malformed"),
    ("!!python/object/apply:os.system ['echo pwned']", "malformed"),
    ("model_path: x\nmodle_name: y\n", "unknown key 'modle_name'"),
    ("- just\n- a list\n", "expected a mapping"),
    ("engine_args:\n  max_model_lenn: 5\n", "Did you mean 'max-model-len'"),
    ("port: eighty\n", "port"),
])
def test_malformed_launch_files(tmp_path, text, msg, nothing_started):
    f = tmp_path / "launch.yaml"
    f.write_text(text)
    r = cli("launch", "--config", str(f), "--model-path", str(TINY))
    assert r.returncode == 2 and msg in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "pwned").exists()


def test_non_loopback_host_without_api_key_is_refused(nothing_started):
    env = {k: v for k, v in os.environ.items() if k != "VLLM_API_KEY"}
    r = cli("launch", "--model-path", str(TINY), "--host", "0.0.0.0", env=env)
    assert r.returncode == 2 and "without an API key" in r.stderr


def test_api_key_goes_through_the_environment_only(nothing_started):
    env = dict(os.environ, MY_KEY="s3cret-value-123")
    r = cli("launch", "--model-path", str(TINY), "--host", "0.0.0.0", "--api-key-env", "MY_KEY", "--print-config", "--json", env=env)
    assert r.returncode == 0, r.stderr
    assert "s3cret-value-123" not in r.stdout


def test_does_not_fit_is_refused_before_starting(nothing_started):
    r = cli("launch", "--model-name", "deepseek-r1-distill-qwen", "--size-in-billions", "32", "--gpu", "H100-80GB",
            "--max_model_len", "131072")
    assert r.returncode == 3 and "does not fit" in r.stderr and "--max-model-len" in r.stderr


def test_auto_launches_with_the_suggested_length(nothing_started):
    r = cli("launch", "--model-name", "deepseek-r1-distill-qwen", "--size-in-billions", "32", "--gpu", "H100-80GB",
            "--max_model_len", "auto", "--print-config", "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    cmd = d["command"]
    assert int(cmd[cmd.index("--max-model-len") + 1]) == d["estimate"]["max_model_len_fit"]
    assert cmd[cmd.index("--model") + 1] == "deepseek-ai/DeepSeek-R1-Distill-Qwen-32B"


def test_vllm_use_v1_warns_on_recent_vllm(nothing_started):
    r = cli("launch", "--model-path", str(TINY), "--env", "VLLM_USE_V1=1", "--print-config")
    assert r.returncode == 0 and "VLLM_USE_V1 has no effect" in r.stderr


def test_port_in_use_is_refused_before_starting(nothing_started):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    try:
        r = cli("launch", "--model-path", str(TINY), "--port", str(s.getsockname()[1]))
        assert r.returncode == 2 and "already in use" in r.stderr
    finally:
        s.close()


def test_triton_model_json_is_read_as_it_is(tmp_path, nothing_started):
    f = tmp_path / "model.json"
    f.write_text(json.dumps({"model": str(TINY), "gpu_memory_utilization": 0.5, "enforce_eager": True,
                             "max_model_len": 512}))
    r = cli("launch", "--config", str(f), "--print-config", "--json")
    assert r.returncode == 0, r.stderr
    cmd = json.loads(r.stdout)["command"]
    assert cmd[cmd.index("--model") + 1] == str(TINY)
    assert cmd[cmd.index("--max-model-len") + 1] == "512" and "--enforce-eager" in cmd
    assert cmd[cmd.index("--gpu-memory-utilization") + 1] == "0.5"


def test_vllm_config_yaml_is_read_as_it_is_and_flags_win(tmp_path, nothing_started):
    f = tmp_path / "vllm.yaml"
    f.write_text(f"model: {TINY}\nport: 18557\nmax-model-len: 256\nserved-model-name: tiny-x\nmax_num_seqs: 8\n")
    r = cli("launch", "--config", str(f), "--max-num-seqs", "4", "--print-config", "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    cmd = d["command"]
    assert d["port"] == 18557 and cmd[cmd.index("--served-model-name") + 1] == "tiny-x"
    assert cmd[cmd.index("--max-model-len") + 1] == "256" and cmd[cmd.index("--max-num-seqs") + 1] == "4"


@pytest.mark.parametrize("text,msg", [
    ("model: x\nmax-model-lenn: 5\n", "unknown key 'max_model_lenn'. Did you mean"),
    ("model: x\nmodel_path: y\n", "either model or model_path"),
    ("model: [1, 2]\n", "model must be a path"),
])
def test_foreign_launch_files_still_reject_what_they_cannot_mean(tmp_path, text, msg, nothing_started):
    f = tmp_path / "vllm.yaml"
    f.write_text(text)
    r = cli("launch", "--config", str(f))
    assert r.returncode == 2 and msg in r.stderr and "Traceback" not in r.stderr, r.stderr


def _launch_json(monkeypatch, capsys, *args):
    """`launcher launch ... --print-config --json` in this process, with vLLM 0.24.0's GPU build taken for the
    installed one: a launch plans for the installed GPU build (this host has the CPU build, for which a plan for
    described GPUs is for the newest release, where vLLM measures its graphs itself)."""
    import contextlib
    import io

    from launcher.cli import run
    from launcher.engines import vllm as vllm_engine

    monkeypatch.setattr(vllm_engine, "installed", lambda python=None: vllm_engine.Installed("vllm", "0.24.0"))
    with contextlib.redirect_stderr(io.StringIO()):
        assert run(list(args)) == 0
    return json.loads(capsys.readouterr().out)


def test_the_launcher_keeps_the_cuda_graph_share_itself(nothing_started, launcher_home, monkeypatch, capsys):
    """A V1-runner model with CUDA graphs (vLLM 0.24-0.33): vLLM gets the share less the graph estimate and its own
    estimate off; the user's utilization is what the estimate reports, and the user's own setting of the variable
    wins."""
    base = ("launch", "--model-name", "qwen2.5-instruct", "--size-in-billions", "7", "--gpu", "H200",
            "--gpu-memory-utilization", "0.9", "--print-config", "--json")
    d = _launch_json(monkeypatch, capsys, *base)
    e, cmd = d["estimate"], d["command"]
    assert e["graph_memory"] == "launcher" and e["gpu_memory_utilization"] == 0.9
    assert float(cmd[cmd.index("--gpu-memory-utilization") + 1]) == e["vllm_gpu_memory_utilization"] < 0.9
    assert d["env"] == {"VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS": "0"}
    assert d["launch"]["engine_args"]["gpu-memory-utilization"] in (0.9, "0.9")  # the user's value is kept
    kept = e["requested_bytes"] - math.ceil(e["vllm_gpu_memory_utilization"] * e["requested_bytes"] / 0.9)
    assert abs(kept - e["cudagraph_bytes"]) <= 1 << 20 and e["graph_segment_bytes"] == 0
    monkeypatch.setenv("VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS", "1")
    d = _launch_json(monkeypatch, capsys, *base)
    monkeypatch.delenv("VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS")
    assert d["estimate"]["graph_memory"] == "vllm" and d["env"] == {} and d["estimate"]["graph_segment_bytes"] > 0
    assert d["command"][d["command"].index("--gpu-memory-utilization") + 1] == "0.9"
    d = _launch_json(monkeypatch, capsys, *base[:-2], "--env", "VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS=0",
                     "--print-config", "--json")
    assert d["estimate"]["graph_memory"] == "off" and d["estimate"]["cudagraph_bytes"] == 0
    # eager mode or the V2 runner (Llama): nothing to keep, nothing changed
    d = _launch_json(monkeypatch, capsys, "launch", "--model-name", "llama-3.1-instruct", "--size-in-billions", "8",
                     "--gpu", "H200", "--print-config", "--json")
    assert d["env"] == {} and "--gpu-memory-utilization" not in d["command"]


def test_launcher_port_is_the_port_tried_first_without_port(monkeypatch):
    """$LAUNCHER_PORT replaces 8000 as the port tried first; where it is taken a free one is chosen; a bad value is one
    line, exit 2."""
    import socket

    from launcher import health

    free = health.find_free_port()
    env = dict(os.environ, LAUNCHER_PORT=str(free))
    r = cli("launch", "--model-path", str(TINY), "--print-config", "--json", env=env)
    assert r.returncode == 0 and json.loads(r.stdout)["port"] == free, r.stderr
    with socket.socket() as held:
        held.bind(("127.0.0.1", free))
        held.listen()
        r = cli("launch", "--model-path", str(TINY), "--print-config", "--json", env=env)
        assert r.returncode == 0 and json.loads(r.stdout)["port"] not in (free, 8000), r.stdout
    r = cli("launch", "--model-path", str(TINY), "--print-config", "--json", env=dict(env, LAUNCHER_PORT="80x"))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "LAUNCHER_PORT must be a port number" in r.stderr


@pytest.mark.parametrize("fmt,q,passed", [("pytorch", "fp8", "fp8"), (None, "fp8", "fp8"), ("awq", "awq", None),
                                          ("pytorch", "none", None), (None, None, None)])
def test_model_options_read_once_for_launch_and_estimate(fmt, q, passed):
    """--model-format/--quantization: launch passed --quantization awq for an AWQ build where estimate did not (three
    normalisations that differed). Now one (planning.ModelOptions): a method is passed to vLLM only where it
    quantizes a full-precision checkpoint while loading."""
    from launcher.planning import ModelOptions

    opts = ModelOptions.of(fmt, q)
    assert opts.engine_args({}).get("quantization") == passed
    assert opts.engine_args({"quantization": "bitsandbytes"})["quantization"] == "bitsandbytes"  # the user's own wins
    flags = ["--model-name", "qwen2.5-instruct", "--size-in-billions", "7", "--print-config", "--json", "--max-model-len", "1024",
             *(["--model-format", fmt] if fmt else []), *(["--quantization", q] if q else [])]
    r = cli("launch", *flags, timeout=120)
    assert r.returncode == 0, r.stderr
    argv = json.loads(r.stdout)["command"]
    assert (argv[argv.index("--quantization") + 1] if "--quantization" in argv else None) == passed


def test_one_builder_reads_the_flags_and_leaves_unsaid_switches_to_the_file(tmp_path, nothing_started):
    """cli/common.spec_from_cli builds every command's LaunchSpec: a switch left off (--no-preflight not given) is
    not said, so the launch file's `preflight: false` stands; --startup-timeout is the field startup_timeout_s and
    wins over the file's; --env is parsed into the mapping."""
    f = tmp_path / "launch.yaml"
    f.write_text(f"model_path: {TINY}\npreflight: false\nstartup_timeout_s: 77\n")
    d = json.loads(cli("launch", "--config", str(f), "--print-config", "--json").stdout)["launch"]
    assert (d["preflight"], d["startup_timeout_s"]) == (False, 77)
    r = cli("launch", "--config", str(f), "--startup-timeout", "12", "--env", "A=1", "--print-config", "--json")
    d = json.loads(r.stdout)["launch"]
    assert (d["preflight"], d["startup_timeout_s"], d["env"]) == (False, 12, {"A": "1"})


def test_no_command_spells_the_launch_flags_by_hand():
    """One builder: launch, smoke, bench and tune hand their flags to common.spec_from_cli, none calls
    spec.build or LaunchSpec itself."""
    import ast

    for name in ("launch", "smoke", "bench", "tune"):
        tree = ast.parse((ROOT / "launcher" / "cli" / f"{name}.py").read_text())
        calls = {ast.unparse(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
        assert "common.spec_from_cli" in calls, name
        assert not calls & {"build", "LaunchSpec", "spec.build"}, name


def test_a_relative_model_path_is_recorded_absolute_so_commands_from_other_folders_find_it(tmp_path, monkeypatch):
    """README's `launch --model-path examples/tiny-llama`: bench from another folder read 'examples/tiny-llama'
    relative to its own folder and said the path does not exist while the server was READY."""
    from launcher.spec import build

    monkeypatch.chdir(ROOT)
    spec = build({"model_path": "examples/tiny-llama"}, None, {})
    assert spec.model_path == str(ROOT / "examples" / "tiny-llama")
    monkeypatch.chdir(tmp_path)
    assert os.path.isdir(spec.model_path)
    assert build({"model_path": "~/m"}, None, {}).model_path == os.path.expanduser("~/m")


@pytest.mark.parametrize("given,seconds", [("5m", 300.0), ("90s", 90.0), ("1h30m", 5400.0), ("120", 120.0)])
def test_every_time_flag_takes_seconds_or_a_duration(given, seconds, nothing_started):
    """`--startup-timeout 5m` was refused while the models file's `ttl: 10m` and `tune --budget 15m` took it."""
    r = cli("launch", "--model-path", str(TINY), "--startup-timeout", given, "--print-config", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["launch"]["startup_timeout_s"] == seconds
    r = cli("serve", "--models", "/no/such.yaml", "--queue-timeout", given, "--retry-failed-after", given)
    assert r.returncode == 2 and "/no/such.yaml" in r.stderr, r.stderr  # the durations passed, the file did not


def test_a_time_that_is_not_one_is_refused_saying_how_to_write_it(nothing_started):
    r = cli("launch", "--model-path", str(TINY), "--startup-timeout", "5 minutes", "--print-config")
    assert r.returncode == 2 and "90s, 15m, 1h30m" in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_kv_cache_tokens_are_numbers_as_vllm_logs_them():
    """vLLM logs "GPU KV cache size: 1,048,576 tokens"; ps --json, status --json and the smoke report said the
    string "1,048,576" where estimate --json says 1048576."""
    from launcher.engines import vllm as vllm_engine

    facts = vllm_engine.parse_log_facts("(EngineCore pid=1) INFO 12-06 [kv_cache_utils.py:1087] GPU KV cache size: "
                                        "1,048,576 tokens\n")
    assert vllm_engine.kv_tokens(facts) == 1048576 and vllm_engine.kv_tokens({}) is None


def test_an_engine_argument_of_several_values_takes_them_all_as_vllm_does(nothing_started):
    """vLLM's --served-model-name takes several names (nargs='+'); `--served-model-name a b` was refused."""
    r = cli("launch", "--model-path", str(TINY), "--served-model-name", "a", "b", "--max-model-len", "512",
            "--print-config", "--json")
    assert r.returncode == 0, r.stderr
    cmd = json.loads(r.stdout)["command"]
    i = cmd.index("--served-model-name")
    assert cmd[i + 1:i + 3] == ["a", "b"] and cmd[cmd.index("--max-model-len") + 1] == "512"
    r = cli("launch", "--model-path", str(TINY), "--served-model-name", "--max-model-len", "512", "--print-config")
    assert r.returncode == 2 and "--served-model-name needs a value" in r.stderr, r.stderr


def test_smoke_dry_run_of_a_launch_the_pre_flight_refuses_still_shows_its_command_line(nothing_started):
    """`smoke --model-name qwen2.5 --size-in-billions 7 --dry-run` on the CPU build: exit 3 and no command line, while
    the docs say "command line + estimate, starts nothing". The 7B's full 32768 tokens do not fit the CPU build's
    1 GiB KV cache (18688 tokens; or, on a small host, its 15 GiB of weights beside it): refused, command shown."""
    r = cli("smoke", "--model-name", "qwen2.5", "--size-in-billions", "7", "--dry-run", "--json")
    assert r.returncode == 3, r.stderr
    d = json.loads(r.stdout)
    assert d["fits"] is False and "Qwen/Qwen2.5-7B-Instruct" in d["command"] and "does not fit" in d["reason"]
    r = cli("smoke", "--model-path", str(TINY), "--max-model-len", "512", "--dry-run", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["fits"] is True, r.stderr


def test_estimate_on_the_cpu_build_plans_with_the_kv_cache_launch_gives_it(nothing_started):
    """estimate said "Set VLLM_CPU_KVCACHE_SPACE" while launch and smoke start the server with 1 GiB of it: the plan
    now is of that launch: the tiny model holds 2 (K and V) x 2 layers x 2 KV heads x 64 x 2 bytes = 1024 bytes a
    token, so 1 GiB is 1,048,576 tokens, what vLLM logs for it (tests/test_cli.py)."""
    env = {k: v for k, v in os.environ.items() if k != "VLLM_CPU_KVCACHE_SPACE"}
    r = cli("estimate", "--model-path", str(TINY), "--max-model-len", "512", "--json", env=env)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["kv_cache_bytes"] == 1 << 30 and d["kv_cache_tokens"] == 1048576
    assert any("starts the CPU build with 1 GiB" in n for n in d["notes"])

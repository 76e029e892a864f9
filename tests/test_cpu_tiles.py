"""AMX tiles on the CPU build: the plugin vLLM loads in each of its processes, the environment that turns it on, the
refusal where it is missing, and how a server killed by a signal is reported. The real-engine start with the
quick settings (eager, uni executor) and a 2-token first request is in tests/test_vllm_real.py."""
import json
import signal
import subprocess
import sys

import pytest

from launcher import exit_status, hostcpu
from launcher.engines import cpu_tiles
from launcher.engines import vllm as vllm_engine
from launcher.errors import BadInput
from launcher.supervisor.machine import State

AMX = pytest.mark.skipif(not hostcpu.has_amx_tiles(),
                         reason=f"this host's CPU has no AMX tiles (missing flags: {' '.join(hostcpu.missing_amx_flags())})")


def test_vllm_finds_the_plugin_where_it_looks_for_general_plugins():
    """vLLM's own loader (plugins.load_plugins_by_group) returns our function: the pyproject entry point exists."""
    from vllm.plugins import DEFAULT_PLUGINS_GROUP, load_plugins_by_group

    assert load_plugins_by_group(DEFAULT_PLUGINS_GROUP).get(cpu_tiles.PLUGIN) is cpu_tiles.vllm_plugin
    assert cpu_tiles.plugin_installed()


def test_the_cpu_build_server_env_turns_the_plugin_on_and_keeps_it_allowed():
    env = vllm_engine.server_env({}, {}, cpu_build=True)
    assert env[cpu_tiles.ENV] == "1" and "VLLM_PLUGINS" not in env  # unset: vLLM loads every plugin
    env = vllm_engine.server_env({"VLLM_PLUGINS": "lora_filesystem_resolver"}, {}, cpu_build=True)
    assert env["VLLM_PLUGINS"].split(",") == ["lora_filesystem_resolver", cpu_tiles.PLUGIN]
    env = vllm_engine.server_env({}, {"VLLM_PLUGINS": ""}, cpu_build=True)  # "": no plugin at all, but ours
    assert env["VLLM_PLUGINS"] == cpu_tiles.PLUGIN
    assert cpu_tiles.ENV not in vllm_engine.server_env({}, {}, cpu_build=False)


def test_a_start_is_refused_where_the_host_has_amx_and_vllm_would_not_load_the_plugin(monkeypatch):
    monkeypatch.setattr(hostcpu, "has_amx_tiles", lambda cpuinfo="": True)
    monkeypatch.setattr(cpu_tiles, "plugin_installed", lambda: False)
    with pytest.raises(BadInput) as e:
        cpu_tiles.check_plugin()
    assert "SIGILL" in str(e.value) and "pip install -e ." in e.value.hint
    monkeypatch.setattr(hostcpu, "has_amx_tiles", lambda cpuinfo="": False)
    cpu_tiles.check_plugin()  # no AMX: nothing to guard


PROBE = """
import json, os
from launcher.engines import cpu_tiles
before = cpu_tiles.tile_data_permitted()
cpu_tiles.vllm_plugin()
print(json.dumps([before, cpu_tiles.tile_data_permitted()]))
"""


def _probe(env_on: bool):
    env = {"PATH": "/usr/bin:/bin", **({cpu_tiles.ENV: "1"} if env_on else {})}
    r = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout), r.stderr


@AMX
def test_the_plugin_gets_tile_data_permitted_in_a_fresh_process():
    """A new process (no torch, no oneDNN) has no tile-data permission; the plugin asks and the kernel grants it."""
    (before, after), err = _probe(env_on=True)
    assert before is False and after is True
    assert "AMX tile data permitted" in err
    (before, after), err = _probe(env_on=False)  # not started by the launcher: the plugin leaves the process alone
    assert before is False and after is False and err == ""


def test_without_amx_the_plugin_does_nothing(monkeypatch, capsys):
    monkeypatch.setenv(cpu_tiles.ENV, "1")
    monkeypatch.setattr(hostcpu, "has_amx_tiles", lambda cpuinfo="": False)
    monkeypatch.setattr(cpu_tiles, "request_tile_data", lambda: pytest.fail("asked without AMX"))
    cpu_tiles.vllm_plugin()
    assert capsys.readouterr().err == ""


def test_a_refused_permission_makes_vllm_choose_its_avx512_kernels(monkeypatch, capsys):
    import torch

    monkeypatch.setenv(cpu_tiles.ENV, "1")
    monkeypatch.setattr(hostcpu, "has_amx_tiles", lambda cpuinfo="": True)
    monkeypatch.setattr(cpu_tiles, "request_tile_data", lambda: (False, "Operation not permitted"))
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    cpu_tiles.vllm_plugin()
    assert torch.cpu._is_amx_tile_supported() is False
    from vllm.v1.attention.backends.cpu_attn import _get_attn_isa

    assert _get_attn_isa(torch.bfloat16, 32) != "amx"  # vLLM's own choice of attention kernel
    assert "refused" in capsys.readouterr().err


@pytest.mark.parametrize("code,words", [(-4, "killed by SIGILL (illegal instruction"), (132, "killed by SIGILL"),
                                        (-9, "killed by SIGKILL"), (-11, "SIGSEGV"), (1, "exited with code 1"),
                                        (0, "exited with code 0")])
def test_exit_codes_in_words(code, words):
    assert words in exit_status.describe(code)


def test_vllms_worker_death_line_names_the_signal():
    log = ("(EngineCore pid=3234) ERROR 12-06 17:28:19 [multiproc_executor.py:315] Worker proc VllmWorker-0 died "
           "unexpectedly (exit code: -4), shutting down executor.\n"
           "ERROR EngineDeadError: EngineCore encountered an issue. See stack trace (above) for the root cause.\n")
    kind, line, retry = vllm_engine.root_cause(log)
    assert kind == "killed_by_signal" and retry
    assert line.startswith("Worker proc VllmWorker-0 died unexpectedly (exit code: -4): killed by SIGILL (illegal")


def test_a_server_killed_by_sigill_is_reported_with_the_signal_in_backoff_and_fatal():
    from test_machine import World
    from launcher.supervisor.policy import RestartPolicy

    w = World(RestartPolicy(probe_interval_s=1, max_quick_failures=2, backoff_initial_s=1))
    w.sup.start(0)
    w.sup.tick(0)
    w.servers[-1].code = -signal.SIGILL
    assert w.sup.tick(1) == State.BACKOFF and "server killed by SIGILL (illegal instruction" in w.sup.reason
    w.sup.tick(3)
    w.servers[-1].code = -signal.SIGILL
    assert w.sup.tick(4) == State.FATAL and "killed by SIGILL" in w.sup.reason

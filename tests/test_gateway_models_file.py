"""The gateway's models file: each entry read by the launch file's own code, the gateway keys checked, a bad file
refused in one line with exit 2 before anything starts."""
import json

import pytest

from conftest import ROOT, TINY, cli
from launcher.engines import vllm as vllm_engine
from launcher.errors import BadInput
from launcher.models_file import load_models

ADAPTER = ROOT / "examples" / "tiny-llama-lora"


def write(tmp_path, data, name="models.yaml"):
    import yaml

    p = tmp_path / name
    p.write_text(yaml.safe_dump(data) if name.endswith(".yaml") else json.dumps(data))
    return str(p)


def test_entries_are_launch_files_plus_gateway_keys(tmp_path):
    path = write(tmp_path, {"models": [
        {"name": "a", "model_path": str(TINY), "aliases": ["a2"], "ttl": "10m", "pinned": True,
         "engine_args": {"max_model_len": 1024, "enable-lora": True, "lora-modules": [f"ad={ADAPTER}"]}},
        {"name": "b", "model": str(TINY), "max-model-len": 512, "preload": True}]}, "models.json")
    a, b = load_models(path, vllm_engine.arg_spec())
    assert a.spec.engine_args["max-model-len"] == 1024 and a.aliases == ("a2",) and a.ttl_s == 600 and a.pinned
    assert a.lora_names == ("ad",) and a.names == ("a", "a2", "ad")
    # vLLM's own --config shape (flat engine arguments, `model:` a folder) is read as `launch -f` reads it
    assert b.spec.model_path == str(TINY) and b.spec.engine_args["max-model-len"] == 512 and b.preload


@pytest.mark.parametrize("data,says", [
    ({"models": []}, "non-empty list"),
    ({"model": []}, "unknown top-level key 'model'"),
    ({"models": [{"model_path": "x"}]}, "'name' is required"),
    ({"models": [{"name": "a", "model_path": "x", "ttl": "soon"}]}, "ttl must be seconds"),
    ({"models": [{"name": "a", "model_path": "x", "pinned": "yes"}]}, "pinned must be true or false"),
    ({"models": [{"name": "a", "model_path": "x", "max_model_lenn": 5}]}, "unknown key 'max_model_lenn'"),
    ({"models": [{"name": "a", "model_path": "x"}, {"name": "b", "model_path": "x", "aliases": ["a"]}]},
     "the name 'a' is given to both"),
])
def test_bad_entries_name_where_they_are(tmp_path, data, says):
    with pytest.raises(BadInput, match=says) as e:
        load_models(write(tmp_path, data), vllm_engine.arg_spec())
    assert "models" in str(e.value)


def test_bad_models_file_is_one_line_and_exit_2(tmp_path):
    path = write(tmp_path, {"models": [{"name": "a", "model_path": str(TINY), "ttl": -1}]})
    r = cli("serve", "--models", path, "--port", "0", timeout=60)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "ttl" in r.stderr
    r = cli("serve", "--models", str(tmp_path / "missing.yaml"), timeout=60)
    assert r.returncode == 2 and "not found" in r.stderr

"""Models by Hub repository id started on the real vLLM engine (the Hub side alone: tests/test_hub.py): the launcher
downloads, then vLLM starts on the local snapshot under the repository's name."""
import json
import os
from pathlib import Path

import pytest

from conftest import QUICK_VLLM, cli
from test_hub import hub_env  # noqa: F401 - the fixture

pytestmark = pytest.mark.vllm


def test_smoke_by_repo_id_downloads_first_then_starts_vllm_on_the_local_snapshot(hub_env, tmp_path):
    rj = tmp_path / "report.json"
    r = cli("smoke", "--model", "acme/tiny", *QUICK_VLLM, "--name", "smoke-hub", "--max_model_len", "1024",
            "--timeout", "400", "--report-json", str(rj))
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-3000:])
    assert "acme/tiny: 6 files" in r.stderr
    rep = json.loads(rj.read_text())
    assert rep["passed"] and rep["leftover_pids"] == []
    launch = json.loads((Path(os.environ["LAUNCHER_HOME"]) / "runs" / "smoke-hub" / "launch.json").read_text())
    argv = launch["argv"]
    assert argv[argv.index("--model") + 1].startswith(os.environ["HF_HOME"])  # vLLM never saw the Hub
    assert argv[argv.index("--served-model-name") + 1] == "acme/tiny"


def test_a_launch_by_repo_id_downloads_first_and_bench_asks_for_the_repository_name(hub_env):
    """One vLLM start: the launcher downloads the repository, starts vLLM on the local snapshot under the repository's
    name, and bench --name asks that server for the name it serves (not the snapshot path)."""
    r = cli("launch", "--model", "acme/tiny", *QUICK_VLLM, "--name", "hub", "--max-model-len", "512", "--detach",
            timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    try:
        assert "acme/tiny: 6 files" in r.stderr  # downloaded by the launcher, not by vLLM
        argv = json.loads((Path(os.environ["LAUNCHER_HOME"]) / "runs" / "hub" / "launch.json").read_text())["argv"]
        assert argv[argv.index("--model") + 1].startswith(os.environ["HF_HOME"])
        assert argv[argv.index("--served-model-name") + 1] == "acme/tiny"
        r = cli("bench", "--name", "hub", "--revision", "v2", "--num-prompts", "4")
        assert r.returncode == 2 and "--revision would do nothing" in r.stderr, r.stderr
        r = cli("bench", "--name", "hub", "--num-prompts", "6", "-c", "2", "--prompt-len", "16", "--output-len", "4",
                "--json", timeout=300)
        assert r.returncode == 0, r.stderr[-3000:]
        d = json.loads(r.stdout)
        assert d["completed"] == 6 and d["failed"] == 0, d
    finally:
        assert cli("stop", "hub", timeout=120).returncode == 0

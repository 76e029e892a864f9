"""Models by Hub repository id, against a local Hub-shaped server (tests/fake_hub.py) with the real
huggingface_hub client: estimate, pull with progress, resume, gated/missing repos, offline."""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, TINY, cli, wait_for
from fake_hub import FakeHub
from launcher.errors import BadInput
from launcher.models import hub

CPU = ["--device", "cpu", "--max-model-len", "1024", "--json"]


@pytest.fixture
def hub_env(tmp_path, monkeypatch):
    """A fake Hub serving the tiny model as acme/tiny (and acme/locked, gated), an empty HF_HOME."""
    with FakeHub({"acme/tiny": TINY, "acme/locked": TINY}, gated={"acme/locked"}) as h:
        monkeypatch.setenv("HF_ENDPOINT", h.url)
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.delenv("HF_TOKEN", raising=False)
        yield h


def test_estimate_by_repo_id_reads_only_the_config_then_works_offline(hub_env):
    r = cli("estimate", "--model", "acme/tiny", *CPU)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["model"].startswith("acme/tiny@")
    fetched = {p.rsplit("/", 1)[-1] for m, p, _ in hub_env.requests if m == "GET" and "/resolve/" in p}
    assert fetched == {"config.json"}  # no weights, no tokenizer
    r = cli("estimate", "--model", "acme/tiny", *CPU, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert r.returncode == 0, r.stderr


def test_offline_without_cache_is_one_line_exit_2(hub_env):
    r = cli("estimate", "--model", "acme/tiny", *CPU, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert r.returncode == 2 and "HF_HUB_OFFLINE is set" in r.stderr and "does not hold it" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


def test_no_network_is_one_line_exit_2_at_once_for_every_command_that_reaches_the_hub(tmp_path):
    """A Hub that cannot be reached (HF_ENDPOINT on a port nothing listens on; no HF_HUB_OFFLINE): pull was an
    'internal error: ConnectError' (exit 1), and estimate, launch and smoke retried five times for 23.5 s; with
    HF_HUB_OFFLINE pull was 'internal error: DryRunError'. Each is one line, exit 2, in seconds."""
    import time

    from launcher import health

    env = dict(os.environ, HF_ENDPOINT=f"http://127.0.0.1:{health.find_free_port()}", HF_HOME=str(tmp_path / "hf"))
    env.pop("HF_HUB_OFFLINE", None)
    runs = [("pull", "acme/tiny"), ("estimate", "--model", "acme/tiny", *CPU),
            ("launch", "--model", "acme/tiny", "--max-model-len", "1024"),
            ("smoke", "--model", "acme/tiny", "--dry-run")]
    for args in runs:
        t0 = time.monotonic()
        r = cli(*args, env=env)
        took = time.monotonic() - t0
        assert r.returncode == 2 and "cannot be reached" in r.stderr and "internal error" not in r.stderr, (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1 and took < 10, (args, took, r.stderr)
    r = cli("pull", "acme/tiny", env=dict(env, HF_HUB_OFFLINE="1"))
    assert r.returncode == 2 and "HF_HUB_OFFLINE is set" in r.stderr and "internal error" not in r.stderr, r.stderr


@pytest.mark.parametrize("repo,msg", [("acme/locked", "gated repository"), ("acme/nope", "not found on the Hub")])
def test_gated_and_missing_repositories_are_one_line_exit_2(hub_env, repo, msg):
    for args in (["estimate", "--model", repo, *CPU], ["pull", repo]):
        r = cli(*args)
        assert r.returncode == 2 and msg in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1


def test_pull_with_json_progress_events(hub_env):
    r = cli("pull", "acme/tiny", "--json")
    assert r.returncode == 0, r.stderr
    events = [json.loads(line) for line in r.stdout.splitlines()]
    assert events[0]["event"] == "plan" and events[0]["to_download_bytes"] > 5_000_000
    assert events[-1]["event"] == "done" and any(e["event"] == "progress" for e in events)
    path = Path(events[-1]["path"])
    assert (path / "model.safetensors").read_bytes() == (TINY / "model.safetensors").read_bytes()
    assert path.is_relative_to(Path(os.environ["HF_HOME"]))
    again = cli("pull", "acme/tiny", "--json")
    assert json.loads(again.stdout.splitlines()[0])["to_download_bytes"] == 0


def test_pull_into_download_dir(hub_env, tmp_path):
    r = cli("pull", "acme/tiny", "--download-dir", str(tmp_path / "models"))
    assert r.returncode == 0, r.stderr
    assert Path(r.stdout.strip()) == tmp_path / "models"
    assert (tmp_path / "models" / "model.safetensors").stat().st_size == (TINY / "model.safetensors").stat().st_size


def test_a_download_interrupted_by_the_network_resumes_where_it_stopped(hub_env, tmp_path):
    big = tmp_path / "big"  # larger than huggingface_hub's 10 MiB read size, so whole chunks arrive before the cut
    big.mkdir()
    (big / "config.json").write_text((TINY / "config.json").read_text())
    weights = os.urandom(24 << 20)
    (big / "model.safetensors").write_bytes(weights)
    hub_env.repos["acme/big"] = big
    hub_env.cut_once["model.safetensors"] = 22 << 20  # the connection drops after 22 MiB
    r = cli("pull", "acme/big")
    assert r.returncode == 0, r.stderr
    gets = [rg for m, path, rg in hub_env.requests if m == "GET" and path.endswith("model.safetensors")]
    assert len(gets) == 2 and gets[0] is None
    resumed_at = int(gets[1].split("=")[1].split("-")[0])
    assert resumed_at >= 10 << 20  # the second request asked only for the rest
    assert (Path(r.stdout.strip()) / "model.safetensors").read_bytes() == weights


def test_a_killed_pull_keeps_the_files_it_finished(hub_env):
    hub_env.throttle_bps = 1 << 20  # ~5.5 s for the weights, which come last
    p = subprocess.Popen([sys.executable, "-m", "launcher", "pull", "acme/tiny", "--json"], cwd=str(ROOT),
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    snap = Path(os.environ["HF_HOME"]) / "hub" / "models--acme--tiny" / "snapshots"
    wait_for(lambda: snap.exists() and any(snap.rglob("tokenizer.json")), 30, what="the small files done")
    p.send_signal(signal.SIGKILL)
    p.wait(10)
    hub_env.throttle_bps = None
    r = cli("pull", "acme/tiny", "--json")
    assert r.returncode == 0, r.stderr
    plan = json.loads(r.stdout.splitlines()[0])
    # only what was not finished: tokenizer.json (done before the kill) is not fetched again
    assert plan["to_download_bytes"] <= plan["total_bytes"] - (TINY / "tokenizer.json").stat().st_size
    gets = [p for m, p, _ in hub_env.requests if m == "GET" and p.endswith("/tokenizer.json")]
    assert len(gets) == 1


def test_disk_space_is_checked_before_downloading(tmp_path):
    plan = hub.DownloadPlan("acme/huge", None, "c", [("model.safetensors", 1 << 60, True)], str(tmp_path))
    with pytest.raises(BadInput) as e:
        hub.check_disk(plan)
    assert "needs 1073741824.0 GiB" in str(e.value) and f"free in {tmp_path}" in str(e.value)

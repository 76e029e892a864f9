"""Nothing a newcomer can type ends in an internal error: every command and sub-command, each option that takes a
path given one that does not exist or cannot be written, and the commands that reach the Hub with no network.
Each ends with one line that says what to do (exit 2, or the command's documented code), never a traceback or
"internal error", and nothing starts (a started process fails the test outright)."""
import pytest
import typer

from conftest import TINY
from launcher.cli import app, run

T = str(TINY)
BAD_PATHS = {
    "--model-path": "/no/such/model",
    "--config": "/no/such/launch.yaml",
    "--plot": "/no/such/dir/picture.png",
    "--report-json": "/no/such/dir/report.json",
    "--junit-xml": "/no/such/dir/report.xml",
    "--out-dir": "/proc/no-such/out",
    "--models": "/no/such/models.yaml",
    "--inventory": "/no/such/inventory.yaml",
    "--prompts-file": "/no/such/prompts.jsonl",
    "--download-dir": "/proc/no-such/models",
}
# what a command needs beside the option under test to get as far as using it
NEEDS = {"estimate": ["--model-path", T, "--gpu", "all"], "launch": ["--model-path", T, "--detach"],
         "smoke": ["--model-path", T], "bench": ["--model-path", T], "tune": ["--model-path", T],
         "pull": ["acme/tiny"], "gateway add": [], "serve": []}


def commands():
    out = []

    def walk(cmd, prefix):
        for name, sub in getattr(cmd, "commands", {}).items():
            if not getattr(sub, "hidden", False):
                out.append((f"{prefix}{name}", sub))
                walk(sub, f"{prefix}{name} ")

    walk(typer.main.get_command(app), "")
    return out


CASES = [(name, opt) for name, cmd in commands() for p in getattr(cmd, "params", [])
         for opt in p.opts if opt in BAD_PATHS and not getattr(p, "is_flag", False)]


@pytest.fixture(autouse=True)
def nothing_may_start(monkeypatch, tmp_path):
    def started(*a, **k):
        raise AssertionError("a process was started for bad input")

    monkeypatch.setattr("launcher.process.spawn", started)
    monkeypatch.setattr("launcher.launching.start._spawn_supervisor", started)
    monkeypatch.delenv("LAUNCHER_DEBUG", raising=False)
    monkeypatch.chdir(tmp_path)  # a command that gets as far as writing its default output (tune's ./tune-NAME) writes here
    from launcher import health

    # no network: the Hub on a port nothing listens on
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{health.find_free_port()}")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)


def _no_internal_error(capsys, argv):
    capsys.readouterr()
    try:
        rc = run(argv)
    except SystemExit as e:  # click's own usage errors exit this way
        rc = e.code
    out = capsys.readouterr()
    assert "internal error" not in out.err and "Traceback" not in out.err, (argv, out.err)
    assert rc in (2, 3, 5), (argv, rc, out.err)
    assert out.err.strip(), argv


def test_every_path_option_is_covered():
    assert len(CASES) >= 15, CASES
    assert {"--plot", "--report-json", "--models", "--config"} <= {o for _, o in CASES}


@pytest.mark.parametrize("name,opt", CASES, ids=[f"{n.replace(' ', '-')}{o}" for n, o in CASES])
def test_a_path_that_is_not_there_is_one_clear_line(capsys, name, opt):
    extra = [] if opt == "--model-path" else NEEDS.get(name, [])
    _no_internal_error(capsys, [*name.split(), *extra, opt, BAD_PATHS[opt]])


@pytest.mark.parametrize("argv", [["pull", "Qwen/Qwen2.5-7B-Instruct"],
                                  ["estimate", "--model", "Qwen/Qwen2.5-7B-Instruct"],
                                  ["launch", "--model", "Qwen/Qwen2.5-7B-Instruct", "--detach"],
                                  ["smoke", "--model", "Qwen/Qwen2.5-7B-Instruct"],
                                  ["bench", "--model", "Qwen/Qwen2.5-7B-Instruct"],
                                  ["tune", "--model", "Qwen/Qwen2.5-7B-Instruct"]], ids=lambda a: a[0])
def test_no_network_is_one_clear_line(capsys, argv):
    _no_internal_error(capsys, argv)

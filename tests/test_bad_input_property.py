"""Every command, driven with generated bad values (hypothesis): exit 2, one line on stderr, no traceback, and
nothing started: starting a server or a supervisor fails the test outright. The CLI runs in-process through
`launcher.cli.run`, the same function the `launcher` script calls, on a host without a GPU."""
import math
import re

import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import TINY
from launcher.cli import run
from launcher.engine_args import _is_number

T = str(TINY)

# bad values by kind
nonfinite = st.sampled_from(["nan", "inf", "-inf", "NaN", "1e999", "-1e999"])
not_a_number = st.text(min_size=1, max_size=12).filter(lambda s: not _is_number(s) and not s.startswith("-"))
# not a time: neither seconds nor a duration such as 90s, 15m, 1h30m (units.parse_duration)
not_a_time = not_a_number.filter(lambda s: not re.fullmatch(r"(\d+(\.\d+)?[hms])+", s.strip().lower()))
non_positive = st.one_of(st.integers(max_value=0).map(str), st.floats(max_value=0, allow_nan=False).map(repr))
negative_int = st.integers(max_value=-2).map(str)
above_one = st.floats(min_value=1.0001, allow_nan=False, allow_infinity=False).map(repr)
bad_name = st.text(max_size=70).filter(lambda s: not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", s)
                                       and not s.startswith("-"))
not_whole_gib = st.text(min_size=1, max_size=8).filter(lambda s: not re.fullmatch(r"\s*\+?\d+\s*", s)
                                                       and not s.startswith("-") and "\x00" not in s)
bad_selector = st.text(min_size=1, max_size=10).filter(lambda s: s.strip() != "auto" and not s.startswith("-")
                                                       and not re.fullmatch(r"\d+(,\d+)*", "".join(s.split())))
bad_size = st.one_of(non_positive, nonfinite, st.sampled_from(["80XB", "GiB", "-5GiB", "nanGiB", "1e999GiB"]))


BASE = {
    "estimate": ["estimate", "--model-path", T, "--gpu", "L4"],
    "launch": ["launch", "--model-path", T, "--detach", "--name", "p"],
    "smoke": ["smoke", "--model-path", T, "--name", "p"],
    "bench": ["bench", "--model-path", T, "--name", "p"],
    "tune": ["tune", "--model-path", T, "--name", "p"],
}
# (commands, option, strategy of bad values)
CASES = [
    (("estimate", "launch", "smoke", "bench"), "--max-model-len", st.one_of(negative_int, st.just("0"), nonfinite)),
    (("estimate", "launch", "smoke"), "--gpu-memory-utilization", st.one_of(non_positive, above_one, nonfinite)),
    (("estimate", "launch", "smoke"), "--tensor-parallel-size", st.one_of(non_positive, not_a_number)),
    (("estimate", "launch", "smoke"), "--max-num-seqs", st.one_of(non_positive, nonfinite)),
    (("estimate", "launch", "smoke"), "--max-num-batched-tokens", st.one_of(non_positive, nonfinite)),
    (("estimate", "launch"), "--block-size", non_positive),
    (("estimate", "launch"), "--kv-cache-memory-bytes", bad_size),
    (("estimate",), "--gpu-memory", bad_size),
    (("estimate", "launch"), "--num-gpus", st.one_of(non_positive, not_a_number)),
    (("estimate", "launch"), "--gpus", bad_selector),
    (("launch",), "--startup-timeout", st.one_of(non_positive, nonfinite, not_a_time)),
    (("launch",), "--port", st.one_of(non_positive, st.integers(min_value=65536).map(str))),
    (("launch",), "--name", bad_name),
    (("smoke", "bench", "tune"), "--timeout", st.one_of(non_positive, nonfinite, not_a_time)),
    (("bench",), "--num-requests", non_positive),
    (("bench",), "--concurrency", non_positive),
    (("bench",), "--request-rate", st.one_of(non_positive, nonfinite)),
    (("tune",), "--slo-ttft-p99", st.one_of(non_positive, nonfinite)),
]
EXPANDED = [(cmd, opt, strat) for cmds, opt, strat in CASES for cmd in cmds]


@pytest.fixture(autouse=True)
def nothing_may_start(monkeypatch):
    """A bad value that slipped through would start a server: fail loudly instead, before any process exists."""
    def started(*a, **k):
        raise AssertionError("a process was started for bad input")

    monkeypatch.setattr("launcher.process.spawn", started)
    monkeypatch.setattr("launcher.launching.start._spawn_supervisor", started)
    monkeypatch.delenv("LAUNCHER_DEBUG", raising=False)


def _refused(capsys, argv: list[str], env_note: str = "") -> None:
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    capsys.readouterr()
    rc = run(argv)
    out = capsys.readouterr()
    assert rc == 2, f"{argv} {env_note}: exit {rc}, stderr {out.err!r}"
    assert out.err.startswith("error: ") and out.err.count("\n") == 1 and "Traceback" not in out.err, (argv, out.err)
    assert {p.pid for p in psutil.Process().children(recursive=True)} <= before, argv


SETTINGS = settings(max_examples=25, deadline=None, database=None, derandomize=True,  # the same examples on every run: CI stays deterministic
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.mark.parametrize("cmd,opt,strat", EXPANDED, ids=[f"{c}{o}" for c, o, _ in EXPANDED])
def test_a_bad_option_value_is_one_line_exit_2(capsys, cmd, opt, strat):
    @SETTINGS
    @given(value=strat)
    def check(value):
        argv = [*BASE[cmd], f"{opt}={value}"] if opt != "--name" else [*BASE[cmd][:-2], "--name", value]
        _refused(capsys, argv)

    check()


@pytest.mark.parametrize("cmd", ["estimate", "launch", "smoke"])
def test_a_bad_kv_cache_space_is_one_line_exit_2(capsys, monkeypatch, cmd):
    @SETTINGS
    @given(value=not_whole_gib)
    def check(value):
        monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", value)
        _refused(capsys, BASE[cmd] if cmd != "estimate" else ["estimate", "--model-path", T], f"VLLM_CPU_KVCACHE_SPACE={value!r}")

    check()


@pytest.mark.parametrize("cmd", ["status", "stop", "logs", "rm"])
def test_a_bad_launch_name_is_one_line_exit_2(capsys, cmd):
    @SETTINGS
    @given(name=bad_name.filter(lambda s: s.strip() == s and s))
    def check(name):
        _refused(capsys, [cmd, "--", name])

    check()


@pytest.mark.parametrize("cmd", ["estimate", "launch", "bench"])
def test_an_unknown_engine_argument_is_one_line_exit_2(capsys, cmd):
    @SETTINGS
    @given(flag=st.from_regex(r"--[a-z][a-z0-9]{2,10}(-[a-z0-9]{2,6})?", fullmatch=True))
    def check(flag):
        from launcher.engines import vllm as vllm_engine

        known = vllm_engine.arg_spec().args
        if flag[2:] in known or flag[2:].replace("_", "-") in known or flag in _launcher_options():
            return
        _refused(capsys, [*BASE[cmd], flag, "1"])

    check()


def _launcher_options() -> set[str]:
    import click
    import typer

    from launcher.cli import app

    group = typer.main.get_command(app)
    names: set[str] = set()
    for cmd in group.commands.values():
        for p in getattr(cmd, "params", []):
            if isinstance(p, click.Option) or hasattr(p, "opts"):
                names |= set(p.opts) | set(getattr(p, "secondary_opts", []))
    return names


def test_the_number_parser_itself():
    """The shared number type: finite, bounded, and its message names the option."""
    import click

    from launcher.cli.common import positive

    num = positive("--timeout")
    assert num.convert("2.5", None, None) == 2.5
    for bad in ("nan", "inf", "0", "-1", "x"):
        with pytest.raises(click.BadParameter, match="--timeout"):
            num.convert(bad, None, None)
    assert not math.isnan(num.convert("1e3", None, None))

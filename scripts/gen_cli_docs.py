"""Generate docs/cli-reference.md from the commands' --help (tests/test_docs.py checks it is in sync).

usage: .venv/bin/python scripts/gen_cli_docs.py [--check]
"""
import os
import sys

from typer.testing import CliRunner

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from launcher.cli import app  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "cli-reference.md")


def commands() -> list[str]:
    """Every command and sub-command, in the order --help lists them (hidden ones left out)."""
    import typer

    out = []

    def walk(cmd, prefix):
        for name, sub in getattr(cmd, "commands", {}).items():
            if getattr(sub, "hidden", False):
                continue
            out.append(f"{prefix}{name}")
            walk(sub, f"{prefix}{name} ")

    walk(typer.main.get_command(app), "")
    return out


def render() -> str:
    r = CliRunner()
    parts = ["# CLI reference\n", "Generated from `--help` by `scripts/gen_cli_docs.py` (`make docs`); CI checks it is current.\n"]
    env = {"COLUMNS": "100", "TERM": "dumb", "NO_COLOR": "1"}
    parts.append("## launcher\n\n```\n" + r.invoke(app, ["--help"], env=env, prog_name="launcher").output.rstrip() + "\n```\n")
    for c in commands():
        out = r.invoke(app, [*c.split(), "--help"], env=env, prog_name="launcher").output.rstrip()
        parts.append(f"## launcher {c}\n\n```\n{out}\n```\n")
    return "\n".join(parts)


if __name__ == "__main__":
    text = render()
    if "--check" in sys.argv:
        cur = open(OUT).read() if os.path.exists(OUT) else ""
        sys.exit(0 if cur == text else "docs/cli-reference.md is out of date: run `make docs`")
    open(OUT, "w").write(text)
    print("wrote", OUT)

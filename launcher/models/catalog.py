"""The offline model catalog (catalog.json, shipped as data): name + size + format -> repo and config."""
from __future__ import annotations

import copy
import difflib
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from ..errors import BadInput

FORMATS = ("pytorch", "awq", "gptq", "fp8")


@dataclass(frozen=True)
class CatalogEntry:
    name: str
    size: str
    model_format: str
    repo: str
    config: dict


@lru_cache(maxsize=1)
def _data() -> dict:
    return json.loads((Path(__file__).with_name("catalog.json")).read_text())


def names() -> list[str]:
    return sorted(_data()["models"])


def _norm_size(size: str | float | int) -> str:
    s = str(size).strip().lower().rstrip("b")
    s = {"8x7": "46_7", "8x7b": "46_7", "30-a3": "30", "30a3": "30"}.get(s, s)
    s = s.replace(".", "_")
    if s.endswith("_0"):
        s = s[:-2]
    return s


def _resolve_name(name: str) -> str:
    models = _data()["models"]
    key = name.strip().lower()
    if key in models:
        return key
    for canon, m in models.items():
        if key in m.get("aliases", []):
            return canon
    all_names = list(models) + [a for m in models.values() for a in m.get("aliases", [])]
    close = difflib.get_close_matches(key, all_names, n=5, cutoff=0.5)
    hint = ("Close matches: " + ", ".join(close) + ".") if close else ("Known models: " + ", ".join(sorted(models)) + ".")
    raise BadInput(f"model '{name}' is not in the catalog.", hint=hint + " Or use --model-path DIR.")


def lookup(name: str, size: str | float | int | None, model_format: str = "pytorch",
           quantization: str | None = None) -> CatalogEntry:
    """Find a model in the catalog; errors list close matches or available sizes/formats."""
    canon = _resolve_name(name)
    m = _data()["models"][canon]
    sizes = m["sizes"]
    if size is None:
        if len(sizes) != 1:
            raise BadInput(f"model '{canon}' comes in several sizes; give --size-in-billions.",
                           hint="Sizes: " + ", ".join(s.replace("_", ".") for s in sizes) + ".")
        key = next(iter(sizes))
    else:
        key = _norm_size(size)
        if key not in sizes:
            raise BadInput(f"model '{canon}' has no size {size}B in the catalog.",
                           hint="Sizes: " + ", ".join(s.replace("_", ".") for s in sizes) + ".")
    fmt = (model_format or "pytorch").lower()
    if fmt not in FORMATS:
        raise BadInput(f"unknown --model-format '{model_format}'.", hint="Use one of: " + ", ".join(FORMATS) + ".")
    entry = sizes[key]
    cfg = copy.deepcopy(entry["config"])
    repo = entry["repo"]
    if fmt != "pytorch":
        repos = entry.get("formats", {})
        if fmt not in repos:
            raise BadInput(f"model '{canon}' {key.replace('_', '.')}B has no {fmt} build in the catalog.",
                           hint="Formats: " + ", ".join(["pytorch", *repos]) + ".")
        repo = repos[fmt]
        cfg["quantization_config"] = copy.deepcopy(_data()["quantization_configs"][fmt])
    q = (quantization or "none").lower()
    if q not in ("none", "", fmt) and not (fmt == "pytorch" and q in ("fp8", "bitsandbytes")):
        raise BadInput(f"--quantization {quantization} does not match --model-format {fmt}.",
                       hint="For awq/gptq/fp8 builds, leave --quantization at 'none' or name the same method.")
    if fmt == "pytorch" and q in ("fp8", "bitsandbytes"):
        # on-the-fly quantization of a full-precision checkpoint
        cfg["quantization_config"] = {"quant_method": q, "bits": 8 if q == "fp8" else 4}
    return CatalogEntry(canon, key, fmt, repo, cfg)

"""Engine arguments as vLLM names them, in either spelling, typed and validated.

`--max_model_len 18080`, `--max-model-len=18080` and `max_model_len: 18080` in a
launch file all become {"max-model-len": 18080}. The list of valid arguments
is the one of the vLLM that will run: shipped with the project for the versions
it supports (engines/vllm_args/DIST-VERSION.json, chosen without importing vLLM),
read from the installed vLLM once for any other version and cached.
"""
from __future__ import annotations

import re

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from .errors import BadInput, did_you_mean

ARGS_DIR = Path(__file__).parent / "engines" / "vllm_args"
# What vLLM says in its own change history about arguments it removed (shown with the version that lacks them).
REMOVED_NOTES = {
    "calculate-kv-scales": "fp8 KV cache scales now come from the checkpoint, else 1.0 (vLLM pull request #49389); drop the flag",
}


def shipped_lists() -> dict[str, Path]:
    """'DIST-VERSION' -> file, for every argument list shipped with the project."""
    return {f.stem: f for f in sorted(ARGS_DIR.glob("*.json"))}


def removed_note(key: str, version: str) -> str:
    """Why KEY is unknown to vLLM VERSION when another shipped version has it ('' if none has)."""
    import json as _json

    seen = []
    for stem, f in shipped_lists().items():
        data = _json.loads(f.read_text())
        if key in data["args"] or any(key in v.get("aliases", []) for v in data["args"].values()):
            seen.append(data["vllm_version"])
    if not seen:
        return ""
    order = sorted(set(seen), key=lambda x: tuple(int(p) for p in re.findall(r"\d+", x)[:3]))
    where = order[0] if len(order) == 1 else f"{order[0]} to {order[-1]}"  # the shipped releases that have it
    note = REMOVED_NOTES.get(key, "")
    return (f" '--{key}' exists in vLLM {where} but not in {version}"
            + (f": {note}." if note else "."))
# Arguments the launcher owns; passing them as engine arguments would bypass its checks.
RESERVED = {"model": "--model (a Hub id or folder), --model-path or --model-name", "host": "--host", "port": "--port",
            "api-key": "--api-key-env (the key goes through the environment)"}


def canonical(name: str) -> str:
    """'--max_model_len' / 'max-model-len' / 'max_model_len' -> 'max-model-len'."""
    return name.lstrip("-").replace("_", "-").strip().lower()


@dataclass(frozen=True)
class ArgSpec:
    version: str
    args: dict  # canonical name -> {"type", "choices"?, "aliases", "nargs"?}

    def resolve(self, name: str) -> tuple[str, bool]:
        """Canonical name and whether it was a --no-X negation; BadInput with did-you-mean if unknown."""
        key = canonical(name)
        if key in self.args:
            return key, False
        for k, v in self.args.items():
            if key in v.get("aliases", []):
                return k, key.startswith("no-")
        raise BadInput(f"unknown engine argument '--{key}' for vLLM {self.version}."
                       f"{removed_note(key, self.version) or did_you_mean(key, self.args)}",
                       hint="See `python -m vllm.entrypoints.openai.api_server --help` for the list.")

    def convert(self, key: str, raw: object, negated: bool = False) -> object:
        """Convert a raw value (string from argv, or a YAML/JSON value) to the argument's type, in vLLM's range."""
        value = check_range(key, self._convert(key, raw, negated))
        choices = self.args[key].get("choices")
        if choices and isinstance(value, int) and not isinstance(value, bool) and str(value) not in choices:
            # an integer with a fixed list (--max-lora-rank: vLLM's LoRAConfig takes only the ranks it lists)
            near = min(choices, key=lambda c: abs(int(c) - value) if c.lstrip("-").isdigit() else 1 << 62)
            raise BadInput(f"--{key} must be one of {', '.join(choices)}; got {value}.",
                           hint=f"The nearest vLLM {self.version} accepts: --{key} {near}.")
        return value

    def _convert(self, key: str, raw: object, negated: bool) -> object:
        spec = self.args[key]
        t = spec["type"]
        if t in ("flag", "bool_optional"):
            if raw is None:
                return not negated
            if isinstance(raw, bool):
                return raw != negated
            s = str(raw).lower()
            if s in ("true", "1", "yes", "on"):
                return not negated
            if s in ("false", "0", "no", "off"):
                return negated
            raise BadInput(f"--{key} is a switch; got value '{raw}'.", hint=f"Write --{key} or --no-{key}.")
        if raw is None:
            raise BadInput(f"--{key} needs a value.")
        if isinstance(raw, bool):
            raise BadInput(f"--{key} expects a {t.replace('_', ' ')}, got {raw!r}.")
        if isinstance(raw, str) and raw.startswith("--"):
            raise BadInput(f"--{key} needs a value, got the flag-like '{raw}'.",
                           hint="Values may not start with '--'; did you forget the value?")
        if t == "json":
            if isinstance(raw, (dict, list)):
                return raw
            try:
                return json.loads(raw)
            except json.JSONDecodeError:
                raise BadInput(f"--{key} expects JSON, got '{raw}'.") from None
        if "nargs" in spec and isinstance(raw, list):
            return [str(x) for x in raw]
        if isinstance(raw, (dict, list)):
            if t == "str":
                return json.dumps(raw)  # e.g. hf-overrides given as a mapping in a launch file
            raise BadInput(f"--{key} expects a single {t}, got {raw!r}.")
        if t == "int" or (t == "int_or_str" and key != "max-model-len"):
            try:
                return int(raw) if not isinstance(raw, float) or raw.is_integer() else _bad(key, raw, "an integer")
            except ValueError:
                if t == "int_or_str":
                    return _human_int(key, str(raw))
                _bad(key, raw, "an integer")
        if t == "int_or_str":  # max-model-len: an integer, 'auto' or -1, or 32k
            s = str(raw).strip().lower()
            if s in ("auto", "-1"):
                return "auto"
            return _human_int(key, s)
        if t == "float":
            try:
                return float(raw)
            except ValueError:
                _bad(key, raw, "a number")
        s = str(raw)
        if "choices" in spec and s not in spec["choices"]:
            raise BadInput(f"--{key} must be one of {', '.join(spec['choices'])}; got '{s}'.{did_you_mean(s, spec['choices'])}")
        return s


# Ranges vLLM enforces (or fails on later, after minutes of loading): checked before anything starts, on any host.
# (low, high, low_open): low < v (low_open) or low <= v, v <= high; None is unbounded.
RANGES = {
    "max-model-len": (1, None, False), "gpu-memory-utilization": (0.0, 1.0, True),
    "tensor-parallel-size": (1, None, False), "pipeline-parallel-size": (1, None, False),
    "data-parallel-size": (1, None, False), "max-num-seqs": (1, None, False),
    "max-num-batched-tokens": (1, None, False), "block-size": (1, None, False),
    "kv-cache-memory-bytes": (1, None, False), "swap-space": (0, None, False), "cpu-offload-gb": (0, None, False),
    "max-loras": (1, None, False), "max-lora-rank": (1, None, False), "max-cpu-loras": (1, None, False),
    "max-logprobs": (-1, None, False), "num-gpu-blocks-override": (1, None, False),
    "max-parallel-loading-workers": (1, None, False), "port": (1, 65535, False),
}


def check_range(key: str, value: object) -> object:
    """The converted value, refused when vLLM would refuse it (NaN and infinities for every number)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise BadInput(f"--{key} must be a finite number, got {value}.")
    if key not in RANGES or not isinstance(value, (int, float)) or isinstance(value, bool):
        return value
    low, high, low_open = RANGES[key]
    if (low is not None and (value <= low if low_open else value < low)) or (high is not None and value > high):
        if high is None:
            span = f"{'more than' if low_open else 'at least'} {low:g}"
        else:
            span = f"in {'(' if low_open else '['}{low:g}, {high:g}]"
        extra = " (or 'auto' for the largest that fits)" if key == "max-model-len" else ""
        raise BadInput(f"--{key} must be {span}{extra}, got {value}.")
    return value


def _bad(key: str, raw: object, what: str) -> NoReturn:
    raise BadInput(f"--{key} expects {what}, got '{raw}'.")


def _human_int(key: str, s: str) -> int:
    mult = {"k": 1000, "m": 1000**2, "g": 1000**3, "K": 1024, "M": 1024**2, "G": 1024**3}
    s = s.strip()
    try:
        if s and s[-1] in mult:
            return int(float(s[:-1]) * mult[s[-1]])
        v = int(s)
    except ValueError:
        _bad(key, s, "an integer")
    return v


def parse_argv(tokens: list[str], spec: ArgSpec) -> dict:
    """Parse passthrough tokens such as ['--max_model_len', '18080', '--enforce-eager']."""
    out: dict = {}
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if not tok.startswith("--") or tok == "--":
            raise BadInput(f"unexpected argument '{tok}'.", hint="Engine arguments are written --name value.")
        name, eq, val = tok[2:].partition("=")
        key, negated = spec.resolve(name)
        kind = spec.args[key]["type"]
        if kind in ("flag", "bool_optional"):
            raw = val if eq else None
            i += 1
        elif eq:
            raw = val
            i += 1
        elif spec.args[key].get("nargs") in ("+", "*"):  # vLLM's several values: --served-model-name a b
            j = i + 1
            while j < len(tokens) and not (tokens[j].startswith("--") and not _is_number(tokens[j])):
                j += 1
            if j == i + 1 and spec.args[key]["nargs"] == "+":
                raise BadInput(f"--{key} needs a value.")
            raw = [*(out.get(key) or [] if isinstance(out.get(key), list) else []), *tokens[i + 1:j]]
            i = j
        else:
            if i + 1 >= len(tokens) or (tokens[i + 1].startswith("--") and not _is_number(tokens[i + 1])):
                raise BadInput(f"--{key} needs a value.")
            raw = tokens[i + 1]
            i += 2
        _check_reserved(key)
        out[key] = spec.convert(key, raw, negated)
    return out


def parse_mapping(mapping: dict, spec: ArgSpec) -> dict:
    """Engine arguments from a launch file mapping (either spelling as keys)."""
    out = {}
    for k, v in mapping.items():
        key, negated = spec.resolve(str(k))
        _check_reserved(key)
        out[key] = spec.convert(key, v, negated)
    return out


def _check_reserved(key: str) -> None:
    if key in RESERVED:
        raise BadInput(f"--{key} is set by the launcher; use {RESERVED[key]} instead.")


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def to_argv(args: dict, spec: ArgSpec | None = None) -> list[str]:
    """Back to vLLM's argv spelling: {'max-model-len': 4096, 'enforce-eager': True} -> [...]."""
    out: list[str] = []
    for k, v in args.items():
        kind = spec.args.get(k, {}).get("type") if spec else None
        if isinstance(v, bool):
            if v:
                out.append(f"--{k}")
            elif kind == "bool_optional":
                out.append(f"--no-{k}")
            continue
        if isinstance(v, (dict, list)) and not (spec and "nargs" in spec.args.get(k, {})):
            out += [f"--{k}", json.dumps(v)]
        elif isinstance(v, list):
            out += [f"--{k}", *map(str, v)]
        else:
            out += [f"--{k}", str(v)]
    return out

"""Facts of the installed vLLM the estimator keeps as data (launcher/models/hybrid.py STATE_ARCHS,
launcher/estimator/releases.py TRANSFORMERS_BACKEND), read from its sources without building a model: the classes that
implement IsHybrid or IsAttentionFree (a per-request recurrent state), the architectures its registry builds
through the Transformers backend, and every architecture name its registry knows (launcher/estimator/
vllm_registry.json). Prints JSON; tests/test_releases.py holds the shipped data equal to it.

usage: .venv/bin/python scripts/scan_vllm_facts.py
"""
import ast
import json
import pathlib


def main() -> None:
    import vllm
    from vllm.model_executor.models.registry import _VLLM_MODELS

    root = pathlib.Path(vllm.__file__).parent
    bases: dict[str, list[list[str]]] = {}
    for f in [*(root / "model_executor" / "models").glob("*.py"), *(root / "models").rglob("*.py")]:
        try:
            tree = ast.parse(f.read_text())
        except (SyntaxError, UnicodeDecodeError):
            continue
        for n in ast.walk(tree):
            if isinstance(n, ast.ClassDef):
                bases.setdefault(n.name, []).append([ast.unparse(b).split(".")[-1].split("[")[0] for b in n.bases])

    def has(cls: str, iface: str, seen: tuple = ()) -> bool:
        if cls == iface:
            return True
        return cls not in seen and any(has(b, iface, seen + (cls,)) for bl in bases.get(cls, []) for b in bl)

    state = sorted(a for a, (_, c) in _VLLM_MODELS.items() if has(c, "IsHybrid") or has(c, "IsAttentionFree"))
    state = [a for a in state if a != "Terratorch"]  # not a language model: no KV cache or state to plan
    backend = sorted(a for a, (mod, _) in _VLLM_MODELS.items() if mod == "transformers" and not a.startswith("Transformers"))
    print(json.dumps({"vllm": vllm.__version__, "state_archs": state, "transformers_backend": backend,
                      "registered": sorted(_VLLM_MODELS)}))


if __name__ == "__main__":
    main()

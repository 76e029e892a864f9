"""Print the installed vLLM's server arguments as JSON (run in a subprocess: it imports vLLM).

python -m launcher.engines._dump_vllm_args > args.json
"""
import argparse
import json
import sys


def main() -> None:
    import contextlib

    with contextlib.redirect_stdout(sys.stderr):  # vLLM may log to stdout while it imports
        data = _read()
    json.dump(data, sys.stdout, indent=0, sort_keys=True)


def _read() -> dict:
    import importlib

    for where in ("vllm.entrypoints.openai.cli_args", "vllm.entrypoints.launchers.cli_args",
                  "vllm.entrypoints.common.cli_args"):  # moved between releases
        try:
            make_arg_parser = importlib.import_module(where).make_arg_parser
            break
        except ImportError:
            continue
    else:
        raise ImportError("no make_arg_parser in this vLLM")
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = make_arg_parser(FlexibleArgumentParser())
    out = {}
    for a in parser._actions:
        longs = [o for o in a.option_strings if o.startswith("--")]
        if not longs or isinstance(a, argparse._HelpAction):
            continue
        name = longs[0][2:]
        if isinstance(a, argparse.BooleanOptionalAction):
            kind = "bool_optional"
        elif isinstance(a, (argparse._StoreTrueAction, argparse._StoreFalseAction)) or a.nargs == 0:
            kind = "flag"
        else:
            t = a.type
            tn = getattr(t, "__name__", "") if t else "str"
            kind = {"int": "int", "float": "float", "str": "str"}.get(tn, "str")
            if tn in ("human_readable_int", "human_readable_int_or_auto"):
                kind = "int_or_str"
            if "json" in tn.lower() or "loads" in tn.lower():
                kind = "json"
        entry = {"type": kind, "aliases": [o[2:] for o in longs[1:]]}
        if a.choices:
            entry["choices"] = [str(c) for c in a.choices]
        if a.nargs not in (None, 0, "?"):
            entry["nargs"] = str(a.nargs)
        help_text = " ".join(str(a.help or "").split())
        if getattr(a, "deprecated", False) or "deprecat" in help_text.lower():
            entry["deprecated"] = help_text[:300] or "deprecated"
        out[name] = entry
    import vllm
    return {"vllm_version": vllm.__version__, "args": out}


if __name__ == "__main__":
    main()

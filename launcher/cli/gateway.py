"""`launcher gateway ...`: steer the running gateway (`launcher serve`) without restarting it: one model slept,
woken, started, stopped or removed, requests in flight finishing first; a launch file added; the models file
reloaded. Each talks to the gateway's control API (gateway/client.py)."""
from __future__ import annotations

from typing import Annotated, Optional

import typer

from . import common

app = typer.Typer(help="Steer the running gateway (launcher serve): one model at a time, no restart.",
                  no_args_is_help=True, add_completion=False, rich_markup_mode=None)

Name = Annotated[str, typer.Argument(help="A model the gateway serves (its name or an alias).")]
Url = Annotated[Optional[str], typer.Option("--url", metavar="URL", show_default="the one running here, from its record", help="The gateway's address.")]


def _act(name: str, action: str, url: str | None, json_out: bool) -> None:
    from ..gateway import client

    out = client.act(name, action, url)
    common.output(out, json_out, lambda con: con.print(f"{out['name']}: {out['state']}"
                                                       + (f" ({out['error']})" if out.get("error") else "")))


@app.command("stop")
def stop(name: Name, url: Url = None, json_out: common.Json = False) -> None:
    """Stop one model (its requests in flight finish first); the next request for it starts it again."""
    _act(name, "stop", url, json_out)


@app.command("sleep")
def sleep(name: Name, url: Url = None, json_out: common.Json = False) -> None:
    """Put one model to sleep (vLLM's sleep mode, GPU only): its KV cache freed, its weights to host memory."""
    _act(name, "sleep", url, json_out)


@app.command("wake")
def wake(name: Name, url: Url = None, json_out: common.Json = False) -> None:
    """Wake or start one model now (room made for it as for a request), without waiting for a request."""
    _act(name, "wake", url, json_out)


app.command("start", help="The same as wake: start one model now.")(wake)


@app.command("remove")
def remove(name: Name, url: Url = None, json_out: common.Json = False) -> None:
    """Stop one model (requests in flight finish) and forget it: its names route nowhere until added again."""
    from ..gateway import client

    out = client.remove(name, url)
    common.output(out, json_out, lambda con: con.print(f"{out['removed']}: removed"))


@app.command("add")
def add(file: Annotated[str, typer.Argument(help="A launch file (YAML or JSON): one entry of a models file.")],
        url: Url = None, json_out: common.Json = False) -> None:
    """Add a model from a launch file, checked as the models file is (the model exists, the launch plans)."""
    from ..gateway import client
    from ..spec import read_mapping

    entry = read_mapping(file, "launch file")
    out = client.add(entry, url)
    common.output(out, json_out, lambda con: con.print(f"{out['added']}: {out['state']} (names: {', '.join(out['names'])})"))


@app.command("reload")
def reload(url: Url = None, json_out: common.Json = False) -> None:
    """Read the models file again (as SIGHUP does): added models served, removed ones drained and stopped, changed
    ones drained and started again as written; a bad file refused with its reason (exit 2), the old one kept."""
    from ..gateway import client

    out = client.call(url, "POST", "/gateway/reload")
    common.output(out, json_out, lambda con: con.print("; ".join(
        f"{k}: {', '.join(v)}" for k, v in out.items() if v) or "no change"))


@app.command("load-adapter")
def load_adapter(base: Name, adapter: Annotated[str, typer.Argument(help="The adapter's name, as requests will give it in `model`.")],
                 path: Annotated[str, typer.Argument(help="Its folder (a PEFT adapter: adapter_config.json and weights).")],
                 url: Url = None, json_out: common.Json = False) -> None:
    """Load a LoRA adapter on a base model the gateway serves (launched with enable-lora), without a restart: routed
    to its base, listed in /v1/models, loaded again whenever the base starts. Refused with the reason where the base
    runs without --enable-lora, the rank is above its --max-lora-rank, or the folder holds no adapter."""
    import os

    from ..gateway import client

    out = client.load_adapter(base, adapter, os.path.abspath(os.path.expanduser(path)), url)
    common.output(out, json_out, lambda con: con.print(
        f"{out['adapter']}: on {out['base']}" + ("" if out["loaded"] else " (loaded when it starts)")))


@app.command("unload-adapter")
def unload_adapter(base: Name, adapter: Annotated[str, typer.Argument(help="The adapter's name.")],
                   url: Url = None, json_out: common.Json = False) -> None:
    """Unload a LoRA adapter loaded at run time: no longer routed, listed or loaded again."""
    from ..gateway import client

    out = client.unload_adapter(base, adapter, url)
    common.output(out, json_out, lambda con: con.print(f"{out['removed']}: unloaded from {out['base']}"))

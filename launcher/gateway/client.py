"""The running gateway's control API, from the CLI: add a launch (`launch --via`), and sleep, wake, start, stop or
remove one model (`launcher gateway ...`, `launcher stop NAME` of a gateway model). The local gateway is found from
its record (gateway.json); the key is the gateway's API key (LAUNCHER_GATEWAY_API_KEY) where it has one, else the
local control key from its secret."""
from __future__ import annotations

import json
import os
import urllib.error
import urllib.request

from ..errors import BadInput, LaunchFailed


def local_url() -> str | None:
    """The address of the gateway that runs here now (from gateway.json, its PID checked), else None."""
    from .record import live_gateway

    gw = live_gateway()
    return gw.get("url") if gw else None


def serves(name: str) -> str | None:
    """The URL of the local gateway when it serves a model of this name, else None."""
    from .record import live_gateway

    gw = live_gateway()
    return gw.get("url") if gw and name in (gw.get("models") or {}) else None


def _key() -> str:
    from .model import control_key

    return os.environ.get("LAUNCHER_GATEWAY_API_KEY") or control_key()


def call(url: str | None, method: str, path: str, body: dict | None = None, timeout: float = 900) -> dict:
    """One request to the gateway: its JSON answer; BadInput with the gateway's own message when it refuses,
    LaunchFailed when nothing answers."""
    url = url or local_url()
    if not url:
        raise BadInput("no gateway runs here.", hint="Start one with `launcher serve --models FILE`.")
    headers = {"Authorization": f"Bearer {_key()}"}
    data = None
    if body is not None:
        headers["Content-Type"] = "application/json"
        data = json.dumps(body, default=str).encode()
    req = urllib.request.Request(url.rstrip("/") + path, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        try:
            msg = json.loads(e.read() or b"{}").get("error", {}).get("message") or str(e)
        except ValueError:
            msg = str(e)
        raise BadInput(f"the gateway at {url} refused: {msg}") from None
    except OSError as e:
        raise LaunchFailed(f"no gateway answers at {url}: {e}", hint="Start one with `launcher serve --models FILE`.") from None


def act(name: str, action: str, url: str | None = None) -> dict:
    """sleep, wake, start or stop one model of the gateway; the model's state after it."""
    return call(url, "POST", f"/gateway/models/{name}/{action}")


def remove(name: str, url: str | None = None) -> dict:
    return call(url, "DELETE", f"/gateway/models/{name}")


def add(entry: dict, url: str | None = None) -> dict:
    return call(url, "POST", "/gateway/models", entry, timeout=60)


def load_adapter(base: str, name: str, path: str, url: str | None = None) -> dict:
    """A LoRA adapter loaded on the running base model (gateway/adapters.py)."""
    return call(url, "POST", f"/gateway/models/{base}/adapters", {"name": name, "path": path})


def unload_adapter(base: str, name: str, url: str | None = None) -> dict:
    return call(url, "DELETE", f"/gateway/models/{base}/adapters/{name}")

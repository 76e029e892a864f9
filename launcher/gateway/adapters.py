"""LoRA adapters loaded on a running base model through the gateway (vLLM's /v1/load_lora_adapter and
/v1/unload_lora_adapter, which its API server has where VLLM_ALLOW_RUNTIME_LORA_UPDATING is set: the gateway sets it
for every model launched with --enable-lora; its servers listen on loopback with a key only the gateway holds).

An adapter is checked before vLLM sees it (the base runs with --enable-lora, the folder holds a PEFT adapter, its
rank is within the base's --max-lora-rank), then routed to its base, listed in /v1/models with its parent, recorded in
the gateway's folder (adapters.json) and loaded again whenever the base starts: after a restart by its supervisor, a
fresh start, or an adoption by a gateway started again."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from aiohttp import web

from .lifecycle import Phase
from .model import GatewayError, gateway_dir, post
from .starting import lora_enabled

if TYPE_CHECKING:
    from .model import Backend
    from .names import Registry


class Backends(Protocol):
    """What the adapter routes use of the pool (backends.Backends)."""

    names: Registry

    def route(self, model: object) -> Backend: ...

VLLM_DEFAULT_MAX_LORA_RANK = 16  # vLLM's LoRAConfig.max_lora_rank default


def check(base_name: str, engine_args: dict, adapter: str, path: str) -> str:
    """The adapter's folder made absolute, or GatewayError 400 saying what to change."""
    if not lora_enabled(engine_args):
        raise GatewayError(400, f"`{base_name}` runs without --enable-lora: vLLM cannot load an adapter on it. Add "
                                f"`enable-lora: true` (and `max-lora-rank`) to its engine_args in the models file.",
                           "invalid_request_error", code="lora_not_enabled")
    folder = Path(os.path.expanduser(path)).resolve()
    cfg_file = folder / "adapter_config.json"
    if not cfg_file.is_file():
        raise GatewayError(400, f"'{path}' holds no LoRA adapter (no adapter_config.json there).",
                           "invalid_request_error", code="not_an_adapter")
    try:
        cfg = json.loads(cfg_file.read_text())
    except (OSError, ValueError) as e:
        raise GatewayError(400, f"'{cfg_file}' cannot be read: {e}", "invalid_request_error",
                           code="not_an_adapter") from None
    rank = int(cfg.get("r") or 0)
    limit = int(engine_args.get("max-lora-rank") or VLLM_DEFAULT_MAX_LORA_RANK)
    if rank > limit:
        raise GatewayError(400, f"adapter '{adapter}' has rank {rank}, above `{base_name}`'s --max-lora-rank {limit}: "
                                f"raise max-lora-rank in its entry to at least {rank}.", "invalid_request_error",
                           code="lora_rank_too_large")
    return str(folder)


def _file() -> Path:
    return Path(gateway_dir()) / "adapters.json"


def recorded() -> dict[str, dict[str, str]]:
    """{base: {adapter: folder}} as recorded by this gateway (and an earlier one in the same LAUNCHER_HOME)."""
    try:
        data = json.loads(_file().read_text())
    except (OSError, ValueError):
        return {}
    return {b: dict(a) for b, a in data.items() if isinstance(a, dict)}


def record(base: str, adapters: dict[str, str]) -> None:
    from ..runs import write_json

    data = recorded()
    if adapters:
        data[base] = adapters
    else:
        data.pop(base, None)
    write_json(_file(), data)


async def add_route(pool: Backends, request: web.Request) -> web.Response:
    """POST /gateway/models/BASE/adapters {"name", "path"}: a LoRA adapter loaded on BASE now (or at its next
    start), routed to it, listed in /v1/models, recorded for its restarts; 400 with the reason where it cannot."""
    b = pool.route(request.match_info["name"])
    try:
        item = await request.json()
    except ValueError:
        item = None
    if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not item["name"] \
            or not isinstance(item.get("path"), str):
        raise GatewayError(400, 'give {"name": ADAPTER, "path": FOLDER}.', "invalid_request_error")
    name = item["name"]
    if name in b.adapters or name in b.entry.names:
        raise GatewayError(409, f"'{name}' is {b.name}'s already.", "invalid_request_error", code="name_taken")
    folder = check(b.name, b.entry.spec.engine_args, name, item["path"])
    pool.names.add_name(b, name)
    b.adapters[name] = folder
    loaded = b.life.phase == Phase.RUNNING
    if loaded:
        failed = await b.load_adapters([name])
        if failed:
            del b.adapters[name]
            pool.names.drop_name(b, name)
            raise GatewayError(400, f"vLLM refused adapter '{name}': {failed[name]}", "invalid_request_error",
                               code="adapter_refused")
    record(b.name, b.adapters)
    return web.json_response({"base": b.name, "adapter": name, "path": folder, "loaded": loaded}, status=201)


async def remove_route(pool: Backends, request: web.Request) -> web.Response:
    """DELETE /gateway/models/BASE/adapters/ADAPTER: unloaded, no longer routed or recorded."""
    b = pool.route(request.match_info["name"])
    name = request.match_info["adapter"]
    if name not in b.adapters:
        where = " (it is in the models file: remove it there)" if name in b.entry.lora_names else ""
        raise GatewayError(404, f"`{b.name}` has no adapter '{name}' loaded at run time{where}.",
                           "invalid_request_error", code="adapter_not_found")
    await unload(b, name)
    del b.adapters[name]
    pool.names.drop_name(b, name)
    record(b.name, b.adapters)
    return web.json_response({"base": b.name, "removed": name})


async def unload(b: Backend, name: str) -> None:
    """The adapter unloaded from b's server where it runs (one vLLM no longer has counts as unloaded)."""
    if b.launch is not None and b.life.phase == Phase.RUNNING:
        status, text = await post(b.port, b.key, "/v1/unload_lora_adapter", b.name, {"lora_name": name}, check=False,
                                  host=b.host)
        if status != 200 and "not found" not in text.lower() and "does not exist" not in text.lower():
            raise GatewayError(502, f"`{b.name}` did not unload '{name}': vLLM answered {status}: {text[:300]}")

"""The models file `launcher plan` plans and `launcher serve` serves: a `models:` list whose entries are launch files
(read by the same code as `launcher launch -f`) plus the gateway's own keys: aliases, ttl, pinned, preload."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .errors import BadInput
from .spec import LaunchSpec, build, launch_mapping, read_mapping

if TYPE_CHECKING:
    from collections.abc import Callable

    from .engine_args import ArgSpec

GATEWAY_KEYS = ("aliases", "ttl", "sleep_ttl", "pinned", "preload")


@dataclass(frozen=True)
class ModelEntry:
    """One model the gateway serves: how to launch it, the names that route to it, and when it may be let go."""

    spec: LaunchSpec
    aliases: tuple[str, ...] = ()
    ttl_s: float | None = None  # idle seconds before it is put to sleep or stopped; None: never for idleness
    sleep_ttl_s: float | None = None  # seconds asleep before it is stopped (what it keeps freed); None: never
    pinned: bool = False  # never slept or stopped to make room
    preload: bool = False  # started when the gateway starts, not at its first request
    lora_names: tuple[str, ...] = field(default=())  # adapters of --lora-modules: route to this launch

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def names(self) -> tuple[str, ...]:
        """Every model name a request may give for this launch."""
        return (self.name, *self.aliases, *self.lora_names)


def load_models(path: str, engine_spec: ArgSpec) -> list[ModelEntry]:
    """The models file, checked whole before anything starts: BadInput (one line, exit 2) naming the entry."""
    data = read_mapping(path, "models file")
    unknown = sorted(set(data) - {"models"})
    if unknown:
        raise BadInput(f"models file '{path}': unknown top-level key '{unknown[0]}' (expected 'models:').")
    items = data.get("models")
    if not isinstance(items, list) or not items:
        raise BadInput(f"models file '{path}': 'models:' must be a non-empty list of launches.")
    entries = [entry_from_mapping(item, engine_spec, f"models file '{path}': models[{i}]")
               for i, item in enumerate(items)]
    check_names(entries, f"models file '{path}'")
    return entries


def load_checked(path: str, engine_spec: ArgSpec, capacity_bytes: int | None,
                 as_started: Callable[[ModelEntry], LaunchSpec] | None = None) -> list[ModelEntry]:
    """The models file read and every entry checked (check_entry) before anything starts or changes; as_started: the
    launch each entry becomes where it is started (on a Ray cluster's GPU nodes: planned for their GPUs)."""
    entries = load_models(path, engine_spec)
    for i, e in enumerate(entries):
        check_entry(e, f"models file '{path}': models[{i}]", capacity_bytes, as_started)
    return entries


def entry_from_mapping(item: object, engine_spec: ArgSpec, where: str) -> ModelEntry:
    """One entry: the launch keys through spec.launch_mapping, the gateway keys checked here."""
    from .engine_args import parse_mapping

    if not isinstance(item, dict):
        raise BadInput(f"{where}: expected a mapping (a launch), got {type(item).__name__}.")
    own = {k: item[k] for k in GATEWAY_KEYS if k in item}
    launch = {k: v for k, v in item.items() if k not in GATEWAY_KEYS}
    if "name" not in launch:
        raise BadInput(f"{where}: 'name' is required (the model name clients ask for).")
    data = launch_mapping(launch, engine_spec, where)
    engine_args = parse_mapping(data.get("engine_args", {}), engine_spec)
    spec = build({}, data, {}, engine_args)
    return ModelEntry(spec, aliases=_aliases(own.get("aliases"), where), ttl_s=_ttl(own.get("ttl"), where),
                      sleep_ttl_s=_ttl(own.get("sleep_ttl"), where),
                      pinned=_flag(own, "pinned", where), preload=_flag(own, "preload", where),
                      lora_names=lora_names(engine_args.get("lora-modules")))


def check_names(entries: list[ModelEntry], where: str) -> None:
    """Each model name (launch name, alias or adapter) routes to one launch only."""
    seen: dict[str, str] = {}
    for e in entries:
        for n in e.names:
            if n in seen and seen[n] != e.name:
                raise BadInput(f"{where}: the name '{n}' is given to both '{seen[n]}' and '{e.name}'.")
            seen[n] = e.name


def lora_names(modules: object) -> tuple[str, ...]:
    """The adapter names of vLLM's --lora-modules: 'name=path' items or JSON objects with a "name"."""
    if not modules:
        return ()
    items = modules if isinstance(modules, list) else [modules]
    out = []
    for it in items:
        if isinstance(it, dict):
            out.append(str(it.get("name", "")))
            continue
        s = str(it).strip()
        if s.startswith("{"):
            try:
                out.append(str(json.loads(s).get("name", "")))
            except ValueError:
                continue
        elif "=" in s:
            out.append(s.split("=", 1)[0])
    return tuple(n for n in out if n)


def _aliases(v: object, where: str) -> tuple[str, ...]:
    if v is None:
        return ()
    if isinstance(v, str):
        v = [v]
    if not isinstance(v, list) or not all(isinstance(x, str) and x for x in v):
        raise BadInput(f"{where}: aliases must be a list of model names.")
    return tuple(v)


def _ttl(v: object, where: str) -> float | None:
    """ttl: seconds (a number) or a duration (90s, 10m, 1h30m); 0 or absent: no idle limit."""
    from .units import parse_duration

    if v is None:
        return None
    if isinstance(v, bool):
        raise BadInput(f"{where}: ttl must be seconds (a number) or like 90s, 10m, 1h; got {v!r}.")
    try:
        return parse_duration(v, what=f"{where}: ttl") or None
    except BadInput:
        raise BadInput(f"{where}: ttl must be seconds (a number) or like 90s, 10m, 1h; got {v!r}.") from None


def _flag(own: dict, key: str, where: str) -> bool:
    v = own.get(key, False)
    if not isinstance(v, bool):
        raise BadInput(f"{where}: {key} must be true or false, got {v!r}.")
    return v


def check_entry(entry: ModelEntry, where: str, capacity_bytes: int | None = None,
                as_started: Callable[[ModelEntry], LaunchSpec] | None = None) -> None:
    """Before anything starts: the entry names a model that is there, and its launch plans as `launcher estimate`
    plans it. BadInput (exit 2) with the reason; a launch that does not fit beside what runs now is accepted when it
    fits the gateway's budget alone (room is made for it at its first request)."""
    from pathlib import Path

    from .errors import DoesNotFit
    from .launching import prepare

    s = entry.spec
    if not (s.model_path or s.model or s.model_name):
        raise BadInput(f"{where} ('{entry.name}'): names no model.",
                       hint="Give model_path (a folder), model (a Hub repository id) or model_name with size_in_billions.")
    if s.model_path and not Path(s.model_path).expanduser().is_dir():
        raise BadInput(f"{where} ('{entry.name}'): model_path '{s.model_path}' is not a folder here.")
    try:
        prepare(as_started(entry) if as_started else s, claim=False, check_port=False)
    except DoesNotFit as e:
        est = getattr(e, "estimate", None)
        if est is None or capacity_bytes is None:
            raise BadInput(f"{where} ('{entry.name}'): {e}", hint=getattr(e, "hint", None)) from None
        from .sizing import need_of

        need = need_of(est.to_dict(), None)
        if need > capacity_bytes:
            raise BadInput(f"{where} ('{entry.name}'): {e}", hint=getattr(e, "hint", None)) from None
    except BadInput as e:
        raise BadInput(f"{where} ('{entry.name}'): {e}", hint=e.hint) from None

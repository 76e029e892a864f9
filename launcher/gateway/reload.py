"""The models file read again while the gateway runs (SIGHUP, `--watch`, `launcher gateway reload`): the new file is
checked whole as at the start; a bad one is refused with one line and the old one kept. Otherwise entries added are
served, entries removed drain (their requests in flight finish) and stop, and entries changed drain, stop and come
back as written (started again at their next request, or at once where preloaded). Entries unchanged are not
touched, whatever they are doing. Models added through the control API and absent from the file are removed: the
file is the whole list."""
from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from .backends import Backends
    from .model import Backend
    from ..models_file import ModelEntry


@dataclass(frozen=True)
class Changes:
    added: tuple[ModelEntry, ...] = ()
    removed: tuple[str, ...] = ()
    changed: tuple[ModelEntry, ...] = ()
    kept: tuple[str, ...] = field(default=())

    def summary(self) -> dict:
        return {"added": [e.name for e in self.added], "removed": list(self.removed),
                "changed": [e.name for e in self.changed], "kept": list(self.kept)}


def diff(current: dict[str, ModelEntry], new: list[ModelEntry]) -> Changes:
    """What a new models file changes against the entries served now (by name; an entry equal in every key is kept)."""
    names = {e.name for e in new}
    return Changes(added=tuple(e for e in new if e.name not in current),
                   removed=tuple(n for n in current if n not in names),
                   changed=tuple(e for e in new if e.name in current and current[e.name] != e),
                   kept=tuple(e.name for e in new if e.name in current and current[e.name] == e))


class FileWatch:
    """The models file's identity on disk (mtime, size, inode): `changed()` is True once after each edit."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.seen = self._stamp()

    def _stamp(self) -> tuple | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def changed(self) -> bool:
        now = self._stamp()
        if now is None or now == self.seen:
            return False
        self.seen = now
        return True


async def apply(pool: Backends, changes: Changes, drain: Callable[[Backend, Callable[[], Awaitable]], Awaitable],
                start: Callable[[Backend], None]) -> None:
    """Carry the changes out on the pool: removed and changed models drained and stopped (all at once), then the new
    and changed entries added; `start` is called for each added one that is preloaded."""
    going = [pool.by_name[n] for n in (*changes.removed, *(e.name for e in changes.changed)) if n in pool.by_name]

    async def retire(b: Backend) -> None:
        await drain(b, lambda: b.stop("the models file changed"))
        pool.forget(b)

    results = await asyncio.gather(*(retire(b) for b in going), return_exceptions=True)
    for b, r in zip(going, results):
        if isinstance(r, BaseException):
            pool.housekeeping_error(b, "reload", r)
            pool.forget(b)  # its supervisor is asked to stop either way; the new entry takes its names
    for e in (*changes.added, *changes.changed):
        b = pool.add(e)
        if e.preload:
            start(b)

"""`launcher pull` and the download step of launch/smoke: progress with bytes, rate and ETA.

A terminal gets a rich progress bar; anything else (CI logs) a plain line every few seconds;
`pull --json` writes one JSON event per line on stdout for scripts.
"""
from __future__ import annotations

import json
import sys
import time
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from . import common

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..models.hub import DownloadPlan

PLAIN_EVERY_S = 5.0


def _gib(b: int) -> str:
    return f"{b / 2**30:.2f} GiB" if b >= 2**30 else f"{b / 2**20:.1f} MiB"


class Reporter:
    """Turns (file, done, total) callbacks into rich, plain or JSON progress."""

    def __init__(self, repo: str, mode: str) -> None:
        self.repo, self.mode = repo, mode  # mode: rich | plain | json
        self.t0 = time.monotonic()
        self.first_done: int | None = None
        self.last_plain = 0.0
        self.last_done: int | None = None
        self.progress = self.task = None

    def event(self, kind: str, **data) -> None:
        if self.mode == "json":
            sys.stdout.write(json.dumps({"event": kind, "repo": self.repo, **data}) + "\n")
            sys.stdout.flush()

    def start(self, plan: DownloadPlan) -> None:
        cached = plan.total_bytes - plan.to_download_bytes
        self.event("plan", files=len(plan.files), total_bytes=plan.total_bytes, to_download_bytes=plan.to_download_bytes,
                   target=plan.target, commit=plan.commit)
        if self.mode != "json":
            common.console(stderr=True).print(
                f"{self.repo}: {len(plan.files)} files, {_gib(plan.to_download_bytes)} to download"
                + (f" ({_gib(cached)} already here)" if cached else "") + f" into {plan.target}")
        if self.mode == "rich" and plan.to_download_bytes:
            from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                                       TransferSpeedColumn)

            self.progress = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                                     TransferSpeedColumn(), TimeRemainingColumn(), console=common.console(stderr=True),
                                     transient=False)
            self.task = self.progress.add_task(self.repo, total=plan.total_bytes, completed=plan.total_bytes - plan.to_download_bytes)
            self.progress.start()

    def __call__(self, filename: str, done: int, total: int) -> None:
        now = time.monotonic()
        if self.first_done is None:
            self.first_done = done
        rate = (done - self.first_done) / max(now - self.t0, 1e-6)
        eta = (total - done) / rate if rate > 0 else None
        if self.progress is not None:
            self.progress.update(self.task, completed=done, description=f"{self.repo} {filename}"[:60])
        elif (now - self.last_plain >= PLAIN_EVERY_S or done >= total) and done != self.last_done:
            self.last_plain, self.last_done = now, done
            if self.mode == "json":
                self.event("progress", file=filename, bytes=done, total_bytes=total, bytes_per_s=round(rate),
                           eta_s=None if eta is None else round(eta, 1))
            else:
                pct = 100 * done / total if total else 100
                print(f"{self.repo}: {_gib(done)} / {_gib(total)} ({pct:.0f}%), {_gib(int(rate))}/s"
                      + (f", ETA {eta:.0f} s" if eta is not None else ""), file=sys.stderr, flush=True)

    def finish(self, path: str) -> None:
        if self.progress is not None:
            self.progress.stop()
        self.event("done", path=path, seconds=round(time.monotonic() - self.t0, 2))


def fetch_model(json_events: bool = False) -> Callable[[str, str | None, str | None], str]:
    """The fetch step for launching.prepare: download a Hub model with progress, return its folder."""
    def fetch(repo: str, revision: str | None, download_dir: str | None) -> str:
        from ..models import hub

        mode = "json" if json_events else ("rich" if sys.stderr.isatty() else "plain")
        rep = Reporter(repo, mode)
        plan = hub.plan_download(repo, revision, download_dir)
        rep.start(plan)
        try:
            path = hub.download(plan, rep)
        finally:
            if rep.progress is not None:
                rep.progress.stop()
        rep.finish(path)
        return path
    return fetch


def pull(model: Annotated[Optional[str], typer.Argument(help="Hub repository id (org/name); or use --model-name.")] = None,
         revision: common.Revision = None,
         download_dir: common.DownloadDir = None,
         model_name: common.ModelName = None,
         size_in_billions: common.Size = None,
         model_format: common.ModelFormat = None,
         quantization: common.Quantization = None,
         json_out: common.Json = False) -> None:
    """Download a model from the Hugging Face Hub (resumable; HF_HOME, HF_TOKEN, HF_HUB_OFFLINE, HF_ENDPOINT
    honoured) after checking the disk space. Prints the local folder. Exit: 0 done, 2 bad input or Hub error."""
    from ..errors import BadInput
    from ..models import catalog, hub

    if model_name:
        repo = catalog.lookup(model_name, size_in_billions, model_format or "pytorch", quantization or "none").repo
    elif model and hub.looks_like_repo_id(model):
        repo = model
    else:
        raise BadInput(f"'{model or ''}' is not a Hub repository id (org/name).",
                       hint="Give ORG/NAME, or --model-name NAME --size-in-billions N from the catalog.")
    path = fetch_model(json_events=json_out)(repo, revision, download_dir)
    if not json_out:
        print(path)

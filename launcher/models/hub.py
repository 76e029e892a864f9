"""Models from the Hugging Face Hub, through huggingface_hub's own API (no hand-written HTTP).

Everything that talks to the Hub is here: the metadata the estimator needs (config.json and the
safetensors index, a few KB, kept in the Hugging Face cache), the download plan (file sizes, what
is cached already), the download itself with byte progress, and the Hub's errors turned into one
line each that says what to do. huggingface_hub honours HF_HOME, HF_HUB_CACHE, HF_TOKEN,
HF_HUB_OFFLINE and HF_ENDPOINT by itself; imported only on these paths.
"""
from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import BadInput

REPO_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
# What vLLM reads from a model repository when safetensors weights are present (load format 'auto');
# other weight formats and the original checkpoints some repositories carry are not downloaded.
SKIP_WITH_SAFETENSORS = ["*.bin", "*.pt", "*.pth", "*.msgpack", "*.h5", "*.ot", "*.gguf", "*.onnx", "*.tflite",
                         "original/*", "consolidated*.safetensors"]
DISK_SLACK_BYTES = 512 << 20  # kept free beside the download (the cache's own files, logs)


def looks_like_repo_id(s: str | None) -> bool:
    """'org/name' that is not a folder on this machine."""
    return bool(s) and REPO_ID_RE.match(s) is not None and not Path(s).expanduser().exists()


@contextmanager
def hub_errors(repo_id: str, what: str = "read"):
    """huggingface_hub's exceptions -> BadInput (exit 2) with one line of what to do."""
    from huggingface_hub import errors as e

    try:
        yield
    except e.GatedRepoError:
        raise BadInput(f"'{repo_id}' is a gated repository: access must be requested on its Hub page.",
                       hint="Accept its conditions on the Hub, then set HF_TOKEN to a token of that account.") from None
    except e.RevisionNotFoundError:
        raise BadInput(f"'{repo_id}' has no such revision.", hint="Check --revision (a branch, tag or commit).") from None
    except e.RepositoryNotFoundError:
        token = " (the token in HF_TOKEN was refused, or cannot see it)" if os.environ.get("HF_TOKEN") else ""
        raise BadInput(f"repository '{repo_id}' not found on the Hub{token}.",
                       hint="Check the repository id; for a private repository set HF_TOKEN.") from None
    except (e.LocalEntryNotFoundError, e.OfflineModeIsEnabled, e.DryRunError):
        raise _not_here(repo_id, what) from None
    except e.EntryNotFoundError as x:  # after LocalEntryNotFoundError, its subclass
        raise BadInput(f"'{repo_id}' has no {_entry(x)}: not a model repository vLLM can load.") from None
    except e.HfHubHTTPError as x:
        status = getattr(getattr(x, "response", None), "status_code", None)
        if status == 401:
            raise BadInput(f"the Hub refused the token for '{repo_id}' (401).",
                           hint="Set HF_TOKEN to a valid token, or unset it for public repositories.") from None
        raise BadInput(f"the Hub answered {status or 'an error'} for '{repo_id}': {str(x).splitlines()[0]}") from None
    except Exception as x:  # the network itself (httpx's ConnectError, a timeout, a reset): one line, not a traceback
        if not _is_network_error(x):
            raise
        raise _not_here(repo_id, what, f" ({type(x).__name__}: {x})") from None


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def _not_here(repo_id: str, what: str, detail: str = "") -> BadInput:
    return BadInput(f"cannot {what} '{repo_id}': " + ("HF_HUB_OFFLINE is set and " if _offline() else
                    f"the Hub ({_endpoint()}) cannot be reached{detail} and ") +
                    f"the local cache ({cache_dir()}) does not hold it.",
                    hint="Connect once (or copy the model into that cache), or give --model-path DIR.")


def _is_network_error(x: BaseException) -> bool:
    """A failure of the network itself: the OS's, or the HTTP client huggingface_hub uses (httpx's TransportError
    family: connect, read, timeout), recognised by where its class comes from, not by importing that client."""
    import socket

    if isinstance(x, (ConnectionError, TimeoutError, socket.gaierror)):
        return True
    return any(c.__module__.split(".")[0] in ("httpx", "httpcore") and c.__name__ == "TransportError"
               for c in type(x).__mro__)


def _endpoint() -> str:
    from huggingface_hub import constants

    return str(constants.ENDPOINT)


_REACHABLE: dict[str, bool] = {}


def hub_reachable(timeout_s: float = 3.0) -> bool:
    """One TCP connection to the Hub's endpoint (HF_ENDPOINT), no retries, remembered for this process: without a
    network huggingface_hub retries each request five times (about 23 s) before its error; this says so at once."""
    import socket
    from urllib.parse import urlsplit

    url = urlsplit(_endpoint())
    host, port = url.hostname or "", url.port or (443 if url.scheme == "https" else 80)
    if host not in _REACHABLE:
        try:
            socket.create_connection((host, port), timeout=timeout_s).close()
            _REACHABLE[host] = True
        except OSError:
            _REACHABLE[host] = False
    return _REACHABLE[host]


def _entry(x: object) -> str:
    m = re.search(r"'([^']+)'", str(x))
    return m.group(1) if m else "such file"


def cache_dir() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


@dataclass
class HubMetadata:
    repo_id: str
    revision: str | None
    commit: str
    config: dict
    config_file: str
    weights_total_bytes: int | None  # from model.safetensors.index.json ("metadata.total_size"), if present
    seconds: float


def fetch_metadata(repo_id: str, revision: str | None = None) -> HubMetadata:
    """config.json and, when the repository has one, the safetensors index: a few KB, cached by huggingface_hub."""
    import json

    from huggingface_hub import errors as e
    from huggingface_hub import hf_hub_download

    t0 = time.monotonic()
    local = not _offline() and not hub_reachable()  # no network: the cache alone, at once (no retries)
    with hub_errors(repo_id, "read the configuration of"):
        cfg_path = hf_hub_download(repo_id, "config.json", revision=revision, local_files_only=local)
        total = None
        try:
            idx = hf_hub_download(repo_id, "model.safetensors.index.json", revision=revision, local_files_only=local)
            total = json.loads(Path(idx).read_text()).get("metadata", {}).get("total_size")
        except (e.EntryNotFoundError, e.LocalEntryNotFoundError):
            pass
    try:
        config = json.loads(Path(cfg_path).read_text())
    except (OSError, ValueError) as x:
        raise BadInput(f"config.json of '{repo_id}' cannot be read: {x}") from None
    commit = Path(cfg_path).parent.name
    return HubMetadata(repo_id, revision, commit, config, cfg_path, int(total) if total else None,
                       time.monotonic() - t0)


@dataclass
class DownloadPlan:
    repo_id: str
    revision: str | None
    commit: str
    files: list[tuple[str, int, bool]]  # (filename, bytes, will download)
    target: str  # where the files go (the cache, or --download-dir)
    patterns_skipped: list[str] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        return sum(s for _, s, _ in self.files)

    @property
    def to_download_bytes(self) -> int:
        return sum(s for _, s, d in self.files if d)


def plan_download(repo_id: str, revision: str | None = None, local_dir: str | None = None) -> DownloadPlan:
    """What a download would fetch (huggingface_hub's dry run): file sizes and what is cached already."""
    import fnmatch

    from huggingface_hub import HfApi, constants, snapshot_download
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    was_disabled = are_progress_bars_disabled()
    disable_progress_bars()  # the dry run's own "Fetching N files" bar
    try:
        with hub_errors(repo_id, "list the files of"):
            if not constants.HF_HUB_OFFLINE and not hub_reachable():
                raise _not_here(repo_id, "list the files of")
            if not constants.HF_HUB_OFFLINE:  # the dry run hides the Hub's reason (gated, missing) behind its own error
                HfApi().repo_info(repo_id, revision=revision)
            infos = snapshot_download(repo_id, revision=revision, local_dir=local_dir, dry_run=True)
    finally:
        if not was_disabled:
            enable_progress_bars()
    skip = SKIP_WITH_SAFETENSORS if any(i.filename.endswith(".safetensors") for i in infos) else []
    infos = [i for i in infos if not any(fnmatch.fnmatch(i.filename, p) for p in skip)]
    commit = infos[0].commit_hash if infos else ""
    return DownloadPlan(repo_id, revision, commit, [(i.filename, int(i.file_size or 0), bool(i.will_download)) for i in infos],
                        local_dir or cache_dir(), skip)


def check_disk(plan: DownloadPlan) -> None:
    """Refuse before downloading when the target's file system cannot hold what is still to come."""
    need = plan.to_download_bytes
    if not need:
        return
    target = Path(plan.target)
    probe = target
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if need + DISK_SLACK_BYTES > free:
        raise BadInput(f"'{plan.repo_id}' needs {need / 2**30:.1f} GiB, {free / 2**30:.1f} GiB free in {target}.",
                       hint="Free space there, or download elsewhere with --download-dir DIR (or HF_HOME).")


Progress = Callable[[str, int, int], None]  # (filename, bytes done in the whole download, total bytes)


def download(plan: DownloadPlan, on_progress: Progress | None = None) -> str:
    """Download the planned files (resuming partial ones); returns the local folder vLLM should load."""
    from huggingface_hub import hf_hub_download
    from tqdm.std import tqdm

    check_disk(plan)
    done = sum(s for _, s, d in plan.files if not d)
    report = on_progress or (lambda f, d, t: None)

    class Sink(tqdm):
        """huggingface_hub's byte progress for one file, forwarded to on_progress (nothing printed)."""

        def __init__(self, *a, **kw):
            kw["file"] = open(os.devnull, "w")  # noqa: SIM115 - closed with the bar
            kw.pop("disable", None)
            super().__init__(*a, **kw)
            self.start = done + int(kw.get("initial") or 0)  # bytes resumed from a partial file count as done
            self.seen = 0
            report(current, self.start, plan.total_bytes)

        def update(self, n: int = 1) -> None:
            self.seen += n
            report(current, self.start + self.seen, plan.total_bytes)
            return super().update(n)

        def close(self):
            super().close()
            self.fp.close()

    folder = plan.target
    report("", done, plan.total_bytes)
    for name, size, will in plan.files:
        current = name
        with hub_errors(plan.repo_id, "download"):
            path = hf_hub_download(plan.repo_id, name, revision=plan.commit or plan.revision,
                                   local_dir=None if plan.target == cache_dir() else plan.target, tqdm_class=Sink)
        if will:
            done += size
        report(name, done, plan.total_bytes)
        folder = str(Path(path).parents[name.count("/")])  # the folder that holds the repository's files
    return folder


def snapshot_path(repo_id: str, revision: str | None = None, local_dir: str | None = None) -> str:
    """The local folder of a repository already downloaded (no network)."""
    from huggingface_hub import snapshot_download

    with hub_errors(repo_id, "find"):
        return snapshot_download(repo_id, revision=revision, local_dir=local_dir, local_files_only=True)

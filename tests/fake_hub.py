"""A local HTTP server shaped like the Hugging Face Hub, for the real huggingface_hub client (HF_ENDPOINT).

Serves model folders as repositories: the model API (`/api/models/ORG/NAME[/revision/REV]`), the
tree listing, and `/ORG/NAME/resolve/REV/FILE` with HEAD, GET and byte ranges. A repository can be
gated (401 with the Hub's GatedRepo error code); unknown ones answer 404 RepoNotFound, unknown
files 404 EntryNotFound. `throttle_bps` slows file bodies down (to interrupt a download midway);
`cut_once` drops the connection midway through a file's body once (a network interruption);
every request is recorded (method, path, Range header) for the tests to check.
"""
from __future__ import annotations

import hashlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class FakeHub:
    def __init__(self, repos: dict[str, Path], gated: set[str] | None = None, throttle_bps: int | None = None):
        self.repos = {k: Path(v) for k, v in repos.items()}
        self.gated = gated or set()
        self.throttle_bps = throttle_bps
        self.cut_once: dict[str, int] = {}  # file name -> drop the connection after this many body bytes, once
        self.requests: list[tuple[str, str, str | None]] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):  # quiet
                pass

            def do_HEAD(self):
                hub._serve(self, body=False)

            def do_GET(self):
                hub._serve(self, body=True)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    # -- the Hub's answers ------------------------------------------------------------
    def _files(self, repo: str) -> list[Path]:
        root = self.repos[repo]
        return sorted(p for p in root.rglob("*") if p.is_file())

    def _entry(self, repo: str, p: Path) -> dict:
        rel = p.relative_to(self.repos[repo]).as_posix()
        data = p.read_bytes()
        e = {"type": "file", "oid": hashlib.sha1(data).hexdigest(), "size": len(data), "path": rel}
        if rel.endswith(".safetensors"):
            e["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
        return e

    def _error(self, h, status: int, code: str, message: str = "", body: bool = True):
        payload = json.dumps({"error": message or code}).encode()
        h.send_response(status)
        h.send_header("X-Error-Code", code)
        if message:
            h.send_header("X-Error-Message", message)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(payload)))
        h.end_headers()
        if body:
            h.wfile.write(payload)

    def _json(self, h, obj, body: bool = True):
        payload = json.dumps(obj).encode()
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(payload)))
        h.end_headers()
        if body:
            h.wfile.write(payload)

    def _serve(self, h, body: bool):
        url = urlparse(h.path)
        path = unquote(url.path)
        self.requests.append((h.command, path, h.headers.get("Range")))
        parts = path.strip("/").split("/")
        api = parts[:2] == ["api", "models"]
        repo = "/".join(parts[2:4] if api else parts[:2])
        if repo not in self.repos:
            return self._error(h, 404, "RepoNotFound", "Repository not found", body)
        if repo in self.gated:
            return self._error(h, 401, "GatedRepo", "Access to model is restricted", body)
        if api:
            rest = parts[4:]
            if not rest or rest[0] == "revision":
                files = self._files(repo)
                return self._json(h, {"id": repo, "modelId": repo, "sha": COMMIT, "private": False,
                                      "siblings": [{"rfilename": self._entry(repo, p)["path"]} for p in files]}, body)
            if rest[0] == "tree":
                return self._json(h, [self._entry(repo, p) for p in self._files(repo)], body)
            return self._error(h, 404, "EntryNotFound", "", body)
        if len(parts) < 5 or parts[2] != "resolve":
            return self._error(h, 404, "EntryNotFound", "", body)
        f = self.repos[repo].joinpath(*parts[4:])
        if not f.is_file():
            return self._error(h, 404, "EntryNotFound", "Entry not found", body)
        data = f.read_bytes()
        e = self._entry(repo, f)
        etag = e["lfs"]["oid"] if "lfs" in e else e["oid"]
        start, status = 0, 200
        rng = h.headers.get("Range")
        if rng and rng.startswith("bytes="):
            start = int(rng[6:].split("-")[0] or 0)
            status = 206
        chunk = data[start:]
        h.send_response(status)
        h.send_header("X-Repo-Commit", COMMIT)
        h.send_header("ETag", f'"{etag}"')
        h.send_header("Accept-Ranges", "bytes")
        h.send_header("Content-Length", str(len(chunk)))
        if status == 206:
            h.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        h.end_headers()
        if not body:
            return
        cut = self.cut_once.pop(f.name, None)
        if cut is not None:
            h.wfile.write(chunk[:cut])
            h.wfile.flush()
            h.close_connection = True
            h.connection.shutdown(2)
            return
        if not self.throttle_bps:
            h.wfile.write(chunk)
            return
        step = 64 << 10
        for i in range(0, len(chunk), step):
            h.wfile.write(chunk[i:i + step])
            h.wfile.flush()
            time.sleep(step / self.throttle_bps)


if __name__ == "__main__":  # python tests/fake_hub.py ORG/NAME=DIR ... (serves until killed; prints its URL)
    import sys

    repos = dict(a.split("=", 1) for a in sys.argv[1:] if "=" in a)
    with FakeHub(repos) as hub:
        print(hub.url, flush=True)
        threading.Event().wait()

"""HTTP probes and TCP ports (stdlib and psutil only: the probe runs every second): used by the supervisor, the
pre-flight's port check, the cluster and the gateway."""
from __future__ import annotations

import socket
import threading
import urllib.error
import urllib.request


def probe(url: str, timeout_s: float = 5.0) -> int | None:
    """HTTP status of GET url, or None when nothing answered in time."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except (urllib.error.URLError, OSError, ValueError):
        return None


def listener_pids(port: int) -> set[int] | None:
    """PIDs of the processes listening on this TCP port on this host; None when that cannot be told (no
    process's PID readable: another user's, or the platform refuses)."""
    import psutil

    try:
        conns = psutil.net_connections(kind="tcp")
    except (psutil.Error, OSError):
        return None
    mine = [c for c in conns if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port]
    pids = {c.pid for c in mine if c.pid is not None}
    return pids if pids or not mine else None


def port_free(host: str, port: int) -> bool:
    """True when host:port can be bound now (the server would get it)."""
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(fam, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
            return True
        except OSError:
            return False


_GIVEN: set[int] = set()  # ports this process has handed out: none twice, even before the first one is bound
_GIVEN_LOCK = threading.Lock()


def find_free_port(host: str = "127.0.0.1", avoid: frozenset[int] | set[int] = frozenset()) -> int:
    """A port free now that this process has not handed out before, nor one of `avoid` (ports already promised to
    something not listening yet): the system may offer a port again while the process it was chosen for has not
    bound it (a local Ray node's dashboard and its agent got the same one)."""
    with _GIVEN_LOCK:
        for _ in range(64):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind((host, 0))
                port = s.getsockname()[1]
            if port not in _GIVEN and port not in avoid:
                _GIVEN.add(port)
                return port
    return port

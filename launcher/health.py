"""HTTP probes and TCP ports (stdlib and psutil only: the probe runs every second): used by the supervisor, the
pre-flight's port check, the cluster and the gateway."""
from __future__ import annotations

import socket
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


def find_free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]

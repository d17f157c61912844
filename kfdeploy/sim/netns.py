"""A loopback-only network namespace for the control plane.

kube-apiserver dials admission and conversion webhooks and aggregated APIs at Service ClusterIPs
(10.x). Inside a namespace whose only interface is `lo` there is no route to such addresses, so
every such dial fails at once with ENETUNREACH and no packet can leave the machine. The namespace is
a named one (`ip netns add`, a bind mount under /run/netns) so it outlives the Python process that
made it; components join it with `nsenter --net=<path>`.

Creating one needs CAP_SYS_ADMIN (root here). Where that is impossible the caller falls back to the
host namespace and records it (see `LocalCluster.status()["network"]`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import logging
import os
import shutil
import socket
import subprocess
import threading
from pathlib import Path

from kfdeploy.errors import KfdeployError

log = logging.getLogger(__name__)

NETNS_DIR = Path("/run/netns")
_CLONE_NEWNET = 0x40000000


class NetnsError(KfdeployError):
    """The network namespace could not be created, entered or removed."""


def path_of(name: str) -> Path:
    return NETNS_DIR / name


def _ip() -> str:
    ip = shutil.which("ip")
    if not ip:
        raise NetnsError("`ip` (iproute2) is not installed", hint="apt-get install iproute2")
    return ip


def unavailable_reason() -> str | None:
    """Why a loopback-only namespace cannot be used here, or None if it can."""
    if os.geteuid() != 0:
        return "not running as root (creating a named network namespace needs CAP_SYS_ADMIN)"
    for tool in ("ip", "nsenter"):
        if not shutil.which(tool):
            return f"`{tool}` is not installed"
    return None


def exists(name: str) -> bool:
    return path_of(name).exists()


def ensure(name: str) -> Path:
    """Create the namespace `name` (if missing) with only `lo`, up. Returns its bind-mount path."""
    ip = _ip()
    if not exists(name):
        _run([ip, "netns", "add", name])
    _run([ip, "-n", name, "link", "set", "lo", "up"])
    return path_of(name)


def delete(name: str) -> None:
    if exists(name):
        _run([_ip(), "netns", "delete", name])


def prune(prefix: str) -> list[str]:
    """Delete namespaces named `prefix*` that no process uses; returns their names.

    A namespace outlives a test run that was killed before its cleanup. Deleting an empty one
    is always safe for a stopped cluster: `LocalCluster.start` creates it again.
    """
    if not NETNS_DIR.is_dir():
        return []
    removed = []
    for path in sorted(NETNS_DIR.glob(f"{prefix}*")):
        if _run([_ip(), "netns", "pids", path.name]).strip():
            continue
        delete(path.name)
        removed.append(path.name)
    return removed


def interfaces(name: str) -> list[str]:
    """Names of the interfaces inside the namespace (for status and tests)."""
    out = _run([_ip(), "-n", name, "-o", "link", "show"])
    return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if ":" in line]


def enter(path: Path) -> None:
    """Move the calling thread into the network namespace at `path`.

    Python 3.11 has no os.setns. setns(2) on a network namespace affects only the calling
    thread; threads it starts afterwards inherit it, so call this before starting any thread.
    Sockets opened before the call stay in the namespace they were opened in, which is how the
    forwarder listens on the host while it dials inside the namespace.
    """
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        if libc.setns(fd, _CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise NetnsError(f"setns({path}): {os.strerror(err)}")
    finally:
        os.close(fd)


def connect(path: Path | None, port: int, timeout: float = 2.0) -> socket.socket:
    """Open a TCP connection to 127.0.0.1:`port` inside the namespace at `path`.

    The socket is created by a short-lived thread that joined the namespace, so the calling
    thread (and process) stays where it is; a socket keeps the namespace it was created in.
    """
    if path is None:
        return socket.create_connection(("127.0.0.1", port), timeout=timeout)
    result: list[socket.socket | BaseException] = []

    def work() -> None:
        try:
            enter(path)
            result.append(socket.create_connection(("127.0.0.1", port), timeout=timeout))
        except BaseException as exc:  # handed back to the caller below
            result.append(exc)

    thread = threading.Thread(target=work, name="netns-connect", daemon=True)
    thread.start()
    thread.join(timeout + 5)
    if not result:
        raise TimeoutError(f"connect to 127.0.0.1:{port} in {path} did not finish")
    outcome = result[0]
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome


def nsenter_prefix(path: Path | None) -> list[str]:
    """Command prefix that runs a program inside the namespace (empty for the host namespace)."""
    if path is None:
        return []
    nsenter = shutil.which("nsenter")
    if not nsenter:
        raise NetnsError(
            "`nsenter` (util-linux) is not installed", hint="apt-get install util-linux"
        )
    # nsenter without --fork execs the program after joining, so the pid we record is its pid.
    return [nsenter, f"--net={path}", "--"]


def probe_unreachable(host: str = "10.96.0.1", port: int = 443, timeout: float = 2.0) -> int | None:
    """Try one TCP connect from the current namespace; return the errno it failed with.

    Used inside the namespace to prove that a ClusterIP is unreachable (ENETUNREACH, at once);
    None means the connect succeeded, which must never happen.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect((host, port))
        except TimeoutError:
            return errno.ETIMEDOUT
        except OSError as exc:
            return exc.errno
    return None


def _run(argv: list[str]) -> str:
    log.debug("running %s", " ".join(argv))
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    if proc.returncode != 0:
        raise NetnsError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout

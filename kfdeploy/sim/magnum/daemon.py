"""The emulator as a background daemon: `ensure_emulator()` finds it running or starts it.

State directory (default `$KFDEPLOY_CACHE/magnum-emulator`):

    emulator.json       pid, port, url of the running daemon (emulator.pid: the pid alone)
    clouds.yaml         clouds `kfdeploy-local` (password) and `kfdeploy-local-appcred`
    config.yaml         optional emulator config (delays, flavors, max_version, ...)
    magnum-state.json   templates and clusters
    clusters/<uuid>/    one LocalCluster per emulated cluster
    emulator.log        the daemon's log

The daemon keeps its port across restarts when it can, so clouds.yaml stays valid.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

import requests

from kfdeploy.errors import CloudError, WaitTimeout
from kfdeploy.sim import binaries

STATE_ENV = "KFDEPLOY_MAGNUM_EMULATOR_DIR"


def default_state_dir() -> Path:
    if env := os.environ.get(STATE_ENV):
        return Path(env)
    return binaries.cache_root() / "magnum-emulator"


def _info(state_dir: Path) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads((state_dir / "emulator.json").read_text())
    except (OSError, ValueError):
        return None
    return data


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _healthy(url: str) -> bool:
    try:
        return requests.get(f"{url}/_emulator/health", timeout=2).ok
    except requests.RequestException:
        return False


def running_url(state_dir: Path | None = None) -> str | None:
    """URL of the daemon serving `state_dir`, or None."""
    info = _info(state_dir or default_state_dir())
    if info and _alive(int(info["pid"])) and _healthy(str(info["url"])):
        return str(info["url"])
    return None


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def ensure_emulator(state_dir: Path | None = None, timeout: float = 30) -> Path:
    """Return the clouds.yaml of a running emulator daemon, starting one if needed."""
    state_dir = (state_dir or default_state_dir()).resolve()
    clouds = state_dir / "clouds.yaml"
    if running_url(state_dir) and clouds.exists():
        return clouds
    state_dir.mkdir(parents=True, exist_ok=True)
    # Two kfdeploy commands starting at once must not start two daemons on one state dir.
    with (state_dir / "start.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if running_url(state_dir) and clouds.exists():
            return clouds
        return _start(state_dir, clouds, timeout)


def _start(state_dir: Path, clouds: Path, timeout: float) -> Path:
    previous = _info(state_dir)
    port = int(previous["port"]) if previous and _port_free(int(previous["port"])) else 0
    log_file = state_dir / "emulator.log"
    (state_dir / "emulator.json").unlink(missing_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "kfdeploy.sim.magnum",
        "serve",
        "--state-dir",
        str(state_dir),
        "--port",
        str(port),
    ]
    package_root = str(Path(__file__).resolve().parents[3])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    _spawn_detached(cmd, env, log_file)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if running_url(state_dir) and clouds.exists():
            return clouds
        if "Traceback" in log_file.read_text(errors="replace")[-4000:]:
            tail = log_file.read_text(errors="replace")[-2000:]
            raise CloudError(f"the Magnum emulator failed to start:\n{tail}")
        time.sleep(0.2)
    raise WaitTimeout(f"the Magnum emulator did not start within {timeout:.0f}s; see {log_file}")


def _spawn_detached(cmd: list[str], env: dict[str, str], log_file: Path) -> None:
    """Start `cmd` as a daemon (double fork, own session) that outlives this process and is no
    child of it, so nobody has to reap it and no Popen object outlives its process."""
    log_file.write_bytes(b"")  # the log of this run only: start failures are read from it
    pid = os.fork()
    if pid == 0:  # child: new session, fork again, exit; the grandchild becomes the daemon
        try:
            os.setsid()
            if os.fork() != 0:
                os._exit(0)
            fd = os.open(log_file, os.O_WRONLY | os.O_APPEND)
            null = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null, 0)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            os.execve(cmd[0], cmd, env)
        finally:
            os._exit(127)
    os.waitpid(pid, 0)


def stop_emulator(
    state_dir: Path | None = None, destroy: bool = False, timeout: float = 60
) -> bool:
    """Stop the daemon (SIGTERM; SIGINT with destroy=True also tears down every cluster)."""
    state_dir = (state_dir or default_state_dir()).resolve()
    info = _info(state_dir)
    if not info or not _alive(int(info["pid"])):
        return False
    pid = int(info["pid"])
    if destroy:
        (state_dir / "destroy-on-exit").touch()
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.2)
    return True


def serve(state_dir: Path, port: int, config_file: Path | None) -> None:
    """Foreground daemon body: serve until SIGTERM."""
    import logging
    import threading

    from kfdeploy.sim.magnum.config import EmulatorConfig
    from kfdeploy.sim.magnum.server import Emulator

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    config_file = config_file or (state_dir / "config.yaml")
    if config_file.exists():
        config = EmulatorConfig.from_file(config_file, state_dir)
        config.port = port or config.port
    else:
        config = EmulatorConfig(state_dir=state_dir, port=port)
    em = Emulator(config).start()
    em.write_clouds_yaml(state_dir / "clouds.yaml")
    info = {"pid": os.getpid(), "port": em.port, "url": em.url}
    (state_dir / "emulator.pid").write_text(f"{os.getpid()}\n")
    (state_dir / "emulator.json").write_text(json.dumps(info))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    logging.getLogger(__name__).info("Magnum emulator serving on %s", em.url)
    stop.wait()
    destroy = (state_dir / "destroy-on-exit").exists()
    em.shutdown(destroy_clusters=destroy)
    (state_dir / "destroy-on-exit").unlink(missing_ok=True)
    # emulator.json stays: its dead pid says "not running", its port is reused on restart

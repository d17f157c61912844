"""Daemons that outlive the Python process that starts them, tracked by pid files.

Each component runs in its own session (setsid) with stdout/stderr in `logs/<name>.log`, so
`kfdeploy sim start` can return and a later `kfdeploy sim stop` finds them through
`run/<name>.pid`. A pid file also records the process start time: pids are reused, and stopping
must never signal an unrelated process that happens to have the old pid.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shlex
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


def _start_ticks(pid: int) -> int | None:
    """Kernel start time of `pid` (field 22 of /proc/PID/stat), or None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses; fields follow the last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[19])


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rindex(")") + 2 :].split()[0] in ("Z", "X")


@dataclass(frozen=True)
class Daemon:
    """One named component of a cluster: where its pid file and log live."""

    name: str
    run_dir: Path
    log_dir: Path

    @property
    def pid_file(self) -> Path:
        return self.run_dir / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.log_dir / f"{self.name}.log"

    def pid(self) -> int | None:
        """The pid if the recorded process is still the one we started, else None."""
        try:
            record = json.loads(self.pid_file.read_text())
        except (OSError, ValueError):
            return None
        pid = int(record["pid"])
        if _start_ticks(pid) != record.get("start") or _is_zombie(pid):
            return None
        return pid

    def running(self) -> bool:
        return self.pid() is not None

    def start(
        self, argv: Sequence[str], env: Mapping[str, str] | None = None, cwd: Path | None = None
    ) -> int:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as logf:
            logf.write(f"\n=== {time.strftime('%Y-%m-%dT%H:%M:%S')} {shlex.join(argv)}\n".encode())
            logf.flush()
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else None,
                cwd=cwd,
                start_new_session=True,  # survive the caller and its terminal's signals
                close_fds=True,
            )
        ticks = _start_ticks(proc.pid)
        self.pid_file.write_text(json.dumps({"pid": proc.pid, "start": ticks, "argv": list(argv)}))
        # We never wait() on it from here: the daemon must outlive us. Python's Popen.__del__
        # would otherwise warn; detaching the handle avoids a ResourceWarning in tests.
        proc.returncode = 0
        log.debug("started %s pid %d: %s", self.name, proc.pid, shlex.join(argv))
        return proc.pid

    def stop(self, timeout: float = 15) -> None:
        """SIGTERM, then SIGKILL after `timeout`; removes the pid file."""
        pid = self.pid()
        if pid is not None:
            _signal(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self.pid() is not None:
                _reap(pid)
                time.sleep(0.1)
            if self.pid() is not None:
                log.warning(
                    "%s (pid %d) ignored SIGTERM for %.0fs; killing it", self.name, pid, timeout
                )
                _signal(pid, signal.SIGKILL)
                deadline = time.monotonic() + 5
                while time.monotonic() < deadline and self.pid() is not None:
                    _reap(pid)
                    time.sleep(0.05)
        self.pid_file.unlink(missing_ok=True)

    def rss_bytes(self) -> int:
        pid = self.pid()
        if pid is None:
            return 0
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            pass
        return 0

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _reap(pid: int) -> None:
    """Collect the exit status if the daemon is our own child (started in this process)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)

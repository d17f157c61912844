"""Daemons tracked by pid files survive their starter and are stopped safely."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from kfdeploy.sim.process import Daemon


def test_start_stop_and_stale_pid_file(tmp_path: Path) -> None:
    d = Daemon("sleeper", tmp_path / "run", tmp_path / "logs")
    pid = d.start([sys.executable, "-c", "import time; print('up', flush=True); time.sleep(60)"])
    assert d.pid() == pid and d.running()
    d.stop(timeout=5)
    assert not d.running()
    assert not d.pid_file.exists()


def test_reused_pid_is_not_ours(tmp_path: Path) -> None:
    d = Daemon("ghost", tmp_path / "run", tmp_path / "logs")
    d.run_dir.mkdir(parents=True)
    # Our own pid with a wrong start time: a pid reused by an unrelated process.
    d.pid_file.write_text(json.dumps({"pid": os.getpid(), "start": 1}))
    assert d.pid() is None
    d.stop(timeout=1)  # must not signal us

"""The emulator daemon `kfdeploy cluster ... local` relies on: started once, found again, and
serving the clouds.yaml it wrote; `python -m kfdeploy.sim.magnum` manages it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import requests
import yaml

from kfdeploy.sim.magnum.config import LOCAL_CLOUD
from kfdeploy.sim.magnum.daemon import ensure_emulator, running_url, stop_emulator

pytestmark = pytest.mark.integration


def test_ensure_emulator_starts_once_and_is_found_again(tmp_path: Path) -> None:
    state = tmp_path / "emu"
    state.mkdir()
    (state / "config.yaml").write_text("backend: fake\ndelays: {cluster_create: 0.5}\n")
    try:
        clouds = ensure_emulator(state)
        info = json.loads((state / "emulator.json").read_text())
        assert ensure_emulator(state) == clouds
        assert json.loads((state / "emulator.json").read_text())["pid"] == info["pid"]
        cloud = yaml.safe_load(clouds.read_text())["clouds"][LOCAL_CLOUD]
        assert cloud["auth"]["auth_url"].startswith("http://127.0.0.1:")
        assert (clouds.stat().st_mode & 0o777) == 0o600
        assert requests.get(cloud["auth"]["auth_url"], timeout=5).json()["version"]["id"] == (
            "v3.14")
        status = subprocess.run(
            [sys.executable, "-m", "kfdeploy.sim.magnum", "status", "--state-dir", str(state)],
            capture_output=True, text=True, timeout=60, check=True)
        assert json.loads(status.stdout)["running"] is True
    finally:
        assert stop_emulator(state, destroy=True) is True
    assert running_url(state) is None
    assert stop_emulator(state) is False

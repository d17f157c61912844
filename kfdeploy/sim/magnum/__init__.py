"""Keystone v3 + OpenStack Magnum v1 emulator whose clusters are real local control planes.

Entry points:
- `ensure_emulator(state_dir=None) -> Path`: the clouds.yaml of the emulator daemon (started if
  needed); clouds `kfdeploy-local` (password) and `kfdeploy-local-appcred`.
- `stop_emulator(state_dir=None, destroy=False)`.
- `Emulator(EmulatorConfig(...)).start()` / `running(config)`: in-process, for tests.
- `python -m kfdeploy.sim.magnum serve|start|stop|status`.
"""

from __future__ import annotations

from kfdeploy.sim.magnum.config import LOCAL_CLOUD, Delays, EmulatorConfig, Flavor
from kfdeploy.sim.magnum.daemon import default_state_dir, ensure_emulator, stop_emulator

__all__ = [
    "LOCAL_CLOUD",
    "Delays",
    "EmulatorConfig",
    "Flavor",
    "default_state_dir",
    "ensure_emulator",
    "stop_emulator",
]

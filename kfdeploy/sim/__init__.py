"""A real local Kubernetes control plane with simulated nodes (see docs/sim.md).

Public API: `LocalCluster`, `SimNode`, `default_state_dir`; building binaries is in
`kfdeploy.sim.binaries`. kfdeploy.sim.magnum (the Magnum emulator) builds on these.
"""

from kfdeploy.sim.cluster import LocalCluster, SimNode, default_state_dir

__all__ = ["LocalCluster", "SimNode", "default_state_dir"]

"""A real local Kubernetes control plane with simulated nodes (see docs/sim.md).

Public API: `LocalCluster`, `SimNode`, `default_state_dir`; building binaries is in
`kfdeploy.sim.binaries`. kfdeploy.sim.magnum (the Magnum emulator) builds on these.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kfdeploy.sim.cluster import LocalCluster, SimNode, default_state_dir

__all__ = ["LocalCluster", "SimNode", "default_state_dir"]


def __getattr__(name: str) -> Any:
    # Lazy: importing any kfdeploy.sim module (the CLI does, for every command) must not pull in
    # the cluster's PKI (cryptography) and HTTP stack; that cost ~0.5 s on every kfdeploy run.
    if name in __all__:
        from kfdeploy.sim import cluster

        return getattr(cluster, name)
    raise AttributeError(name)

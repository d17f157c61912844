"""The context guard: is the cluster we reached the one this environment owns?

Pure decision over what the cluster adapter observed, so it is testable without a cluster.
Applying cern-prod's platform to a laptop cluster, or local's to production, is the mistake a
kubeconfig with several contexts makes easy; the guard refuses it before any write.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from kfdeploy.config.model import Environment
from kfdeploy.errors import GuardError

OWNER_NAMESPACE = "kube-system"
OWNER_CONFIGMAP = "kfdeploy-owner"
# The label kfdeploy.sim puts on every simulated node (kfdeploy.sim.nodes.SIM_LABEL; a test
# keeps the two equal without making this pure module import the simulator).
SIMULATED_LABEL = "sim.kfdeploy.dev/simulated"


@dataclass(frozen=True)
class ClusterIdentity:
    api_server: str
    owner: str | None  # environment recorded by kfdeploy on the first apply, if any
    simulated: bool  # the cluster is kfdeploy's simulated control plane
    magnum_cluster: str | None = None  # the Magnum cluster uuid the owner record names


def check(env: Environment, seen: ClusterIdentity, *, expected_api: str | None = None) -> None:
    """Raise GuardError unless the cluster may be changed for env."""
    owner = env.owner
    if seen.owner is not None and seen.owner != owner:
        raise GuardError(
            f"refusing to change {seen.api_server}: it belongs to environment {seen.owner!r}, "
            f"not {owner!r} (ConfigMap {OWNER_NAMESPACE}/{OWNER_CONFIGMAP})",
            hint="check --kubeconfig / the current context; an ownership change is a manual decision",
        )
    if seen.simulated and not env.simulated:
        raise GuardError(
            f"refusing to deploy non-simulated environment {env.name!r} to kfdeploy's simulated "
            f"cluster at {seen.api_server}",
            hint="point --kubeconfig at the environment's real cluster",
        )
    pattern = env.cluster.identity.api_server
    if pattern and not re.search(pattern, seen.api_server):
        raise GuardError(
            f"refusing to change {seen.api_server}: environment {env.name!r} expects an API server "
            f"matching {pattern!r} (cluster.identity.api_server)"
        )
    if expected_api and _norm(expected_api) != _norm(seen.api_server):
        raise GuardError(
            f"refusing to change {seen.api_server}: the provider says {env.name!r}'s cluster is at {expected_api}"
        )


def _norm(url: str) -> str:
    url = url.rstrip("/")
    return url[:-4] if url.endswith(":443") else url

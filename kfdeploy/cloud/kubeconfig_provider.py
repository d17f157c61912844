"""The `kubeconfig` provider: a cluster someone else provisions (a public cloud, a lab cluster).

kfdeploy never changes such a cluster's shape, so its plan is always a no-op; status comes from
the Kubernetes API; `kubeconfig` copies the configured file (mode 0600) or points at it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from kfdeploy.cloud.plan import ClusterPlan
from kfdeploy.cloud.provider import (
    ApplyResult,
    ClusterStatus,
    NodeGroupStatus,
    Progress,
    no_progress,
)
from kfdeploy.config.model import Environment
from kfdeploy.errors import ConfigError, GuardError, KfdeployError


class KubeconfigProvider:
    name = "kubeconfig"

    def __init__(self, env: Environment) -> None:
        if not env.cluster.kubeconfig:
            raise ConfigError(f"environment {env.name}: provider kubeconfig needs kubeconfig:")
        self.env = env
        self.source = Path(os.path.expandvars(env.cluster.kubeconfig)).expanduser()

    def plan(self, env: Environment, *, prune: bool = False) -> ClusterPlan:
        notes: tuple[str, ...] = ()
        if not self.source.is_file():
            notes = (f"kubeconfig {self.source} does not exist",)
        return ClusterPlan(
            env.name, self.name, env.cluster_name, notes=notes, exists=self.source.is_file()
        )

    def apply(
        self, plan: ClusterPlan, progress: Progress = no_progress, *, keep_failed: bool = False
    ) -> ApplyResult:
        progress(f"cluster {plan.cluster_name}: provisioned outside kfdeploy; nothing to do")
        return ApplyResult()

    def status(self, env: Environment) -> ClusterStatus:
        if not self.source.is_file():
            return ClusterStatus(
                env.cluster_name,
                self.name,
                exists=False,
                status_reason=f"kubeconfig {self.source} not found",
            )
        from kubernetes import client, config

        try:
            api = config.new_client_from_config(  # type: ignore[no-untyped-call]
                config_file=str(self.source), context=env.cluster.context
            )
            version = client.VersionApi(api).get_code().git_version
            nodes = client.CoreV1Api(api).list_node(_request_timeout=15).items
        except Exception as exc:  # any failure to reach the API is the status, not a crash
            return ClusterStatus(
                env.cluster_name,
                self.name,
                exists=True,
                status="UNREACHABLE",
                status_reason=str(exc).splitlines()[0][:300],
            )
        groups: dict[str, int] = {}
        for node in nodes:
            labels = (node.metadata.labels if node.metadata else None) or {}
            group = labels.get("magnum.openstack.org/nodegroup") or labels.get(
                "node.kubernetes.io/instance-type", "nodes"
            )
            groups[group] = groups.get(group, 0) + 1
        api_address = api.configuration.host
        return ClusterStatus(
            env.cluster_name,
            self.name,
            exists=True,
            status="REACHABLE",
            api_address=api_address,
            coe_version=version,
            health_status="HEALTHY",
            nodegroups=tuple(
                NodeGroupStatus(name, "worker", None, n) for name, n in sorted(groups.items())
            ),
        )

    def kubeconfig(self, env: Environment, path: Path) -> Path:
        if not self.source.is_file():
            raise KfdeployError(f"kubeconfig {self.source} does not exist")
        path = path.expanduser()
        if path.resolve() == self.source.resolve():
            return path
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out, self.source.open("rb") as src:
            shutil.copyfileobj(src, out)
        path.chmod(0o600)
        return path

    def resize(
        self, env: Environment, nodegroup: str, count: int, progress: Progress = no_progress
    ) -> None:
        raise GuardError(
            f"cluster {env.cluster_name} is not provisioned by kfdeploy "
            "(provider kubeconfig); resize it where it is managed"
        )

    def delete(self, env: Environment, progress: Progress = no_progress) -> bool:
        raise GuardError(
            f"cluster {env.cluster_name} is not provisioned by kfdeploy "
            "(provider kubeconfig); kfdeploy will not delete it"
        )

"""The provider interface: what kfdeploy asks of whoever owns the cluster.

    provider = get_provider(env)
    plan = provider.plan(env)            # pure data; print it, or plan.to_dict() for JSON
    provider.apply(plan, progress)       # makes the cloud match; no-op plans make no call
    provider.status(env)                 # ClusterStatus
    provider.kubeconfig(env, path)       # writes an admin kubeconfig (mode 0600)
    provider.delete(env, progress)

Providers now: `magnum` (OpenStack Magnum via openstacksdk) and `kubeconfig` (an existing cluster
someone else provisions). A Cluster API provider would implement the same protocol.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from kfdeploy.cloud.plan import Change, ClusterPlan
from kfdeploy.config.model import Environment
from kfdeploy.errors import ConfigError

Progress = Callable[[str], None]


def no_progress(_: str) -> None:
    """Progress sink that drops messages."""


@dataclass(frozen=True)
class NodeGroupStatus:
    name: str
    role: str
    flavor: str | None
    node_count: int
    min_node_count: int | None = None
    max_node_count: int | None = None
    status: str | None = None
    status_reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class ClusterStatus:
    name: str
    provider: str
    exists: bool
    status: str | None = None
    status_reason: str | None = None
    health_status: str | None = None
    api_address: str | None = None
    coe_version: str | None = None
    template: str | None = None
    uuid: str | None = None
    faults: dict[str, str] = field(default_factory=dict)
    nodegroups: tuple[NodeGroupStatus, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data["nodegroups"] = [g.to_dict() for g in self.nodegroups]
        return data

    def lines(self) -> list[str]:
        if not self.exists:
            return [f"cluster {self.name} ({self.provider}): does not exist"]
        out = [
            f"cluster {self.name} ({self.provider}): {self.status or 'unknown'}"
            + (f" - {self.status_reason}" if self.status_reason else ""),
        ]
        if self.api_address:
            out.append(f"  api: {self.api_address}")
        if self.template:
            out.append(f"  template: {self.template}  kubernetes: {self.coe_version or '?'}")
        if self.health_status:
            out.append(f"  health: {self.health_status}")
        for g in self.nodegroups:
            bounds = ""
            if g.min_node_count is not None:
                high = "" if g.max_node_count is None else g.max_node_count
                bounds = f" (min..max {g.min_node_count}..{high})"
            reason = (
                f" - {g.status_reason}" if g.status_reason and "FAILED" in (g.status or "") else ""
            )
            out.append(
                f"  nodegroup {g.name} [{g.role}]: {g.node_count} x {g.flavor}{bounds} "
                f"{g.status or ''}{reason}"
            )
        for ng, fault in self.faults.items():
            out.append(f"  fault {ng}: {fault}")
        return out


@dataclass
class ApplyResult:
    applied: list[Change] = field(default_factory=list)
    rolled_back: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.applied)


class Provider(Protocol):
    name: str

    def plan(self, env: Environment, *, prune: bool = False) -> ClusterPlan: ...

    def apply(
        self, plan: ClusterPlan, progress: Progress = no_progress, *, keep_failed: bool = False
    ) -> ApplyResult: ...

    def status(self, env: Environment) -> ClusterStatus: ...

    def kubeconfig(self, env: Environment, path: Path) -> Path: ...

    def resize(
        self, env: Environment, nodegroup: str, count: int, progress: Progress = no_progress
    ) -> None: ...

    def delete(self, env: Environment, progress: Progress = no_progress) -> bool: ...


def get_provider(env: Environment, *, clouds_file: Path | None = None) -> Provider:
    """The provider for `env`. For the local emulator cloud (`kfdeploy-local`) with no explicit
    clouds file, the emulator daemon is started (or found) and its clouds.yaml used."""
    cluster = env.cluster
    if cluster.provider == "kubeconfig":
        from kfdeploy.cloud.kubeconfig_provider import KubeconfigProvider

        return KubeconfigProvider(env)
    if cluster.provider == "magnum":
        from kfdeploy.cloud.magnum.provider import MagnumProvider

        cloud = cluster.cloud or os.environ.get("OS_CLOUD")
        if clouds_file is None and cloud == _local_cloud() and not _user_defines(cloud):
            from kfdeploy.sim.magnum import ensure_emulator

            clouds_file = ensure_emulator()
        return MagnumProvider(env, cloud=cloud, clouds_file=clouds_file)
    raise ConfigError(f"unknown cluster provider {cluster.provider!r}")


def _user_defines(cloud: str) -> bool:
    """Whether a clouds.yaml openstacksdk would read defines `cloud` (then it wins over the
    emulator, e.g. an emulator run by a test or on another machine)."""
    import yaml

    candidates = [
        os.environ.get("OS_CLIENT_CONFIG_FILE"),
        "clouds.yaml",
        "~/.config/openstack/clouds.yaml",
        "/etc/openstack/clouds.yaml",
    ]
    for candidate in filter(None, candidates):
        path = Path(candidate).expanduser()
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError):
            continue
        if isinstance(data, dict) and cloud in (data.get("clouds") or {}):
            return True
    return False


def _local_cloud() -> str:
    from kfdeploy.sim.magnum.config import LOCAL_CLOUD

    return LOCAL_CLOUD

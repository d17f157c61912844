"""Pure cluster planning: the environment's cluster section + what the cloud has -> changes.

No I/O here: `plan_cluster(desired, name, observed)` is a function of plain data, so every case
(create, add a GPU nodegroup, resize, bounds, upgrade, prune, no-op) is a table-driven unit test.
Apply executes the changes in the order given; the order is chosen so every step is valid on
Magnum (a template before the cluster that uses it, bounds widened before a resize that needs
them, nodegroups added after the cluster has an API address).

Node labels and taints reach the nodes through the Magnum nodegroup label `kubelet_options`
(`--node-labels=...` and `--register-with-taints=...`), because Magnum below 1.14 has no
`node_labels`/`node_taints` fields and production clouds run below 1.14.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from kfdeploy.config.model import Cluster, NodeGroup, Taint

Action = Literal[
    "create-template",
    "create-cluster",
    "upgrade-cluster",
    "upgrade-nodegroup",
    "create-nodegroup",
    "resize-nodegroup",
    "update-nodegroup-bounds",
    "delete-nodegroup",
]
# Every planned action changes the cloud (a no-op is the absence of actions), so the list is the
# Literal's own members rather than a second copy to keep in step.
MUTATING_ACTIONS: tuple[Action, ...] = get_args(Action)
FAILED_STATES = frozenset(
    {"CREATE_FAILED", "UPDATE_FAILED", "DELETE_FAILED", "ROLLBACK_FAILED", "RESUME_FAILED"}
)
DEFAULT_WORKER = "default-worker"
DEFAULT_MASTER = "default-master"
KUBELET_OPTIONS = "kubelet_options"


@dataclass(frozen=True)
class Change:
    action: Action
    target: str  # "template kfdeploy-local-k8s", "cluster kfdeploy-local", "nodegroup gpu-a100"
    detail: str  # human summary: "2 x g1.a100.x2", "3 -> 5"
    params: Mapping[str, Any] = field(default_factory=dict)  # what apply needs, JSON-able

    def describe(self) -> str:
        return f"{self.action} {self.target}: {self.detail}"


@dataclass(frozen=True)
class ObservedTemplate:
    uuid: str
    name: str
    image_id: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ObservedNodeGroup:
    name: str
    role: str
    flavor: str
    node_count: int
    min_node_count: int = 0
    max_node_count: int | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    status: str = "CREATE_COMPLETE"
    status_reason: str | None = None
    is_default: bool = False
    version: str | None = None  # Kubernetes version of the nodes


@dataclass(frozen=True)
class ObservedCluster:
    uuid: str
    name: str
    status: str
    template_id: str
    template_name: str | None
    api_address: str | None = None
    status_reason: str | None = None
    master_count: int = 1
    nodegroups: tuple[ObservedNodeGroup, ...] = ()
    coe_version: str | None = None

    def nodegroup(self, name: str) -> ObservedNodeGroup | None:
        return next((g for g in self.nodegroups if g.name == name), None)


@dataclass(frozen=True)
class Observed:
    """What the cloud has that matters for one environment."""

    templates: tuple[ObservedTemplate, ...] = ()  # those whose name the environment mentions
    cluster: ObservedCluster | None = None

    def template(self, name: str) -> ObservedTemplate | None:
        return next((t for t in self.templates if t.name == name), None)


@dataclass(frozen=True)
class ClusterPlan:
    environment: str
    provider: str
    cluster_name: str
    changes: tuple[Change, ...] = ()
    notes: tuple[str, ...] = ()  # differences kfdeploy will not change (and why)
    blockers: tuple[str, ...] = ()  # reasons apply must refuse
    exists: bool = False

    @property
    def is_noop(self) -> bool:
        return not self.changes and not self.blockers

    def to_dict(self) -> dict[str, Any]:
        return {
            "environment": self.environment,
            "provider": self.provider,
            "cluster": self.cluster_name,
            "exists": self.exists,
            "noop": self.is_noop,
            "changes": [
                {
                    "action": c.action,
                    "target": c.target,
                    "detail": c.detail,
                    "params": dict(c.params),
                }
                for c in self.changes
            ],
            "notes": list(self.notes),
            "blockers": list(self.blockers),
        }

    def lines(self) -> list[str]:
        """Human-readable plan, one line per change."""
        head = f"cluster {self.cluster_name} ({self.provider}, environment {self.environment})"
        out = [head]
        if self.is_noop:
            out.append("  no changes: the cloud matches the environment")
        out += [f"  + {c.describe()}" for c in self.changes]
        out += [f"  ! blocked: {b}" for b in self.blockers]
        out += [f"  ~ note: {n}" for n in self.notes]
        return out


# ---- label/taint encoding -------------------------------------------------------------------


def _taint_text(t: Taint) -> str:
    return f"{t.key}={t.value}:{t.effect}" if t.value else f"{t.key}:{t.effect}"


def kubelet_options(labels: Mapping[str, str], taints: Sequence[Taint]) -> str | None:
    """The `kubelet_options` value that registers these node labels and taints (sorted, so the
    same environment always yields the same string and never looks like drift)."""
    parts = []
    if labels:
        parts.append("--node-labels=" + ",".join(f"{k}={v}" for k, v in sorted(labels.items())))
    if taints:
        parts.append("--register-with-taints=" + ",".join(sorted(_taint_text(t) for t in taints)))
    return " ".join(parts) or None


def nodegroup_labels(group: NodeGroup) -> dict[str, str]:
    """Magnum labels kfdeploy sets on a nodegroup (merged onto the cluster's labels)."""
    options = kubelet_options(group.labels, group.taints)
    return {KUBELET_OPTIONS: options} if options else {}


def nodegroup_body(group: NodeGroup) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": group.name,
        "flavor_id": group.flavor,
        "node_count": group.count,
        "min_node_count": group.min,
        "role": group.role,
        "merge_labels": True,
        "labels": nodegroup_labels(group),
    }
    if group.max is not None:
        body["max_node_count"] = group.max
    return body


def cluster_labels(desired: Cluster) -> dict[str, str]:
    """Cluster-level labels: the default-worker's autoscaler bounds and its node labels/taints
    (Magnum creates default-worker from the cluster's labels; there is no other way)."""
    assert desired.workers is not None
    labels = {"min_node_count": str(desired.workers.min)}
    if desired.workers.max is not None:
        labels["max_node_count"] = str(desired.workers.max)
    labels.update(nodegroup_labels(desired.workers))
    return labels


def template_body(desired: Cluster) -> dict[str, Any]:
    t = desired.template
    assert t is not None and desired.masters is not None and desired.workers is not None
    body: dict[str, Any] = {
        "name": t.name,
        "coe": t.coe,
        "image_id": t.image,
        "network_driver": t.network_driver,
        "master_lb_enabled": t.master_lb_enabled,
        "floating_ip_enabled": t.floating_ip_enabled,
        "labels": dict(t.labels),
        "flavor_id": desired.workers.flavor,
        "master_flavor_id": desired.masters.flavor,
    }
    if t.external_network:
        body["external_network_id"] = t.external_network
    if t.keypair:
        body["keypair_id"] = t.keypair
    return body


def cluster_body(desired: Cluster, name: str) -> dict[str, Any]:
    assert desired.masters is not None and desired.workers is not None
    return {
        "name": name,
        "master_count": desired.masters.count,
        "node_count": desired.workers.count,
        "master_flavor_id": desired.masters.flavor,
        "flavor_id": desired.workers.flavor,
        # Magnum's create_timeout is in minutes; the environment's is in seconds.
        "create_timeout": max(1, -(-desired.create_timeout // 60)),
        "labels": cluster_labels(desired),
        "merge_labels": True,
    }


# ---- planning ------------------------------------------------------------------------------


def _bounds_text(low: int, high: int | None) -> str:
    return f"{low}..{'' if high is None else high}"


def _group_changes(want: NodeGroup, have: ObservedNodeGroup, notes: list[str]) -> list[Change]:
    """Resize and bounds changes for one existing nodegroup, in an order Magnum accepts.

    Magnum validates min <= node_count <= max on every nodegroup PATCH and every resize, so:
    bounds first if the current count fits the new bounds; else resize first if the new count
    fits the old bounds; else widen the bounds to cover both, resize, then narrow.
    """
    target = f"nodegroup {want.name}"
    if have.flavor != want.flavor:
        notes.append(
            f"{target}: flavor is {have.flavor} in the cloud, {want.flavor} in the environment; "
            "Magnum cannot change a nodegroup's flavor (delete and recreate it with a new name)"
        )
    wanted_opts = nodegroup_labels(want).get(KUBELET_OPTIONS)
    if have.labels.get(KUBELET_OPTIONS) != wanted_opts and not (
        want.name == DEFAULT_WORKER and wanted_opts is None
    ):
        notes.append(
            f"{target}: node labels/taints differ from the environment; Magnum cannot relabel "
            "a nodegroup (recreate it to apply them)"
        )
    changes: list[Change] = []
    bounds_differ = (have.min_node_count, have.max_node_count) != (want.min, want.max)
    count_differs = have.node_count != want.count

    def fits(count: int, low: int, high: int | None) -> bool:
        return low <= count and (high is None or count <= high)

    def bounds(low: int, high: int | None) -> Change:
        return Change(
            "update-nodegroup-bounds",
            target,
            f"min..max {_bounds_text(have.min_node_count, have.max_node_count)} -> "
            f"{_bounds_text(low, high)}",
            {"nodegroup": want.name, "min_node_count": low, "max_node_count": high},
        )

    resize = Change(
        "resize-nodegroup",
        target,
        f"{have.node_count} -> {want.count} nodes",
        {"nodegroup": want.name, "node_count": want.count},
    )
    if not count_differs:
        if bounds_differ:
            changes.append(bounds(want.min, want.max))
        return changes
    if not bounds_differ:
        return [resize]
    if fits(have.node_count, want.min, want.max):
        return [bounds(want.min, want.max), resize]
    if fits(want.count, have.min_node_count, have.max_node_count):
        return [resize, bounds(want.min, want.max)]
    low = min(have.min_node_count, want.min)
    high = (
        None
        if have.max_node_count is None or want.max is None
        else max(have.max_node_count, want.max)
    )
    return [bounds(low, high), resize, bounds(want.min, want.max)]


def plan_cluster(
    desired: Cluster,
    cluster_name: str,
    observed: Observed,
    *,
    environment: str = "",
    prune: bool = False,
) -> ClusterPlan:
    """Changes that make the cloud match `desired` (a magnum cluster section)."""
    if desired.provider != "magnum":
        return ClusterPlan(environment, desired.provider, cluster_name, exists=True)
    assert desired.template is not None and desired.workers is not None
    assert desired.masters is not None
    changes: list[Change] = []
    notes: list[str] = []
    blockers: list[str] = []
    tmpl_name = desired.template.name

    def magnum_plan(*, exists: bool) -> ClusterPlan:
        return ClusterPlan(
            environment,
            "magnum",
            cluster_name,
            tuple(changes),
            tuple(notes),
            tuple(blockers),
            exists=exists,
        )

    template = observed.template(tmpl_name)
    cluster = observed.cluster
    needs_template = cluster is None or cluster.template_name != tmpl_name
    if template is None and needs_template:
        if desired.template.create:
            changes.append(
                Change(
                    "create-template",
                    f"template {tmpl_name}",
                    f"image {desired.template.image}, {len(desired.template.labels)} labels",
                    {"name": tmpl_name},
                )
            )
        else:
            blockers.append(
                f"cluster template {tmpl_name!r} does not exist and template.create is false"
            )
    elif template is not None:
        t = desired.template
        if (t.image and template.image_id and t.image != template.image_id) or any(
            template.labels.get(k) != v for k, v in t.labels.items()
        ):
            notes.append(
                f"template {tmpl_name}: image/labels in the cloud differ from the environment; "
                "templates in use are immutable on Magnum: give the new version a new template "
                "name to upgrade"
            )

    ngs_target = [desired.workers, *desired.nodegroups]
    if cluster is None:
        changes.append(
            Change(
                "create-cluster",
                f"cluster {cluster_name}",
                f"template {tmpl_name}, {desired.masters.count} x {desired.masters.flavor} masters, "
                f"{desired.workers.count} x {desired.workers.flavor} workers "
                f"(min..max {_bounds_text(desired.workers.min, desired.workers.max)})",
                {"name": cluster_name, "template": tmpl_name},
            )
        )
        for group in desired.nodegroups:
            changes.append(_create_group(group))
        return magnum_plan(exists=False)

    if cluster.status in ("DELETE_IN_PROGRESS", "DELETE_COMPLETE", "DELETE_FAILED"):
        blockers.append(f"cluster {cluster_name} is {cluster.status}; wait or delete it first")
    elif cluster.status == "CREATE_FAILED":
        reason = f": {cluster.status_reason}" if cluster.status_reason else ""
        blockers.append(
            f"cluster {cluster_name} is CREATE_FAILED{reason}; "
            f"run `kfdeploy cluster delete` and apply again"
        )
    if blockers:
        return magnum_plan(exists=True)

    upgrading = cluster.template_name != tmpl_name
    if upgrading:
        changes.append(
            Change(
                "upgrade-cluster",
                f"cluster {cluster_name}",
                f"template {cluster.template_name or cluster.template_id} -> {tmpl_name}",
                {"template": tmpl_name},
            )
        )
    # Magnum upgrades the control plane and default-worker with the cluster; every other
    # nodegroup needs its own upgrade to the cluster's template (also after an interrupted one).
    in_env = {g.name for g in desired.nodegroups}
    for group_seen in cluster.nodegroups:
        if (
            group_seen.is_default
            or group_seen.name not in in_env
            or group_seen.status == "CREATE_FAILED"
        ):
            continue
        version = group_seen.version
        behind = cluster.coe_version and version and version != cluster.coe_version
        if upgrading or behind:
            was = version or "?"
            changes.append(
                Change(
                    "upgrade-nodegroup",
                    f"nodegroup {group_seen.name}",
                    f"to template {tmpl_name} (nodes at {was})",
                    {"nodegroup": group_seen.name, "template": tmpl_name},
                )
            )
    if cluster.master_count != desired.masters.count:
        notes.append(
            f"masters: {cluster.master_count} in the cloud, {desired.masters.count} in the "
            "environment; Magnum cannot resize the master nodegroup"
        )

    wanted_names = {g.name for g in ngs_target}
    for group in ngs_target:
        have = cluster.nodegroup(group.name)
        if have is None:
            changes.append(_create_group(group))
        elif have.status == "CREATE_FAILED":
            # A failed nodegroup cannot be repaired in place: replace it.
            changes.append(
                Change(
                    "delete-nodegroup",
                    f"nodegroup {group.name}",
                    f"replace: it is CREATE_FAILED ({have.status_reason or 'no reason given'})",
                    {"nodegroup": group.name},
                )
            )
            changes.append(_create_group(group))
        else:
            changes += _group_changes(group, have, notes)

    for have in cluster.nodegroups:
        if have.is_default or have.name in wanted_names or have.role == "master":
            continue
        if prune:
            changes.append(
                Change(
                    "delete-nodegroup",
                    f"nodegroup {have.name}",
                    f"not in the environment ({have.node_count} x {have.flavor})",
                    {"nodegroup": have.name},
                )
            )
        else:
            notes.append(
                f"nodegroup {have.name} ({have.node_count} x {have.flavor}) is not in the "
                "environment; kept (--prune deletes it)"
            )
    return magnum_plan(exists=True)


def _create_group(group: NodeGroup) -> Change:
    extra = []
    if group.gpus:
        extra.append(f"{group.gpus} GPU(s) per node")
    if group.taints:
        extra.append("taints " + ", ".join(_taint_text(t) for t in group.taints))
    return Change(
        "create-nodegroup",
        f"nodegroup {group.name}",
        f"{group.count} x {group.flavor} (min..max {_bounds_text(group.min, group.max)})"
        + (f"; {'; '.join(extra)}" if extra else ""),
        {"nodegroup": group.name},
    )


__all__ = [
    "MUTATING_ACTIONS",
    "Change",
    "ClusterPlan",
    "Observed",
    "ObservedCluster",
    "ObservedNodeGroup",
    "ObservedTemplate",
    "cluster_body",
    "kubelet_options",
    "nodegroup_body",
    "plan_cluster",
    "template_body",
]

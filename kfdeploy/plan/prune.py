"""The prune set: what the cluster holds from a previous apply that the new render no longer has.

Pure: the cluster adapter lists the ApplySet's members (`LiveRef`) and tells which CRDs still
have custom resources; this module decides. Deletion runs in reverse phase order (custom
resources, then webhooks/APIServices, workloads, config, CRDs, namespaces last), so a webhook is
never deleted while objects it guards are still being deleted, and a CRD is not removed from
under its custom resources.

Protected by default, because deleting them destroys what users made or stored:
- Namespaces (a Profile's namespace holds notebooks, pipelines runs, secrets),
- PersistentVolumeClaims and PersistentVolumes (data),
- Profiles (deleting one deletes the user's namespace),
- objects annotated `kfdeploy.cern.ch/prune: never`,
- CRDs that still have custom resources (deleting the CRD deletes every one of them).
Each needs its own explicit flag.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from kfdeploy.plan.phases import CRD, Phase, delete_order, phase_of_kind
from kfdeploy.render.objects import ObjectKey

PRUNE_ANNOTATION = "kfdeploy.cern.ch/prune"
DATA_KINDS = {("", "PersistentVolumeClaim"), ("", "PersistentVolume")}
USER_KINDS = {("kubeflow.org", "Profile")}


@dataclass(frozen=True)
class LiveRef:
    """A live object known by metadata only (what a metadata LIST returns)."""

    key: ObjectKey
    component: str = ""
    annotations: Mapping[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.key}" + (f" ({self.component})" if self.component else "")


@dataclass(frozen=True)
class Protections:
    """What pruning may delete beyond ordinary objects (every flag defaults to no)."""

    namespaces: bool = False
    data: bool = False  # PVCs, PVs and Profiles
    crds_in_use: bool = False


@dataclass
class PrunePlan:
    delete: list[LiveRef] = field(default_factory=list)  # in deletion order
    kept: list[tuple[LiveRef, str]] = field(default_factory=list)  # protected, with the reason

    def __bool__(self) -> bool:
        return bool(self.delete)

    def lines(self) -> list[str]:
        out = [f"- {r}" for r in self.delete]
        out += [f"  kept {r}: {why}" for r, why in self.kept]
        return out


def protection_reason(ref: LiveRef, protections: Protections, crds_in_use: set[str]) -> str | None:
    """Why `ref` must not be pruned, or None when it may go."""
    gk = (ref.key.group, ref.key.kind)
    if ref.annotations.get(PRUNE_ANNOTATION) == "never":
        return f"annotated {PRUNE_ANNOTATION}=never"
    if gk == ("", "Namespace") and not protections.namespaces:
        return "a namespace (may hold user objects); allow with --prune-namespaces"
    if gk in DATA_KINDS | USER_KINDS and not protections.data:
        return "holds user data; allow with --prune-data"
    if gk == CRD and ref.key.name in crds_in_use and not protections.crds_in_use:
        return "custom resources of this CRD still exist; allow with --prune-crds"
    return None


def prune_plan(
    members: Iterable[LiveRef],
    desired: Iterable[ObjectKey],
    *,
    protections: Protections | None = None,
    crds_in_use: set[str] | None = None,
) -> PrunePlan:
    """Members not in `desired`, minus protected ones, in deletion order.

    `crds_in_use` names the CRDs (by object name, `plural.group`) that still have custom resources.
    """
    protections = protections or Protections()
    crds_in_use = crds_in_use or set()
    wanted = set(desired)
    plan = PrunePlan()
    for ref in members:
        if ref.key in wanted:
            continue
        reason = protection_reason(ref, protections, crds_in_use)
        if reason:
            plan.kept.append((ref, reason))
        else:
            plan.delete.append(ref)
    plan.delete.sort(key=lambda r: (delete_order(phase_of_kind(r.key.group, r.key.kind)), r.key))
    plan.kept.sort(key=lambda rw: rw[0].key)
    return plan


def deletion_phases(plan: PrunePlan) -> list[tuple[Phase, list[LiveRef]]]:
    """Group the deletions by phase, in deletion order (each group can run concurrently)."""
    groups: dict[Phase, list[LiveRef]] = {}
    for ref in plan.delete:
        groups.setdefault(phase_of_kind(ref.key.group, ref.key.kind), []).append(ref)
    return sorted(groups.items(), key=lambda kv: delete_order(kv[0]))

"""Checks that prove behaviour by creating something: a GPU pod, a Profile.

Both create short-lived objects and always delete them, whatever happened (failure, timeout,
cancellation): a smoke check must never leave a GPU reserved or a user namespace behind.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kfdeploy.checks.framework import CheckContext, Outcome, failed, not_applicable, passed
from kfdeploy.checks.kube import JSON, Kube, path_of
from kfdeploy.config.model import Environment, NodeGroup
from kfdeploy.errors import ClusterError

log = logging.getLogger(__name__)

SMOKE_NAMESPACE = "kfdeploy-smoke"
NODEGROUP_LABEL = "magnum.openstack.org/nodegroup"
MANAGED_LABELS = {"app.kubernetes.io/managed-by": "kfdeploy", "kfdeploy.cern.ch/component": "smoke"}
# Only scheduling is tested, so the image is never needed to run; pause is tiny and everywhere.
PROBE_IMAGE = "registry.k8s.io/pause:3.10"


def gpu_nodegroups(env: Environment) -> list[NodeGroup]:
    groups = [env.cluster.workers] if env.cluster.workers else []
    return [g for g in [*groups, *env.cluster.nodegroups] if g.gpus > 0]


def gpu_resource(env: Environment) -> str:
    return env.overlays.gpu.resource if env.overlays.gpu else "nvidia.com/gpu"


def gpu_tolerations(env: Environment) -> list[dict[str, str]]:
    """Tolerations for every taint of the GPU nodegroups (and the gpu overlay's own)."""
    out: list[dict[str, str]] = []
    for group in gpu_nodegroups(env):
        for taint in group.taints:
            tol = {"key": taint.key, "effect": taint.effect}
            tol.update(
                {"operator": "Equal", "value": taint.value}
                if taint.value
                else {"operator": "Exists"}
            )
            out.append(tol)
    if env.overlays.gpu:
        out += [dict(t) for t in env.overlays.gpu.tolerations]
    unique: list[dict[str, str]] = []
    for tol in out:
        if tol not in unique:
            unique.append(tol)
    return unique


def gpu_pod(env: Environment, active_deadline: int) -> JSON:
    resource = gpu_resource(env)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "gpu-schedules-",
            "labels": {**MANAGED_LABELS, "kfdeploy.cern.ch/check": "gpu-schedules"},
        },
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 0,
            # If kfdeploy dies before deleting it, the pod still ends and frees its GPU.
            "activeDeadlineSeconds": active_deadline,
            "automountServiceAccountToken": False,
            "tolerations": gpu_tolerations(env),
            # Meets the `restricted` Pod Security level, whatever the cluster enforces by default.
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 65535,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": "probe",
                    "image": PROBE_IMAGE,
                    "resources": {
                        "requests": {resource: "1", "cpu": "10m", "memory": "16Mi"},
                        "limits": {resource: "1", "memory": "16Mi"},
                    },
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"]},
                    },
                }
            ],
        },
    }


def judge_gpu_node(env: Environment, node: Mapping[str, Any] | None) -> Outcome:
    """Passed when the node the probe landed on is one of the environment's GPU nodes."""
    # A bound pod never moves: a wrong node is a settled failure, not worth waiting on.
    if node is None:
        return failed("scheduled onto a node that no longer exists", settled=True)
    name = (node.get("metadata") or {}).get("name", "?")
    labels = (node.get("metadata") or {}).get("labels") or {}
    wanted = [g.name for g in gpu_nodegroups(env)]
    if env.cluster.provider == "magnum":
        group = labels.get(NODEGROUP_LABEL)
        if group in wanted:
            return passed(f"scheduled onto {name} (nodegroup {group})")
        return failed(
            f"scheduled onto {name}, whose nodegroup {group or '(none)'} is not a GPU nodegroup "
            f"({', '.join(wanted)})",
            settled=True,
        )
    # An existing cluster's node labels are its own business: any node offering GPUs will do.
    capacity = ((node.get("status") or {}).get("capacity") or {}).get(gpu_resource(env), "0")
    if str(capacity) not in ("", "0"):
        return passed(f"scheduled onto {name} ({capacity} x {gpu_resource(env)})")
    return failed(f"scheduled onto {name}, which has no {gpu_resource(env)} capacity", settled=True)


def ensure_namespace(kube: Kube, name: str) -> None:
    if kube.get(path_of("v1", "namespaces", name)) is not None:
        return
    try:
        kube.create(
            path_of("v1", "namespaces"),
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": name, "labels": MANAGED_LABELS},
            },
        )
    except ClusterError as exc:
        if exc.status != 409:  # created meanwhile by a concurrent run: fine
            raise


def _admission_not_ready(exc: ClusterError) -> bool:
    """Refusals that go away by themselves: a new namespace's ServiceAccount, a terminating one."""
    text = str(exc)
    return exc.status in (403, 404) and (
        "serviceaccount" in text or "being terminated" in text or "not found" in text
    )


@dataclass
class GpuSchedules:
    """A pod requesting one GPU is scheduled onto a node of a GPU nodegroup."""

    name: str = "gpu-schedules"
    description: str = "a pod requesting one GPU schedules onto a GPU nodegroup node"
    timeout: float | None = None
    interval: float = 1.0
    namespace: str = SMOKE_NAMESPACE

    def run(self, ctx: CheckContext) -> Outcome:
        if not gpu_nodegroups(ctx.env):
            return not_applicable("the environment declares no GPU nodegroup (gpus > 0)")
        kube = ctx.kube
        pods = path_of("v1", "pods", namespace=self.namespace)
        body = gpu_pod(ctx.env, active_deadline=int(ctx.timeout) + 120)
        created: JSON | None = None

        def create() -> Outcome:
            nonlocal created
            try:
                ensure_namespace(kube, self.namespace)
                created = kube.create(pods, body)
            except ClusterError as exc:
                if not _admission_not_ready(exc):
                    raise
                return failed(f"the probe pod could not be created yet: {exc}")
            return passed("created")

        try:
            outcome = ctx.poll(create, self.interval)
            if created is None:
                return outcome
            pod_name = str(created["metadata"]["name"])

            def scheduled() -> Outcome:
                pod = kube.get(f"{pods}/{pod_name}")
                if pod is None:
                    return failed(f"probe pod {self.namespace}/{pod_name} disappeared")
                node = (pod.get("spec") or {}).get("nodeName")
                if node:
                    return judge_gpu_node(ctx.env, kube.get(path_of("v1", "nodes", node)))
                for cond in (pod.get("status") or {}).get("conditions") or []:
                    if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
                        return failed(f"not scheduled: {cond.get('reason')}: {cond.get('message')}")
                return failed("not scheduled yet")

            outcome = ctx.poll(scheduled, self.interval)
            return Outcome(
                outcome.status, outcome.reason, (*outcome.details, f"probe pod {pod_name}")
            )
        finally:
            if created is not None:
                _delete_quietly(
                    kube, f"{pods}/{created['metadata']['name']}", {"gracePeriodSeconds": 0}
                )


def _delete_quietly(kube: Kube, path: str, query: Mapping[str, str | int] | None = None) -> None:
    try:
        kube.delete(path, query)
    except ClusterError as exc:
        # The check's answer stands; the leftover ends by itself (activeDeadlineSeconds) or is
        # labelled for `kfdeploy down`.
        log.warning("could not delete %s: %s", path, exc)


# ---- profile-reconciles -------------------------------------------------------------------------

PROFILE_CRD = "profiles.kubeflow.org"


def profile_version(crd: Mapping[str, Any]) -> str:
    versions = (crd.get("spec") or {}).get("versions") or []
    for v in versions:
        if v.get("storage"):
            return str(v["name"])
    return str(versions[0]["name"]) if versions else "v1"


def owner_bindings(bindings: Sequence[Mapping[str, Any]], owner: str) -> list[str]:
    """Names of RoleBindings that give `owner` (a User) access to the namespace."""
    out = []
    for b in bindings:
        for s in b.get("subjects") or []:
            if s.get("kind") == "User" and s.get("name") == owner:
                out.append(str((b.get("metadata") or {}).get("name")))
                break
    return out


@dataclass
class ProfileReconciles:
    """A Profile becomes a namespace with a RoleBinding for its owner (the controller works)."""

    name: str = "profile-reconciles"
    description: str = "a Profile reconciles into a namespace with its RoleBindings"
    timeout: float | None = None
    interval: float = 2.0

    def run(self, ctx: CheckContext) -> Outcome:
        if ctx.env.simulated:
            return not_applicable(
                "the profile controller does not really run on a simulated cluster: its pods "
                "report Running but nothing reconciles Profiles"
            )
        crds = [o for o in ctx.rendered("CustomResourceDefinition") if o.name == PROFILE_CRD]
        if not crds:
            return not_applicable(
                "the profiles component is not deployed (no Profile CRD rendered)"
            )
        kube = ctx.kube
        if (
            kube.get(path_of("apiextensions.k8s.io/v1", "customresourcedefinitions", PROFILE_CRD))
            is None
        ):
            return failed(f"CustomResourceDefinition {PROFILE_CRD} is not in the cluster")
        version = profile_version(crds[0].obj)
        name = f"kfdeploy-smoke-{secrets.token_hex(3)}"
        owner = f"kfdeploy-smoke@{ctx.env.site.domain or 'example.invalid'}"
        profiles = path_of(f"kubeflow.org/{version}", "profiles")
        kube.create(
            profiles,
            {
                "apiVersion": f"kubeflow.org/{version}",
                "kind": "Profile",
                "metadata": {"name": name, "labels": MANAGED_LABELS},
                "spec": {"owner": {"kind": "User", "name": owner}},
            },
        )

        def reconciled() -> Outcome:
            ns = kube.get(path_of("v1", "namespaces", name))
            if ns is None:
                return failed(
                    f"namespace {name} not created", _profile_conditions(kube, profiles, name)
                )
            bindings = kube.list(
                path_of("rbac.authorization.k8s.io/v1", "rolebindings", namespace=name)
            )
            found = owner_bindings(bindings, owner)
            all_names = sorted(str((b.get("metadata") or {}).get("name")) for b in bindings)
            if not found:
                return failed(
                    f"namespace {name} has no RoleBinding for the owner {owner}",
                    [f"RoleBindings: {', '.join(all_names) or '(none)'}"],
                )
            return passed(
                f"Profile {name} reconciled: namespace and RoleBindings {', '.join(all_names)}"
            )

        try:
            return ctx.poll(reconciled, self.interval)
        finally:
            # The controller deletes the namespace it made when its Profile goes.
            _delete_quietly(kube, f"{profiles}/{name}")


def _profile_conditions(kube: Kube, profiles: str, name: str) -> list[str]:
    profile = kube.get(f"{profiles}/{name}") or {}
    return [
        f"Profile condition {c.get('type')}={c.get('status')}: {c.get('message', '')}"
        for c in (profile.get("status") or {}).get("conditions") or []
    ]

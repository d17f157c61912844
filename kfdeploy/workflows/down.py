"""`kfdeploy down`: remove the platform, in reverse order, keeping user data unless told otherwise.

Order (kapp's and Argo CD's, reversed apply): custom resources, webhook configurations and
APIServices, workloads, everything else, CRDs, namespaces. Teardown is where other installers hang
(namespaces stuck Terminating on finalizers); kfdeploy waits a bounded time and then reports what
is stuck and on which finalizers, instead of waiting forever.

Kept without --delete-data: PersistentVolumeClaims (the pipelines database, object store, Katib's
database), Profiles and the custom resources users created (Notebooks, InferenceServices, ...),
the CRDs those resources need, and every namespace that still holds any of them.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kfdeploy.config.model import Environment
from kfdeploy.errors import WaitTimeout

if TYPE_CHECKING:
    from kfdeploy.cluster.client import Kube
    from kfdeploy.plan.prune import LiveRef, PrunePlan

log = logging.getLogger(__name__)


@dataclass
class DownOptions:
    kubeconfig: Path | None = None
    delete_data: bool = False
    cluster: bool = False  # also delete the cloud cluster
    dry_run: bool = False
    timeout: float = 300.0  # per deletion phase


@dataclass
class DownResult:
    env: str
    deleted: list[str] = field(default_factory=list)
    kept: list[tuple[str, str]] = field(default_factory=list)  # (object, why)
    stuck: list[tuple[str, list[str]]] = field(default_factory=list)  # (object, finalizers)
    failed: list[tuple[str, str]] = field(default_factory=list)
    cluster_deleted: bool = False
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.stuck and not self.failed

    def to_dict(self) -> dict[str, Any]:
        return {
            "environment": self.env,
            "ok": self.ok,
            "deleted": len(self.deleted),
            "kept": [{"object": o, "reason": r} for o, r in self.kept],
            "stuck": [{"object": o, "finalizers": f} for o, f in self.stuck],
            "failed": [{"object": o, "error": e} for o, e in self.failed],
            "cluster_deleted": self.cluster_deleted,
            "seconds": round(self.seconds, 3),
        }


def down(env: Environment, options: DownOptions, message: Any = lambda _m: None) -> DownResult:
    from kfdeploy.cluster.client import connect
    from kfdeploy.cluster.identity import read_identity, release_claim
    from kfdeploy.plan.guard import check

    started = time.monotonic()
    result = DownResult(env.name)
    kubeconfig = _kubeconfig(env, options)
    if kubeconfig is not None:
        kube = connect(kubeconfig, env.cluster.context if options.kubeconfig else None)
        check(env, read_identity(kube))  # never tear down another environment's cluster
        _teardown(kube, env, options, result, message)
        if result.ok and not options.dry_run and not result.kept:
            release_claim_safely(kube, release_claim)
    if options.cluster and not options.dry_run:
        from kfdeploy.cloud.provider import get_provider

        message(f"deleting cluster {env.cluster_name}")
        result.cluster_deleted = get_provider(env).delete(env, message)
    result.seconds = time.monotonic() - started
    return result


def release_claim_safely(kube: Kube, release: Any) -> None:
    """Delete something that may already be gone (a re-run of an interrupted down)."""
    from kfdeploy.cluster.client import NotFound

    with contextlib.suppress(NotFound):
        release(kube)


def _kubeconfig(env: Environment, options: DownOptions) -> Path | None:
    if options.kubeconfig is not None:
        return options.kubeconfig
    from kfdeploy.cloud.provider import get_provider
    from kfdeploy.workflows.up import kubeconfig_path

    provider = get_provider(env)
    status = provider.status(env)
    if not getattr(status, "exists", True):
        return None  # no cluster: nothing on it to delete
    return provider.kubeconfig(env, kubeconfig_path(env))


def _teardown(
    kube: Kube, env: Environment, options: DownOptions, result: DownResult, message: Any
) -> None:
    from kfdeploy.cluster.inventory import ApplySet
    from kfdeploy.cluster.prune import crds_in_use
    from kfdeploy.plan.prune import Protections, prune_plan

    applyset = ApplySet.for_environment(env.name)
    parent = applyset.read(kube)
    if parent is None:
        message(f"no kfdeploy inventory for {env.name} on this cluster: nothing to delete")
        return
    members = applyset.members(kube, parent.group_kinds)
    crd_names = [m.key.name for m in members if m.key.kind == "CustomResourceDefinition"]

    # 1. Custom resources nobody rendered (users' Notebooks, InferenceServices, Profiles...).
    if options.delete_data:
        _delete_custom_resources(kube, crd_names, options, result, message)

    # Pass 1: everything but CRDs and namespaces (the platform's own custom resources go here).
    # Pass 2: CRDs and namespaces, judged after pass 1, so a CRD counts as in use only for the
    # custom resources that remain (users'), not for the platform's own that pass 1 deleted.
    last = {"CustomResourceDefinition", "Namespace"}
    protections = Protections(
        namespaces=True, data=options.delete_data, crds_in_use=options.delete_data
    )
    first = prune_plan([m for m in members if m.key.kind not in last], [], protections=protections)
    _run(kube, first, options, result, message)
    if result.stuck or result.failed:
        return  # CRDs and namespaces of objects that did not go would only get stuck too
    in_use = crds_in_use(kube, crd_names)
    kept_ns = set() if options.delete_data else _namespaces_with_data(kube)
    second = prune_plan(
        [m for m in members if m.key.kind in last], [], protections=protections, crds_in_use=in_use
    )
    # A namespace that still holds kept data stays, or deleting it would delete the data.
    for ref in list(second.delete):
        if ref.key.kind == "Namespace" and ref.key.name in kept_ns:
            second.delete.remove(ref)
            second.kept.append((ref, "holds PersistentVolumeClaims or a Profile's data"))
    _run(kube, second, options, result, message)
    plan_kept = first.kept + second.kept
    if not options.dry_run and not plan_kept and not result.stuck and not result.failed:
        # Everything it listed is gone: the inventory itself goes too, so a later `up` starts clean.
        release_claim_safely(
            kube, lambda k: k.request("DELETE", applyset.path, what="ApplySet parent")
        )


def _run(
    kube: Kube, plan: PrunePlan, options: DownOptions, result: DownResult, message: Any
) -> None:
    from kfdeploy.cluster.prune import execute

    # Prune's hints name apply's flags; for down, --delete-data is the one switch.
    result.kept.extend(
        (str(r), why.split("; allow with")[0] + "; use --delete-data") for r, why in plan.kept
    )
    if not plan.delete:
        return
    message(f"deleting {len(plan.delete)} object(s)")
    try:
        outcomes = execute(kube, plan, dry_run=options.dry_run, timeout=options.timeout)
    except WaitTimeout:
        outcomes = []
        result.stuck.extend(_stuck(kube, plan.delete))
    for o in outcomes:
        if o.action == "failed":
            result.failed.append((str(o.key), o.message))
        else:
            result.deleted.append(str(o.key))


def _delete_custom_resources(
    kube: Kube, crd_names: list[str], options: DownOptions, result: DownResult, message: Any
) -> None:
    from kfdeploy.cluster.client import NotFound, run_concurrently

    refs: list[tuple[str, str]] = []  # (path, label)
    for name in crd_names:
        crd = kube.get_or_none(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}")
        if crd is None:
            continue
        spec = crd["spec"]
        version = next(
            (v["name"] for v in spec["versions"] if v.get("storage")), spec["versions"][0]["name"]
        )
        base = f"/apis/{spec['group']}/{version}"
        try:
            items = kube.get(f"{base}/{spec['names']['plural']}").get("items", [])
        except NotFound:
            continue
        for item in items:
            md = item["metadata"]
            ns = md.get("namespace")
            path = (
                f"{base}/namespaces/{ns}/{spec['names']['plural']}/{md['name']}"
                if ns
                else f"{base}/{spec['names']['plural']}/{md['name']}"
            )
            refs.append((path, f"{spec['names']['kind']} {ns + '/' if ns else ''}{md['name']}"))
    if not refs:
        return
    message(f"deleting {len(refs)} custom resource(s) (--delete-data)")
    query = [("dryRun", "All")] if options.dry_run else []

    def delete(ref: tuple[str, str]) -> None:
        with contextlib.suppress(NotFound):
            kube.request("DELETE", ref[0], query=query, what=ref[1])

    for ref, _, exc in run_concurrently(refs, delete, 8):
        if exc is not None:
            result.failed.append((ref[1], str(exc)))
        else:
            result.deleted.append(ref[1])
    if options.dry_run:
        return
    deadline = time.monotonic() + options.timeout
    remaining = refs
    while remaining and time.monotonic() < deadline:
        remaining = [r for r in remaining if kube.get_or_none(r[0]) is not None]
        if remaining:
            time.sleep(1.0)
    for path, label in remaining:
        obj = kube.get_or_none(path) or {}
        result.stuck.append((label, list(obj.get("metadata", {}).get("finalizers") or [])))


def _namespaces_with_data(kube: Kube) -> set[str]:
    pvcs = kube.get("/api/v1/persistentvolumeclaims").get("items", [])
    return {p["metadata"]["namespace"] for p in pvcs}


def _stuck(kube: Kube, refs: list[LiveRef]) -> list[tuple[str, list[str]]]:
    out = []
    for ref in refs:
        res = kube.discovery.find(ref.key.group, ref.key.kind)
        if res is None:
            continue
        obj = kube.get_or_none(res.path(ref.key.name, ref.key.namespace))
        if obj is not None:
            out.append((str(ref.key), list(obj.get("metadata", {}).get("finalizers") or [])))
    return out

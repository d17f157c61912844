"""Readiness waits: CRDs, workload rollouts, Jobs, APIServices, webhooks.

Every wait is one `poll` with a timeout, an interval and a failure set, and a timeout always
says what is not ready and why: the object's conditions, its recent events, and for workloads
the pods that are not ready with the scheduler's reason (`0/3 nodes are available: ...`). A
failure (a Job that Failed, a Deployment past its progress deadline) ends the wait at once
instead of burning the rest of the timeout.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from kfdeploy.cluster.client import JSON, Kube, NotFound, run_concurrently
from kfdeploy.cluster.inventory import PART_OF_LABEL
from kfdeploy.errors import ClusterError, WaitTimeout
from kfdeploy.plan.phases import webhook_services
from kfdeploy.render.objects import ObjectKey, RenderedObject

log = logging.getLogger(__name__)


class WaitFailed(ClusterError):
    """Something reached a state it will not recover from by waiting (a Job failed)."""


@dataclass(frozen=True)
class WaitResult:
    ready: bool
    why: str = ""  # for not ready: what is missing
    failed: bool = False


def poll(
    what: str,
    check: Callable[[], dict[ObjectKey, WaitResult]],
    *,
    timeout: float,
    interval: float = 1.0,
    explain: Callable[[list[ObjectKey]], str] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> None:
    """Call `check` until every object is ready; raise WaitTimeout/WaitFailed with a report."""
    deadline = time.monotonic() + timeout
    while True:
        results = check()
        failed = {k: r for k, r in results.items() if r.failed}
        pending = {k: r for k, r in results.items() if not r.ready}
        if progress is not None:
            progress(len(results) - len(pending), len(results))
        if failed:
            lines = "\n".join(f"  {k}: {r.why}" for k, r in sorted(failed.items()))
            raise WaitFailed(f"{what}: {len(failed)} failed:\n{lines}")
        if not pending:
            return
        if time.monotonic() >= deadline:
            keys = sorted(pending)
            lines = "\n".join(f"  {k}: {pending[k].why}" for k in keys[:15])
            more = f"\n  ... and {len(keys) - 15} more" if len(keys) > 15 else ""
            report = ""
            if explain is not None:
                try:
                    report = explain(keys[:5])
                except ClusterError as exc:  # a report that fails must not hide the timeout
                    report = f"(could not collect details: {exc})"
            raise WaitTimeout(
                f"{what}: {len(pending)} of {len(results)} not ready after {timeout:.0f}s:\n"
                f"{lines}{more}" + (f"\n{report}" if report else "")
            )
        time.sleep(min(interval, max(0.05, deadline - time.monotonic())))


def _cond(obj: JSON, ctype: str) -> JSON | None:
    for c in obj.get("status", {}).get("conditions") or []:
        if c.get("type") == ctype:
            return dict(c)
    return None


def _conditions_text(obj: JSON) -> str:
    conds = obj.get("status", {}).get("conditions") or []
    return (
        "; ".join(
            f"{c.get('type')}={c.get('status')}"
            + (f" ({c.get('reason')}: {c.get('message')})" if c.get("status") != "True" else "")
            for c in conds
        )
        or "no conditions yet"
    )


# ---- per-kind readiness -----------------------------------------------------------------------


def crd_ready(obj: JSON) -> WaitResult:
    est = _cond(obj, "Established")
    if est and est.get("status") == "True":
        return WaitResult(True)
    names = _cond(obj, "NamesAccepted")
    if names and names.get("status") == "False":
        return WaitResult(False, f"names not accepted: {names.get('message')}", failed=True)
    return WaitResult(False, _conditions_text(obj))


def workload_ready(kind: str, obj: JSON) -> WaitResult:
    """Rollout complete, as `kubectl rollout status` decides it."""
    spec, status = obj.get("spec", {}), obj.get("status", {})
    meta = obj.get("metadata", {})
    if status.get("observedGeneration", 0) < meta.get("generation", 0):
        return WaitResult(False, "the controller has not seen the latest spec yet")
    if kind == "Deployment":
        prog = _cond(obj, "Progressing")
        if prog and prog.get("reason") == "ProgressDeadlineExceeded":
            return WaitResult(
                False, f"progress deadline exceeded: {prog.get('message')}", failed=True
            )
        want = spec.get("replicas", 1)
        updated = status.get("updatedReplicas", 0)
        available = status.get("availableReplicas", 0)
        total = status.get("replicas", 0)
        if updated < want:
            return WaitResult(False, f"{updated}/{want} replicas updated")
        if total > updated:
            return WaitResult(False, f"{total - updated} old replicas pending termination")
        if available < updated:
            return WaitResult(False, f"{available}/{want} replicas available")
        return WaitResult(True)
    if kind == "StatefulSet":
        want = spec.get("replicas", 1)
        ready = status.get("readyReplicas", 0)
        if ready < want:
            return WaitResult(False, f"{ready}/{want} replicas ready")
        if spec.get("updateStrategy", {}).get("type", "RollingUpdate") == "RollingUpdate" and (
            status.get("updateRevision") != status.get("currentRevision")
            or status.get("updatedReplicas", 0) < want
        ):
            return WaitResult(False, f"{status.get('updatedReplicas', 0)}/{want} replicas updated")
        return WaitResult(True)
    if kind == "DaemonSet":
        want = status.get("desiredNumberScheduled", 0)
        updated = status.get("updatedNumberScheduled", 0)
        available = status.get("numberAvailable", 0)
        if updated < want or available < want:
            return WaitResult(False, f"{available}/{want} pods available, {updated} updated")
        return WaitResult(True)
    if kind == "Job":
        if (c := _cond(obj, "Failed")) and c.get("status") == "True":
            return WaitResult(False, f"failed: {c.get('reason')}: {c.get('message')}", failed=True)
        if (c := _cond(obj, "Complete")) and c.get("status") == "True":
            return WaitResult(True)
        return WaitResult(
            False, f"{status.get('succeeded', 0)} succeeded, {status.get('active', 0)} active"
        )
    if kind == "APIService":
        c = _cond(obj, "Available")
        if c and c.get("status") == "True":
            return WaitResult(True)
        return WaitResult(False, _conditions_text(obj))
    return WaitResult(True)


# ---- waits ------------------------------------------------------------------------------------


def _get(kube: Kube, key: ObjectKey) -> JSON | None:
    res = kube.discovery.require(key.group, key.kind, str(key))
    try:
        return dict(kube.get(res.path(key.name, key.namespace), what=str(key)))
    except NotFound:
        return None


def wait_crds_established(
    kube: Kube,
    keys: Sequence[ObjectKey],
    kinds: Iterable[tuple[str, str]],
    *,
    timeout: float,
    interval: float = 0.5,
    workers: int = 8,
    progress: Callable[[int, int], None] | None = None,
) -> None:
    """CRDs Established and their kinds in discovery (custom resources can be applied now).

    Polls discovery, not the CRDs: the API server lists a CRD's kind only once the CRD is
    Established, and two discovery requests are far cheaper than GETting upstream's CRDs (some
    exceed 256 KiB each). The CRDs themselves are read only to explain a timeout or a failure.
    """
    by_kind = dict(zip(kinds, keys, strict=True))

    def check() -> dict[ObjectKey, WaitResult]:
        kube.discovery.invalidate()
        served = kube.discovery.resources()
        return {
            key: WaitResult(True) if gk in served else WaitResult(False, "not in discovery yet")
            for gk, key in by_kind.items()
        }

    def explain(pending: list[ObjectKey]) -> str:
        lines = []
        for k, obj, exc in run_concurrently(pending, lambda k: _get(kube, k), workers):
            if exc is not None:
                lines.append(f"{k}: {exc}")
            else:
                lines.append(f"{k}: {_conditions_text(obj) if obj else 'not found'}")
        return "\n".join(lines)

    poll(
        "CRDs Established",
        check,
        timeout=timeout,
        interval=interval,
        explain=explain,
        progress=progress,
    )


def wait_workloads(
    kube: Kube,
    keys: Sequence[ObjectKey],
    *,
    timeout: float,
    interval: float = 2.0,
    applyset_id: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> None:
    """Deployments, StatefulSets, DaemonSets, Jobs and APIServices rolled out.

    One LIST per kind per poll (restricted to the ApplySet's members when `applyset_id` is given)
    rather than a GET per object: 50 Deployments cost one request per interval.
    """
    by_kind: dict[tuple[str, str], list[ObjectKey]] = defaultdict(list)
    for k in keys:
        by_kind[(k.group, k.kind)].append(k)

    def check() -> dict[ObjectKey, WaitResult]:
        out: dict[ObjectKey, WaitResult] = {}
        for (group, kind), ks in by_kind.items():
            res = kube.discovery.require(group, kind)
            query = [("labelSelector", f"{PART_OF_LABEL}={applyset_id}")] if applyset_id else []
            items = kube.get(res.collection(), query=query, what=f"list {kind}").get("items") or []
            live = {
                ObjectKey(
                    group, kind, i["metadata"].get("namespace", "") or "", i["metadata"]["name"]
                ): i
                for i in items
            }
            for k in ks:
                obj = live.get(k)
                out[k] = workload_ready(kind, obj) if obj else WaitResult(False, "not found")
        return out

    poll(
        f"{len(keys)} workload(s) rolled out",
        check,
        timeout=timeout,
        interval=interval,
        explain=lambda ks: explain_workloads(kube, ks),
        progress=progress,
    )


def wait_endpoints(
    kube: Kube,
    objects: Sequence[RenderedObject],
    *,
    timeout: float,
    interval: float = 1.0,
    progress: Callable[[int, int], None] | None = None,
) -> None:
    """Every Service a webhook/APIService/conversion webhook calls has a ready endpoint."""
    services = sorted({s for o in objects for s in webhook_services(o)})
    if not services:
        return

    def check() -> dict[ObjectKey, WaitResult]:
        out = {}
        for ns, name in services:
            data = kube.get(
                f"/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices",
                query=[("labelSelector", f"kubernetes.io/service-name={name}")],
                what=f"endpoints of Service {ns}/{name}",
            )
            ready = sum(
                1
                for s in data.get("items") or []
                for e in s.get("endpoints") or []
                if (e.get("conditions") or {}).get("ready", True)
            )
            key = ObjectKey("", "Service", ns, name)
            out[key] = WaitResult(ready > 0, "no ready endpoints")
        return out

    poll("webhook endpoints ready", check, timeout=timeout, interval=interval, progress=progress)


def ca_bundles(obj: JSON) -> list[str]:
    if obj.get("kind") == "CustomResourceDefinition":
        conv = obj.get("spec", {}).get("conversion") or {}
        return [str(((conv.get("webhook") or {}).get("clientConfig") or {}).get("caBundle") or "")]
    if obj.get("kind") == "APIService":
        return [str(obj.get("spec", {}).get("caBundle") or "")]
    return [
        str((w.get("clientConfig") or {}).get("caBundle") or "") for w in obj.get("webhooks") or []
    ]


def wait_ca_injected(
    kube: Kube,
    keys: Sequence[ObjectKey],
    *,
    timeout: float,
    interval: float = 1.0,
    progress: Callable[[int, int], None] | None = None,
) -> None:
    """cert-manager's cainjector filled every caBundle of objects that ask for injection.

    Pod Ready is not enough for a webhook: until the CA is injected the API server cannot verify
    the webhook's certificate and every call in its scope fails.
    """

    def check() -> dict[ObjectKey, WaitResult]:
        out = {}
        for k in keys:
            obj = _get(kube, k)
            if obj is None:
                out[k] = WaitResult(False, "not found")
                continue
            empty = sum(1 for b in ca_bundles(obj) if not b)
            out[k] = WaitResult(
                empty == 0, f"{empty} caBundle(s) still empty (cainjector running?)"
            )
        return out

    poll("CA bundles injected", check, timeout=timeout, interval=interval, progress=progress)


# ---- reports ----------------------------------------------------------------------------------


def explain_workloads(kube: Kube, keys: Sequence[ObjectKey]) -> str:
    """Conditions, recent events, and pods not ready with the scheduler's reason."""
    parts = []
    for k in keys:
        obj = _get(kube, k)
        if obj is None:
            parts.append(f"{k}: not found")
            continue
        lines = [f"{k}: {_conditions_text(obj)}"]
        selector = (obj.get("spec", {}).get("selector") or {}).get("matchLabels") or {}
        if selector and k.namespace:
            sel = ",".join(f"{a}={b}" for a, b in sorted(selector.items()))
            pods = (
                kube.get(
                    f"/api/v1/namespaces/{k.namespace}/pods", query=[("labelSelector", sel)]
                ).get("items")
                or []
            )
            for p in pods[:5]:
                lines.append("  " + pod_reason(p))
            if not pods:
                lines.append(
                    "  no pods (see the ReplicaSet's events: quota, admission, service account?)"
                )
        lines += [f"  event: {e}" for e in recent_events(kube, k.namespace, k.name)]
        parts.append("\n".join(lines))
    return "\n".join(parts)


def pod_reason(pod: JSON) -> str:
    name = pod["metadata"]["name"]
    phase = pod.get("status", {}).get("phase", "Unknown")
    sched = _cond(pod, "PodScheduled")
    if sched and sched.get("status") == "False":
        return f"pod {name}: {phase}, not scheduled: {sched.get('message') or sched.get('reason')}"
    ready = _cond(pod, "Ready")
    waiting = [
        f"{c['name']}: {c['state']['waiting'].get('reason')}"
        for c in pod.get("status", {}).get("containerStatuses") or []
        if "waiting" in (c.get("state") or {})
    ]
    detail = f", waiting {', '.join(waiting)}" if waiting else ""
    return f"pod {name}: {phase}, ready={ready.get('status') if ready else 'unknown'}{detail}"


def recent_events(kube: Kube, namespace: str, name: str, limit: int = 5) -> list[str]:
    if not namespace:
        return []
    data = kube.get(
        f"/api/v1/namespaces/{namespace}/events",
        query=[("fieldSelector", f"involvedObject.name={name}")],
    )
    events: list[Any] = sorted(
        data.get("items") or [],
        key=lambda e: str(e.get("lastTimestamp") or e.get("eventTime") or ""),
    )
    return [f"{e.get('type')} {e.get('reason')}: {e.get('message')}" for e in events[-limit:]]

"""Delete what the prune plan says, phase by phase in reverse apply order.

Each phase's deletions run concurrently and are waited for before the next phase, so custom
resources are gone (their controllers and webhooks still running to process finalizers) before
webhooks, workloads, CRDs and namespaces go. A deletion stuck on a finalizer ends in a timeout
that names the finalizers, never in a hang.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from kfdeploy.cluster.apply import FAILED, Outcome
from kfdeploy.cluster.client import METADATA_LIST, ApiError, Kube, NotFound, run_concurrently
from kfdeploy.cluster.waits import WaitResult, poll
from kfdeploy.plan.prune import LiveRef, PrunePlan, deletion_phases
from kfdeploy.render.objects import ObjectKey

log = logging.getLogger(__name__)

PRUNED = "pruned"


def crds_in_use(kube: Kube, crd_names: Iterable[str]) -> set[str]:
    """Names of the given CRDs that still have at least one custom resource."""
    out: set[str] = set()
    for name in crd_names:
        crd = kube.get_or_none(
            f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}", what=f"CRD {name}"
        )
        if crd is None:
            continue
        spec = crd.get("spec", {})
        served = [v["name"] for v in spec.get("versions") or [] if v.get("served")]
        if not served:
            continue
        path = f"/apis/{spec['group']}/{served[0]}/{spec['names']['plural']}"
        try:
            data = kube.get(path, query=[("limit", "1")], accept=METADATA_LIST, what=f"list {name}")
        except NotFound:
            continue
        if data.get("items"):
            out.add(name)
    return out


def execute(
    kube: Kube,
    plan: PrunePlan,
    *,
    dry_run: bool = False,
    workers: int = 8,
    timeout: float = 300,
    on_object: Callable[[Outcome], None] | None = None,
) -> list[Outcome]:
    """Delete `plan.delete` in reverse phase order; outcomes per object."""
    outcomes: list[Outcome] = []
    for phase, refs in deletion_phases(plan):
        log.info("pruning %d object(s) of phase %d", len(refs), int(phase))
        results = run_concurrently(refs, lambda r: _delete(kube, r, dry_run), workers)
        gone: list[ObjectKey] = []
        for ref, outcome, exc in results:
            if exc is not None:
                outcome = Outcome(ref.key, ref.component, FAILED, str(exc))
            elif outcome.action == PRUNED:
                gone.append(ref.key)
            outcomes.append(outcome)
            if on_object is not None:
                on_object(outcome)
        if gone and not dry_run:
            _wait_gone(kube, gone, timeout)
    return outcomes


def _delete(kube: Kube, ref: LiveRef, dry_run: bool) -> Outcome:
    key = ref.key
    res = kube.discovery.find(key.group, key.kind)
    if res is None:  # its CRD went first (deleted by hand): nothing left to delete
        return Outcome(key, ref.component, PRUNED, "kind no longer served")
    query = [("propagationPolicy", "Background")]
    if dry_run:
        query.append(("dryRun", "All"))
    try:
        kube.request(
            "DELETE",
            res.path(key.name, key.namespace),
            query=query,
            what=f"{ref.component or 'prune'}: {key}",
        )
    except NotFound:
        pass  # already gone: the goal is reached
    except ApiError as exc:
        return Outcome(key, ref.component, FAILED, exc.message)
    return Outcome(key, ref.component, PRUNED)


def _wait_gone(kube: Kube, keys: list[ObjectKey], timeout: float) -> None:
    def check() -> dict[ObjectKey, WaitResult]:
        out = {}
        for k in keys:
            res = kube.discovery.find(k.group, k.kind)
            obj = kube.get_or_none(res.path(k.name, k.namespace), what=str(k)) if res else None
            if obj is None:
                out[k] = WaitResult(True)
            else:
                fin = obj.get("metadata", {}).get("finalizers") or []
                out[k] = WaitResult(False, f"still terminating; finalizers: {fin or 'none'}")
        return out

    poll("pruned objects deleted", check, timeout=timeout, interval=1.0)

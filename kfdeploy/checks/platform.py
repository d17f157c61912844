"""Checks that compare what was rendered with what the cluster reports: workloads, CRDs, webhooks.

The rendered objects say what SHOULD exist (so a workload that was never applied is a failure,
not silently absent), the live objects say whether it works. Each check keeps its evaluation in
pure functions over plain dicts so the rules are unit-tested without a cluster.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from kfdeploy.checks.framework import CheckContext, Outcome, failed, not_applicable, passed
from kfdeploy.checks.kube import JSON, Kube, path_of
from kfdeploy.errors import ClusterError
from kfdeploy.render.objects import RenderedObject

# Lines of detail per failing object, and objects listed in a reason: enough to act on, short
# enough for a table cell and a JUnit message.
MAX_PODS_PER_WORKLOAD = 3
MAX_NAMES_IN_REASON = 3
# Concurrent GETs of one check: enough to hide latency, few enough not to crowd the API server.
PARALLEL_READS = 8

WORKLOAD_KINDS = {
    "Deployment": "deployments",
    "StatefulSet": "statefulsets",
    "DaemonSet": "daemonsets",
}
ADMISSION_API = "admissionregistration.k8s.io/v1"
WEBHOOK_KINDS = {
    "MutatingWebhookConfiguration": "mutatingwebhookconfigurations",
    "ValidatingWebhookConfiguration": "validatingwebhookconfigurations",
}


def _names(items: Sequence[str]) -> str:
    shown = ", ".join(items[:MAX_NAMES_IN_REASON])
    more = len(items) - MAX_NAMES_IN_REASON
    return shown + (f" and {more} more" if more > 0 else "")


def _condition(obj: Mapping[str, Any], ctype: str) -> Mapping[str, Any] | None:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == ctype:
            return dict(cond)
    return None


def _cond_text(cond: Mapping[str, Any]) -> str:
    text = f"{cond.get('type')}={cond.get('status')}"
    if cond.get("reason"):
        text += f" ({cond['reason']})"
    if cond.get("message"):
        text += f": {cond['message']}"
    return text


# ---- workloads-available ------------------------------------------------------------------------


def workload_problem(kind: str, live: Mapping[str, Any] | None) -> str | None:
    """Why a live Deployment/StatefulSet/DaemonSet is not ready, or None when it is."""
    if live is None:
        return "not found in the cluster"
    meta = live.get("metadata") or {}
    spec = live.get("spec") or {}
    status = live.get("status") or {}
    if int(status.get("observedGeneration") or 0) < int(meta.get("generation") or 0):
        return "the controller has not yet seen its latest spec"
    if kind == "DaemonSet":
        desired = int(status.get("desiredNumberScheduled") or 0)
        ready = int(status.get("numberReady") or 0)
        updated = int(status.get("updatedNumberScheduled") or 0)
        if ready < desired or updated < desired:
            return f"{ready}/{desired} pods ready, {updated}/{desired} updated"
        return None
    replicas = int(spec["replicas"]) if spec.get("replicas") is not None else 1
    if kind == "StatefulSet":
        ready = int(status.get("readyReplicas") or 0)
        if ready < replicas:
            return f"{ready}/{replicas} replicas ready"
        return None
    # Deployment: Available (minimum availability) and every desired replica available.
    if replicas == 0:
        return None
    available = int(status.get("availableReplicas") or 0)
    problems = []
    cond = _condition(live, "Available")
    if cond is None or cond.get("status") != "True":
        problems.append(_cond_text(cond) if cond else "no Available condition yet")
    if available < replicas:
        problems.append(f"{available}/{replicas} replicas available")
    progressing = _condition(live, "Progressing")
    if progressing and progressing.get("reason") == "ProgressDeadlineExceeded":
        problems.append(_cond_text(progressing))
    replica_failure = _condition(live, "ReplicaFailure")
    if replica_failure and replica_failure.get("status") == "True":
        # e.g. pods refused by a quota or Pod Security admission: no pod exists to explain it
        problems.append(_cond_text(replica_failure))
    return "; ".join(problems) or None


def label_selector(selector: Mapping[str, Any] | None) -> str:
    """A LabelSelector object as the `labelSelector` query string the API accepts."""
    parts = [f"{k}={v}" for k, v in sorted(((selector or {}).get("matchLabels") or {}).items())]
    for expr in (selector or {}).get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if op == "In":
            parts.append(f"{key} in ({','.join(values)})")
        elif op == "NotIn":
            parts.append(f"{key} notin ({','.join(values)})")
        elif op == "Exists":
            parts.append(str(key))
        elif op == "DoesNotExist":
            parts.append(f"!{key}")
    return ",".join(parts)


def pod_problems(
    pods: Iterable[Mapping[str, Any]], limit: int = MAX_PODS_PER_WORKLOAD
) -> list[str]:
    """Why pods are not Ready: the scheduler's message for Pending ones, container waits."""
    out: list[str] = []
    for pod in pods:
        ready = _condition(pod, "Ready")
        if ready is not None and ready.get("status") == "True":
            continue
        name = (pod.get("metadata") or {}).get("name", "?")
        status = pod.get("status") or {}
        phase = status.get("phase") or "Unknown"
        scheduled = _condition(pod, "PodScheduled")
        if scheduled is not None and scheduled.get("status") == "False":
            why = f"{scheduled.get('reason') or 'not scheduled'}: {scheduled.get('message') or ''}"
            out.append(f"pod {name} {phase}: {why.rstrip(': ')}")
        else:
            waits = []
            for cs in (status.get("initContainerStatuses") or []) + (
                status.get("containerStatuses") or []
            ):
                waiting = (cs.get("state") or {}).get("waiting")
                if waiting:
                    text = waiting.get("reason") or "waiting"
                    if waiting.get("message"):
                        text += f": {waiting['message']}"
                    waits.append(f"container {cs.get('name')} {text}")
            out.append(
                f"pod {name} {phase}, not Ready" + (f": {'; '.join(waits)}" if waits else "")
            )
        if len(out) >= limit:
            break
    return out


@dataclass
class WorkloadsAvailable:
    """Every Deployment, StatefulSet and DaemonSet of the rendered platform is ready."""

    name: str = "workloads-available"
    description: str = "every rendered Deployment, StatefulSet and DaemonSet exists and is ready"
    timeout: float | None = None
    interval: float = 2.0

    def run(self, ctx: CheckContext) -> Outcome:
        wanted = [o for kind in WORKLOAD_KINDS for o in ctx.rendered(kind, "apps")]
        if not wanted:
            return not_applicable("no Deployment, StatefulSet or DaemonSet was rendered")
        pending: list[tuple[RenderedObject, str, JSON | None]] = []  # (object, problem, live)

        def evaluate() -> Outcome:
            pending.clear()
            live = _live_by_key(ctx.kube, wanted)
            for obj in wanted:
                problem = workload_problem(obj.kind, live.get(_ref(obj)))
                if problem:
                    pending.append((obj, problem, live.get(_ref(obj))))
            if not pending:
                return passed(f"{len(wanted)} workloads ready")
            names = [f"{o.kind} {_ns(o)}/{o.name}" for o, _, _ in pending]
            return failed(f"{len(pending)} of {len(wanted)} workloads not ready: {_names(names)}")

        outcome = ctx.poll(evaluate, self.interval)
        if outcome.status != "failed" or not pending:
            return outcome
        # Only now look at pods: the scheduler's and kubelet's words are what a person acts on.
        details: list[str] = []
        for obj, problem, live in pending:
            details.append(f"{obj.kind} {_ns(obj)}/{obj.name} ({obj.component}): {problem}")
            selector = label_selector(((live or {}).get("spec") or {}).get("selector"))
            if not selector:
                continue
            try:
                pods = ctx.kube.list(
                    path_of("v1", "pods", namespace=_ns(obj)), {"labelSelector": selector}
                )
            except ClusterError as exc:  # the verdict stands without the pods' story
                details.append(f"  (could not list its pods: {exc})")
                continue
            details.extend(f"  {line}" for line in pod_problems(pods))
        return failed(outcome.reason, details)


def _ns(obj: RenderedObject) -> str:
    # kustomize leaves namespace unset on objects meant for the default namespace
    return obj.namespace or "default"


def _ref(obj: RenderedObject) -> tuple[str, str, str]:
    return obj.kind, _ns(obj), obj.name


def _live_by_key(kube: Kube, wanted: Sequence[RenderedObject]) -> dict[tuple[str, str, str], JSON]:
    """One list call per kind (cluster-wide) instead of one GET per workload."""
    live: dict[tuple[str, str, str], JSON] = {}
    for kind in sorted({o.kind for o in wanted}):
        for item in kube.list(path_of("apps/v1", WORKLOAD_KINDS[kind])):
            meta = item.get("metadata") or {}
            live[(kind, meta.get("namespace") or "", meta.get("name") or "")] = item
    return live


# ---- crds-established ----------------------------------------------------------------------------

CRD_API = "apiextensions.k8s.io/v1"


def crd_problem(live: Mapping[str, Any] | None) -> str | None:
    if live is None:
        return "not found in the cluster"
    problems = []
    for ctype in ("Established", "NamesAccepted"):
        cond = _condition(live, ctype)
        if cond is None:
            problems.append(f"no {ctype} condition yet")
        elif cond.get("status") != "True":
            problems.append(_cond_text(cond))
    return "; ".join(problems) or None


@dataclass
class CrdsEstablished:
    """Every rendered CustomResourceDefinition is Established and its names accepted."""

    name: str = "crds-established"
    description: str = "every rendered CRD is Established and NamesAccepted"
    timeout: float | None = None
    interval: float = 2.0

    def run(self, ctx: CheckContext) -> Outcome:
        wanted = ctx.rendered("CustomResourceDefinition", "apiextensions.k8s.io")
        if not wanted:
            return not_applicable("no CustomResourceDefinition was rendered")
        # Only re-read CRDs that were not ready: the platform's CRDs are megabytes of schema.
        pending = {o.name: "not read yet" for o in wanted}

        def read(name: str) -> tuple[str, str | None]:
            return name, crd_problem(
                ctx.kube.get(path_of(CRD_API, "customresourcedefinitions", name))
            )

        def evaluate() -> Outcome:
            # Parallel reads: 74 CRDs one after the other cost ~8 s, which a no-op `up` would pay.
            with ThreadPoolExecutor(max_workers=PARALLEL_READS) as pool:
                answers = list(pool.map(read, list(pending)))
            for name, problem in answers:
                if problem:
                    pending[name] = problem
                else:
                    del pending[name]
            if not pending:
                return passed(f"{len(wanted)} CRDs established")
            return failed(
                f"{len(pending)} of {len(wanted)} CRDs not established: {_names(sorted(pending))}",
                [f"CustomResourceDefinition {n}: {p}" for n, p in sorted(pending.items())],
            )

        return ctx.poll(evaluate, self.interval)


# ---- webhooks-ready ------------------------------------------------------------------------------


def endpoints_ready(slices: Iterable[Mapping[str, Any]]) -> int:
    """Ready endpoint addresses across a Service's EndpointSlices (no `ready` means ready)."""
    count = 0
    for s in slices:
        for ep in s.get("endpoints") or []:
            if (ep.get("conditions") or {}).get("ready") is not False:
                count += len(ep.get("addresses") or [])
    return count


def client_config_problems(
    where: str, client_config: Mapping[str, Any], services: Mapping[tuple[str, str], str | None]
) -> list[str]:
    """Why the API server could not call this webhook: no CA bundle, no Service, no endpoints.

    `services` holds the problem (or None) of every Service a webhook names (`_service_key`).
    """
    problems = []
    service = client_config.get("service")
    if not client_config.get("caBundle") and service:
        # A URL webhook may be served with a publicly trusted certificate; a Service-backed one
        # never is, so without an injected bundle every call fails TLS verification.
        problems.append(f"{where}: caBundle is empty (CA not injected)")
    if service and services.get(_service_key(service)):
        problems.append(f"{where}: {services[_service_key(service)]}")
    return problems


def _service_key(service: Mapping[str, Any]) -> tuple[str, str]:
    return str(service.get("namespace") or "default"), str(service.get("name") or "")


def _service_problem(kube: Kube, ns: str, name: str) -> str | None:
    if kube.get(path_of("v1", "services", name, ns)) is None:
        return f"service {ns}/{name} not found"
    slices = kube.list(
        path_of("discovery.k8s.io/v1", "endpointslices", namespace=ns),
        {"labelSelector": f"kubernetes.io/service-name={name}"},
    )
    if endpoints_ready(slices) == 0:
        return f"service {ns}/{name} has no ready endpoints"
    return None


@dataclass
class WebhooksReady:
    """Every admission webhook (and CRD conversion webhook) can be called by the API server."""

    name: str = "webhooks-ready"
    description: str = "every webhook has a CA bundle and its service has ready endpoints"
    timeout: float | None = None
    interval: float = 3.0

    def run(self, ctx: CheckContext) -> Outcome:
        configs = [
            o for kind in WEBHOOK_KINDS for o in ctx.rendered(kind, "admissionregistration.k8s.io")
        ]
        conversions = [
            o
            for o in ctx.rendered("CustomResourceDefinition", "apiextensions.k8s.io")
            if ((o.obj.get("spec") or {}).get("conversion") or {}).get("strategy") == "Webhook"
        ]
        if not configs and not conversions:
            sim = ctx.env.overlays.sim
            if ctx.env.simulated and sim is not None and sim.remove_webhooks:
                return not_applicable(
                    "the sim overlay removes webhooks from what is applied to a simulated cluster"
                )
            return not_applicable("no webhook configuration or conversion webhook was rendered")

        def get_config(obj: RenderedObject) -> JSON | None:
            return ctx.kube.get(path_of(ADMISSION_API, WEBHOOK_KINDS[obj.kind], obj.name))

        def get_crd(obj: RenderedObject) -> JSON | None:
            return ctx.kube.get(path_of(CRD_API, "customresourcedefinitions", obj.name))

        def evaluate() -> Outcome:
            problems: list[str] = []
            calls: list[tuple[str, Mapping[str, Any]]] = []  # (where, clientConfig)
            # Parallel reads: a platform has ~30 configurations and ~20 Services behind them.
            with ThreadPoolExecutor(max_workers=PARALLEL_READS) as pool:
                for obj, live in zip(configs, pool.map(get_config, configs), strict=True):
                    if live is None:
                        problems.append(f"{obj.kind} {obj.name}: not found in the cluster")
                    for hook in (live or {}).get("webhooks") or []:
                        where = f"{obj.kind} {obj.name} webhook {hook.get('name')}"
                        calls.append((where, hook.get("clientConfig") or {}))
                for obj, live in zip(conversions, pool.map(get_crd, conversions), strict=True):
                    where = f"CustomResourceDefinition {obj.name} conversion webhook"
                    conversion = ((live or {}).get("spec") or {}).get("conversion") or {}
                    if live is None:
                        problems.append(f"{where}: CRD not found in the cluster")
                    elif conversion.get("strategy") == "Webhook":
                        calls.append(
                            (where, (conversion.get("webhook") or {}).get("clientConfig") or {})
                        )
                keys = sorted({_service_key(cc["service"]) for _, cc in calls if cc.get("service")})
                services = dict(
                    zip(keys, pool.map(lambda k: _service_problem(ctx.kube, *k), keys), strict=True)
                )
            for where, cc in calls:
                problems += client_config_problems(where, cc, services)
            hooks = len(calls)
            if not problems:
                return passed(
                    f"{hooks} webhooks in {len(configs)} configurations and "
                    f"{len(conversions)} CRD conversions ready"
                )
            return failed(f"{len(problems)} webhook problems: {problems[0]}", problems)

        if ctx.env.simulated:
            # No cert-manager CA injector or webhook server really runs here: waiting would only
            # burn the timeout. Look once; what is missing is expected, so it does not fail.
            outcome = evaluate()
            if outcome.status == "failed":
                return not_applicable(
                    "webhooks cannot become ready on a simulated cluster (cert-manager and the "
                    "webhook servers only appear to run); " + outcome.reason,
                    outcome.details,
                )
            return outcome
        return ctx.poll(evaluate, self.interval)

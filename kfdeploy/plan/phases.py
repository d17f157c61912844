"""Order rendered objects into apply phases (pure: no cluster, no `kubernetes` import).

Why phases: upstream's `kubectl apply` loop fails because a custom resource arrives before its
CRD is established, and because a webhook configuration is registered before the pods behind it
serve (every later request in its scope is then refused: "failed calling webhook ... connection
refused"). kapp and Argo CD solve both with the same order, which kfdeploy follows:

1. FOUNDATION  Namespaces and CRDs; then wait until each CRD is Established and discovery has it.
2. CONFIG      cluster-scoped RBAC and config, namespaced ServiceAccounts, RBAC, ConfigMaps,
               Secrets, Services: nothing here runs or is guarded by a webhook of ours.
3. BACKENDS    the workloads behind webhook configurations and APIServices (found through the
               webhooks' service references, the Service selector and the pod template labels),
               plus what they need to start: the controllers of the custom resources in this phase
               (cert-manager) first, then the Issuers/Certificates whose Secrets the backends
               mount. Then wait until they are Available and their endpoints are ready.
4. WEBHOOKS    Mutating/ValidatingWebhookConfigurations and APIServices; then wait until
               cert-manager injected the CA where `inject-ca-from` asks for it.
5. WORKLOADS   everything else, custom resources included.
6. ROLLOUT     no objects: wait for every Deployment, StatefulSet, DaemonSet and Job to roll out.

Webhook configurations are applied only in phase 4, so nothing in phases 1-3 can be intercepted
by a webhook of this render that is not serving yet.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from kfdeploy.render.objects import ObjectKey, RenderedObject

CRD = ("apiextensions.k8s.io", "CustomResourceDefinition")
NAMESPACE = ("", "Namespace")
MUTATING = ("admissionregistration.k8s.io", "MutatingWebhookConfiguration")
VALIDATING = ("admissionregistration.k8s.io", "ValidatingWebhookConfiguration")
APISERVICE = ("apiregistration.k8s.io", "APIService")
WORKLOAD_KINDS = {
    ("apps", "Deployment"),
    ("apps", "StatefulSet"),
    ("apps", "DaemonSet"),
    ("batch", "Job"),
}
INJECT_CA_ANNOTATIONS = (
    "cert-manager.io/inject-ca-from",
    "cert-manager.io/inject-ca-from-secret",
    "cert-manager.io/inject-apiserver-ca",
)

# Kinds of phase 2 by (group, kind); everything cluster-scoped from these groups goes there too.
_CONFIG_GROUPS = {"rbac.authorization.k8s.io", "scheduling.k8s.io", "storage.k8s.io", "node.k8s.io"}
_CONFIG_CORE_KINDS = {
    "ServiceAccount",
    "ConfigMap",
    "Secret",
    "Service",
    "LimitRange",
    "ResourceQuota",
    "PersistentVolume",
    "PersistentVolumeClaim",
}

# Built-in kinds that are cluster-scoped. Custom kinds take their scope from their CRD (in the
# render) and, on a cluster, from discovery; this table lets the plan stay pure.
CLUSTER_SCOPED_BUILTINS = {
    ("", "Namespace"),
    ("", "Node"),
    ("", "PersistentVolume"),
    ("rbac.authorization.k8s.io", "ClusterRole"),
    ("rbac.authorization.k8s.io", "ClusterRoleBinding"),
    ("scheduling.k8s.io", "PriorityClass"),
    ("storage.k8s.io", "StorageClass"),
    ("storage.k8s.io", "CSIDriver"),
    ("node.k8s.io", "RuntimeClass"),
    ("apiextensions.k8s.io", "CustomResourceDefinition"),
    ("apiregistration.k8s.io", "APIService"),
    ("admissionregistration.k8s.io", "MutatingWebhookConfiguration"),
    ("admissionregistration.k8s.io", "ValidatingWebhookConfiguration"),
    ("admissionregistration.k8s.io", "ValidatingAdmissionPolicy"),
    ("admissionregistration.k8s.io", "ValidatingAdmissionPolicyBinding"),
    ("certificates.k8s.io", "CertificateSigningRequest"),
    ("flowcontrol.apiserver.k8s.io", "FlowSchema"),
    ("flowcontrol.apiserver.k8s.io", "PriorityLevelConfiguration"),
}


class Phase(IntEnum):
    FOUNDATION = 1
    CONFIG = 2
    BACKENDS = 3
    WEBHOOKS = 4
    WORKLOADS = 5
    ROLLOUT = 6

    @property
    def title(self) -> str:
        return _TITLES[self]


_TITLES = {
    Phase.FOUNDATION: "namespaces and CRDs",
    Phase.CONFIG: "RBAC and configuration",
    Phase.BACKENDS: "webhook and APIService backends",
    Phase.WEBHOOKS: "webhook configurations and APIServices",
    Phase.WORKLOADS: "workloads and custom resources",
    Phase.ROLLOUT: "rollouts",
}


@dataclass(frozen=True)
class WaitSpec:
    """Something the cluster adapter waits for after a step; `keys` names the objects."""

    kind: str  # crds-established | workloads-ready | endpoints-ready | ca-injected
    keys: tuple[ObjectKey, ...]

    def __str__(self) -> str:
        return f"{self.kind} ({len(self.keys)})"


@dataclass
class Step:
    """Objects applied together (concurrently), then the waits that gate the next step.

    `gate` holds waits that must pass before this step's objects are sent. The CRD wait is one:
    it gates the first step holding custom resources instead of following phase 1 directly, so
    the API server establishes CRDs (tens of seconds for upstream's 74 on two cores) while RBAC,
    config and built-in workloads are applied. The guarantee is the same: no custom resource is
    sent before its CRD is Established and in discovery.
    """

    phase: Phase
    objects: list[RenderedObject] = field(default_factory=list)
    waits: list[WaitSpec] = field(default_factory=list)
    note: str = ""
    gate: list[WaitSpec] = field(default_factory=list)


@dataclass
class Plan:
    """Ordered steps; at most a few steps per phase (phase 3 has two when it needs controllers)."""

    steps: list[Step]
    scope: Scope

    def phase_of(self) -> dict[ObjectKey, Phase]:
        return {self.scope.key(o): s.phase for s in self.steps for o in s.objects}

    @property
    def objects(self) -> list[RenderedObject]:
        return [o for s in self.steps for o in s.objects]

    def summary(self) -> list[tuple[str, int, str]]:
        """(phase title, objects, waits) rows for printing."""
        rows = []
        for s in self.steps:
            title = f"{int(s.phase)}. {s.phase.title}" + (f" ({s.note})" if s.note else "")
            waits = [f"first {w}" for w in s.gate] + [str(w) for w in s.waits]
            rows.append((title, len(s.objects), ", ".join(waits)))
        return rows

    def __str__(self) -> str:
        return "\n".join(f"{t:<60} {n:>4}  {w}" for t, n, w in self.summary())


class Scope:
    """Which kinds are namespaced: built-ins from a table, custom kinds from their CRDs.

    kustomize's namespace transformer sometimes sets metadata.namespace on cluster-scoped objects
    (upstream renders two ClusterRoles that way); the API server ignores it, so keys must too or
    pruning would think the object changed identity.
    """

    def __init__(
        self,
        objects: Iterable[RenderedObject] = (),
        extra: Mapping[tuple[str, str], bool] | None = None,
    ) -> None:
        self._namespaced: dict[tuple[str, str], bool] = {}
        self._crd_kinds: set[tuple[str, str]] = set()
        for o in objects:
            if (o.group, o.kind) == CRD:
                spec = o.obj.get("spec", {})
                gk = (str(spec.get("group", "")), str(spec.get("names", {}).get("kind", "")))
                self._namespaced[gk] = spec.get("scope", "Namespaced") == "Namespaced"
                self._crd_kinds.add(gk)
        if extra:
            self._namespaced.update(extra)

    def defines(self, group: str, kind: str) -> bool:
        """Whether a CRD of the render defines this kind."""
        return (group, kind) in self._crd_kinds

    def namespaced(self, group: str, kind: str) -> bool | None:
        """True/False when known, None for a custom kind whose CRD is not in sight."""
        if (group, kind) in CLUSTER_SCOPED_BUILTINS:
            return False
        if (group, kind) in self._namespaced:
            return self._namespaced[(group, kind)]
        if group in {
            "",
            "apps",
            "batch",
            "rbac.authorization.k8s.io",
            "networking.k8s.io",
            "policy",
            "autoscaling",
            "coordination.k8s.io",
            "discovery.k8s.io",
            "events.k8s.io",
        }:
            return True
        return None

    def key(self, o: RenderedObject) -> ObjectKey:
        if o.namespace and self.namespaced(o.group, o.kind) is False:
            return ObjectKey(o.group, o.kind, "", o.name)
        return o.key


def _selector_matches(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def _pod_labels(o: RenderedObject) -> dict[str, str]:
    tpl = o.obj.get("spec", {}).get("template", {})
    return dict(tpl.get("metadata", {}).get("labels") or {})


def webhook_services(o: RenderedObject) -> list[tuple[str, str]]:
    """(namespace, name) of the Services a webhook configuration, APIService or CRD calls."""
    refs: list[dict[str, Any]] = []
    if (o.group, o.kind) in (MUTATING, VALIDATING):
        refs = [
            (w.get("clientConfig") or {}).get("service") or {} for w in o.obj.get("webhooks") or []
        ]
    elif (o.group, o.kind) == APISERVICE:
        refs = [o.obj.get("spec", {}).get("service") or {}]
    elif (o.group, o.kind) == CRD:
        conv = o.obj.get("spec", {}).get("conversion") or {}
        if conv.get("strategy") == "Webhook":
            cc = (conv.get("webhook") or {}).get("clientConfig") or {}
            refs = [cc.get("service") or {}]
    return sorted({(str(r["namespace"]), str(r["name"])) for r in refs if r.get("name")})


def injects_ca(o: RenderedObject) -> bool:
    ann = o.obj.get("metadata", {}).get("annotations") or {}
    return any(a in ann for a in INJECT_CA_ANNOTATIONS)


def _secret_volumes(o: RenderedObject) -> set[str]:
    spec = o.obj.get("spec", {}).get("template", {}).get("spec", {})
    return {
        str(v["secret"]["secretName"])
        for v in spec.get("volumes") or []
        if isinstance(v.get("secret"), dict) and v["secret"].get("secretName")
    }


def classify(o: RenderedObject, scope: Scope) -> Phase:
    """The phase of one object on its own (phase 3 membership needs the whole render)."""
    gk = (o.group, o.kind)
    if gk in (NAMESPACE, CRD):
        return Phase.FOUNDATION
    if gk in (MUTATING, VALIDATING, APISERVICE):
        return Phase.WEBHOOKS
    if o.group == "" and o.kind in _CONFIG_CORE_KINDS:
        return Phase.CONFIG
    if o.group in _CONFIG_GROUPS:
        return Phase.CONFIG
    return Phase.WORKLOADS


def backends(objects: Sequence[RenderedObject]) -> list[RenderedObject]:
    """Workloads serving the render's webhooks, APIServices and conversion webhooks."""
    services = {(o.namespace, o.name): o for o in objects if (o.group, o.kind) == ("", "Service")}
    wanted: set[tuple[str, str]] = set()
    for o in objects:
        wanted.update(webhook_services(o))
    selectors = [
        (ns, dict(services[(ns, name)].obj.get("spec", {}).get("selector") or {}))
        for ns, name in sorted(wanted)
        if (ns, name) in services
    ]
    out = []
    for o in objects:
        if (o.group, o.kind) not in WORKLOAD_KINDS or (o.group, o.kind) == ("batch", "Job"):
            continue
        labels = _pod_labels(o)
        if any(ns == o.namespace and _selector_matches(sel, labels) for ns, sel in selectors):
            out.append(o)
    return out


def build_plan(objects: Sequence[RenderedObject], scope: Scope | None = None) -> Plan:
    """Order `objects` into steps. Stable: within a step, objects keep render order."""
    scope = scope or Scope(objects)
    backend_objs = backends(objects)
    backend_ids = {id(o) for o in backend_objs}

    # What the backends need to start: Certificates whose Secret they mount, and the Issuers those
    # reference. Both are custom resources whose controller (cert-manager) then has to run first.
    mounted = {(o.namespace, s) for o in backend_objs for s in _secret_volumes(o)}
    certs = [
        o
        for o in objects
        if o.kind == "Certificate"
        and o.group == "cert-manager.io"
        and (o.namespace, str(o.obj.get("spec", {}).get("secretName", ""))) in mounted
    ]
    issuer_refs = {
        (
            str(c.obj["spec"].get("issuerRef", {}).get("kind", "Issuer")),
            ""
            if c.obj["spec"].get("issuerRef", {}).get("kind") == "ClusterIssuer"
            else c.namespace,
            str(c.obj["spec"].get("issuerRef", {}).get("name", "")),
        )
        for c in certs
    }
    issuers = [
        o
        for o in objects
        if o.group == "cert-manager.io"
        and (o.kind, o.namespace if o.kind == "Issuer" else "", o.name) in issuer_refs
    ]
    needed_crs = issuers + certs
    # Controllers of those custom resources: the workloads of the components that define their
    # CRDs (cert-manager's controller, cainjector and webhook), unless already backends.
    cr_groups = {(o.group, o.kind) for o in needed_crs}
    provider_components = {
        o.component
        for o in objects
        if (o.group, o.kind) == CRD
        and (
            str(o.obj.get("spec", {}).get("group", "")),
            str(o.obj.get("spec", {}).get("names", {}).get("kind", "")),
        )
        in cr_groups
    }
    providers = [
        o
        for o in objects
        if o.component in provider_components
        and (o.group, o.kind) in WORKLOAD_KINDS
        and (o.group, o.kind) != ("batch", "Job")
    ]
    provider_ids = {id(o) for o in providers}
    needed_ids = {id(o) for o in needed_crs}

    buckets: dict[Phase, list[RenderedObject]] = defaultdict(list)
    for o in objects:
        if id(o) in provider_ids or id(o) in backend_ids or id(o) in needed_ids:
            continue
        buckets[classify(o, scope)].append(o)

    steps: list[Step] = []
    found = buckets[Phase.FOUNDATION]
    crd_keys = tuple(scope.key(o) for o in found if (o.group, o.kind) == CRD)
    steps.append(Step(Phase.FOUNDATION, found))
    steps.append(Step(Phase.CONFIG, buckets[Phase.CONFIG]))
    if providers:
        steps.append(
            Step(
                Phase.BACKENDS,
                providers,
                [WaitSpec("workloads-ready", tuple(scope.key(o) for o in providers))],
                note="controllers they need",
            )
        )
    rest = needed_crs + [o for o in backend_objs if id(o) not in provider_ids]
    if rest or not providers:
        rest_backends = tuple(scope.key(o) for o in rest if (o.group, o.kind) in WORKLOAD_KINDS)
        waits = [WaitSpec("workloads-ready", rest_backends)] if rest_backends else []
        steps.append(Step(Phase.BACKENDS, rest, waits))
    hooks = buckets[Phase.WEBHOOKS]
    hook_waits = []
    webhook_keys = tuple(scope.key(o) for o in objects if webhook_services(o))
    if webhook_keys:
        hook_waits.append(WaitSpec("endpoints-ready", webhook_keys))
    ca_keys = tuple(scope.key(o) for o in objects if injects_ca(o) and webhook_services(o))
    if ca_keys:
        hook_waits.append(WaitSpec("ca-injected", ca_keys))
    steps.append(Step(Phase.WEBHOOKS, hooks, hook_waits))
    # Built-in kinds of phase 5 first: their rollouts start while custom resources wait for CRDs.
    custom = [o for o in buckets[Phase.WORKLOADS] if is_custom(o, scope)]
    custom_ids = {id(o) for o in custom}
    steps.append(
        Step(Phase.WORKLOADS, [o for o in buckets[Phase.WORKLOADS] if id(o) not in custom_ids])
    )
    steps.append(Step(Phase.WORKLOADS, custom, note="custom resources"))
    rollout = tuple(
        scope.key(o)
        for o in objects
        if (o.group, o.kind) in WORKLOAD_KINDS and id(o) not in provider_ids | backend_ids
    )
    steps.append(Step(Phase.ROLLOUT, [], [WaitSpec("workloads-ready", rollout)] if rollout else []))
    if crd_keys:
        # Gate the first step that sends a custom resource (at the latest, the rollout step).
        first = next((s for s in steps if any(is_custom(o, scope) for o in s.objects)), steps[-1])
        first.gate.append(WaitSpec("crds-established", crd_keys))
    return Plan(steps, scope)


BUILTIN_GROUPS = {
    "",
    "apps",
    "batch",
    "autoscaling",
    "policy",
    "networking.k8s.io",
    "rbac.authorization.k8s.io",
    "scheduling.k8s.io",
    "storage.k8s.io",
    "node.k8s.io",
    "coordination.k8s.io",
    "discovery.k8s.io",
    "events.k8s.io",
    "apiextensions.k8s.io",
    "apiregistration.k8s.io",
    "admissionregistration.k8s.io",
    "certificates.k8s.io",
    "flowcontrol.apiserver.k8s.io",
    "resource.k8s.io",
}


def is_custom(o: RenderedObject, scope: Scope) -> bool:
    """A custom resource: its kind comes from a CRD (of this render or installed beforehand)."""
    return scope.defines(o.group, o.kind) or o.group not in BUILTIN_GROUPS


def delete_order(phase: Phase) -> int:
    """Sort key for deletion: reverse of apply order (custom resources first, namespaces last)."""
    return -int(phase)


def phase_of_kind(group: str, kind: str) -> Phase:
    """Phase of a live object known only by kind (pruning has no render of it)."""
    if (group, kind) in (NAMESPACE, CRD):
        return Phase.FOUNDATION
    if (group, kind) in (MUTATING, VALIDATING, APISERVICE):
        return Phase.WEBHOOKS
    if (group == "" and kind in _CONFIG_CORE_KINDS) or group in _CONFIG_GROUPS:
        return Phase.CONFIG
    return Phase.WORKLOADS

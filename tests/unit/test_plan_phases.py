"""Phase ordering (pure): CRDs before custom resources, webhook backends before webhooks."""

from __future__ import annotations

from typing import Any

from kfdeploy.plan.phases import Phase, Scope, backends, build_plan, classify
from kfdeploy.render.objects import ObjectKey, RenderedObject


def obj(
    kind: str, name: str, ns: str = "", api: str = "v1", comp: str = "c", **extra: Any
) -> RenderedObject:
    meta: dict[str, Any] = {"name": name}
    if ns:
        meta["namespace"] = ns
    meta.update(extra.pop("meta", {}))
    return RenderedObject(comp, {"apiVersion": api, "kind": kind, "metadata": meta, **extra})


def crd(
    group: str, kind: str, plural: str, comp: str = "c", scope: str = "Namespaced"
) -> RenderedObject:
    return obj(
        "CustomResourceDefinition",
        f"{plural}.{group}",
        api="apiextensions.k8s.io/v1",
        comp=comp,
        spec={"group": group, "scope": scope, "names": {"kind": kind, "plural": plural}},
    )


def deployment(
    name: str, ns: str, labels: dict[str, str], comp: str = "c", secrets: tuple[str, ...] = ()
) -> RenderedObject:
    vols = [{"name": s, "secret": {"secretName": s}} for s in secrets]
    return obj(
        "Deployment",
        name,
        ns,
        api="apps/v1",
        comp=comp,
        spec={
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {"volumes": vols}},
        },
    )


def service(name: str, ns: str, selector: dict[str, str]) -> RenderedObject:
    return obj("Service", name, ns, spec={"selector": selector})


def webhook(name: str, svc_ns: str, svc: str, inject: str | None = None) -> RenderedObject:
    meta = {"annotations": {"cert-manager.io/inject-ca-from": inject}} if inject else {}
    return obj(
        "ValidatingWebhookConfiguration",
        name,
        api="admissionregistration.k8s.io/v1",
        meta=meta,
        webhooks=[{"name": "w", "clientConfig": {"service": {"namespace": svc_ns, "name": svc}}}],
    )


def platform() -> list[RenderedObject]:
    """A small platform shaped like upstream: cert-manager, a webhook-backed controller, CRs."""
    return [
        # custom resource first on purpose: render order must not decide apply order
        obj("Notebook", "nb", "kubeflow", api="kubeflow.org/v1"),
        obj(
            "Issuer",
            "self",
            "kubeflow",
            api="cert-manager.io/v1",
            comp="katib",
            spec={"selfSigned": {}},
        ),
        obj(
            "Certificate",
            "katib-cert",
            "kubeflow",
            api="cert-manager.io/v1",
            comp="katib",
            spec={"secretName": "katib-tls", "issuerRef": {"kind": "Issuer", "name": "self"}},
        ),
        obj(
            "Certificate",
            "unrelated",
            "kubeflow",
            api="cert-manager.io/v1",
            spec={"secretName": "other", "issuerRef": {"name": "self"}},
        ),
        webhook("katib.kubeflow.org", "kubeflow", "katib-controller", inject="kubeflow/katib-cert"),
        deployment(
            "katib-controller", "kubeflow", {"app": "katib"}, comp="katib", secrets=("katib-tls",)
        ),
        deployment("katib-ui", "kubeflow", {"app": "katib-ui"}, comp="katib"),
        service("katib-controller", "kubeflow", {"app": "katib"}),
        deployment("cert-manager", "cert-manager", {"app": "cm"}, comp="cert-manager"),
        deployment("cert-manager-webhook", "cert-manager", {"app": "cmw"}, comp="cert-manager"),
        crd("cert-manager.io", "Certificate", "certificates", comp="cert-manager"),
        crd("cert-manager.io", "Issuer", "issuers", comp="cert-manager"),
        crd("kubeflow.org", "Notebook", "notebooks"),
        obj("Namespace", "kubeflow"),
        obj("ClusterRole", "r", "kubeflow", api="rbac.authorization.k8s.io/v1"),
        obj("ServiceAccount", "sa", "kubeflow"),
        obj("ConfigMap", "cm", "kubeflow"),
        obj("PriorityClass", "pc", api="scheduling.k8s.io/v1"),
    ]


def phase_index(plan_steps: list[Any]) -> dict[str, int]:
    return {f"{o.kind}/{o.name}": i for i, s in enumerate(plan_steps) for o in s.objects}


def test_crds_and_namespaces_come_first_and_custom_resources_last() -> None:
    plan = build_plan(platform())
    at = phase_index(plan.steps)
    assert plan.steps[0].phase == Phase.FOUNDATION
    assert {k for k, i in at.items() if i == 0} == {
        "Namespace/kubeflow",
        "CustomResourceDefinition/certificates.cert-manager.io",
        "CustomResourceDefinition/issuers.cert-manager.io",
        "CustomResourceDefinition/notebooks.kubeflow.org",
    }
    # The CRD wait gates the first step that sends a custom resource, not phase 2: CRDs get
    # established while RBAC and config are applied.
    gated = [
        i for i, st in enumerate(plan.steps) if any(w.kind == "crds-established" for w in st.gate)
    ]
    assert len(gated) == 1
    first_cr = min(at[k] for k in ("Notebook/nb", "Certificate/katib-cert", "Issuer/self"))
    assert gated[0] == first_cr
    assert at["Notebook/nb"] > at["CustomResourceDefinition/notebooks.kubeflow.org"]
    assert plan.steps[at["Notebook/nb"]].phase == Phase.WORKLOADS


def test_config_phase_holds_rbac_and_namespaced_config() -> None:
    plan = build_plan(platform())
    at = phase_index(plan.steps)
    for name in (
        "ClusterRole/r",
        "ServiceAccount/sa",
        "ConfigMap/cm",
        "PriorityClass/pc",
        "Service/katib-controller",
    ):
        assert plan.steps[at[name]].phase == Phase.CONFIG, name


def test_webhook_backend_found_through_service_selector_and_ordered_before_its_webhook() -> None:
    objs = platform()
    assert [o.name for o in backends(objs)] == ["katib-controller"]
    plan = build_plan(objs)
    at = phase_index(plan.steps)
    assert plan.steps[at["Deployment/katib-controller"]].phase == Phase.BACKENDS
    assert (
        plan.steps[at["ValidatingWebhookConfiguration/katib.kubeflow.org"]].phase == Phase.WEBHOOKS
    )
    assert (
        at["Deployment/katib-controller"] < at["ValidatingWebhookConfiguration/katib.kubeflow.org"]
    )
    # ordinary workloads wait for phase 5
    assert plan.steps[at["Deployment/katib-ui"]].phase == Phase.WORKLOADS


def test_cert_manager_runs_before_the_certificates_backends_mount() -> None:
    plan = build_plan(platform())
    at = phase_index(plan.steps)
    cm, cert, issuer = (
        at["Deployment/cert-manager"],
        at["Certificate/katib-cert"],
        at["Issuer/self"],
    )
    assert plan.steps[cm].phase == plan.steps[cert].phase == Phase.BACKENDS
    assert cm < cert  # the controller is Available before the Certificate is created
    assert issuer == cert
    assert plan.steps[cm].waits[0].kind == "workloads-ready"
    # a Certificate no backend mounts is an ordinary custom resource
    assert plan.steps[at["Certificate/unrelated"]].phase == Phase.WORKLOADS


def test_webhook_waits_endpoints_and_injected_ca() -> None:
    plan = build_plan(platform())
    hooks = next(s for s in plan.steps if s.phase == Phase.WEBHOOKS)
    kinds = {w.kind: w.keys for w in hooks.waits}
    key = ObjectKey(
        "admissionregistration.k8s.io", "ValidatingWebhookConfiguration", "", "katib.kubeflow.org"
    )
    assert kinds["endpoints-ready"] == (key,)
    assert kinds["ca-injected"] == (key,)


def test_builtin_workloads_go_before_custom_resources_in_phase_five() -> None:
    objs = [o for o in platform() if o.kind != "ValidatingWebhookConfiguration"]
    plan = build_plan(objs)
    at = phase_index(plan.steps)
    assert at["Deployment/katib-ui"] < at["Notebook/nb"]
    gate = next(i for i, st in enumerate(plan.steps) if st.gate)
    assert at["Notebook/nb"] == gate and at["Deployment/katib-ui"] < gate
    # without webhooks nothing needs cert-manager first: Certificates are ordinary CRs
    assert plan.steps[at["Certificate/katib-cert"]].phase == Phase.WORKLOADS


def test_no_crd_in_render_means_no_gate() -> None:
    objs = [o for o in platform() if o.kind != "CustomResourceDefinition"]
    assert not any(st.gate for st in build_plan(objs).steps)


def test_rollout_waits_for_every_other_workload() -> None:
    plan = build_plan(platform())
    rollout = plan.steps[-1]
    assert rollout.phase == Phase.ROLLOUT and not rollout.objects
    assert {k.name for k in rollout.waits[0].keys} == {"katib-ui"}


def test_without_webhooks_phase_three_is_empty_and_nothing_is_lost() -> None:
    objs = [o for o in platform() if o.kind != "ValidatingWebhookConfiguration"]
    plan = build_plan(objs)
    assert len(plan.objects) == len(objs)
    assert all(not s.objects for s in plan.steps if s.phase in (Phase.BACKENDS, Phase.WEBHOOKS))


def test_every_object_is_planned_exactly_once() -> None:
    objs = platform()
    plan = build_plan(objs)
    assert sorted(map(id, plan.objects)) == sorted(map(id, objs))


def test_order_within_a_step_is_render_order() -> None:
    objs = [obj("ConfigMap", f"cm{i}", "ns") for i in range(20)]
    step = next(s for s in build_plan(objs).steps if s.phase == Phase.CONFIG)
    assert [o.name for o in step.objects] == [f"cm{i}" for i in range(20)]


def test_cluster_scoped_object_with_a_stray_namespace_is_keyed_without_it() -> None:
    stray = obj("ClusterRole", "r", "kubeflow", api="rbac.authorization.k8s.io/v1")
    cluster_cr = obj("Profile", "p", "oops", api="kubeflow.org/v1")
    scope = Scope([stray, cluster_cr, crd("kubeflow.org", "Profile", "profiles", scope="Cluster")])
    assert scope.key(stray).namespace == ""
    assert scope.key(cluster_cr).namespace == ""
    assert scope.namespaced("apps", "Deployment") is True
    assert scope.namespaced("example.com", "Unknown") is None


def test_classify_defaults_unknown_kinds_to_workloads() -> None:
    assert classify(obj("Widget", "w", "ns", api="example.com/v1"), Scope()) == Phase.WORKLOADS


def test_plan_prints_one_row_per_step() -> None:
    text = str(build_plan(platform()))
    assert "1. namespaces and CRDs" in text and "6. rollouts" in text

"""The overlays as kustomize Components, built with the real kustomize (no kfdeploy transform):
what a person gets with plain `kustomize build`, on small upstream components and fixtures.
Each build takes about a second."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from kfdeploy.render import kustomize
from kfdeploy.render.overlays import overlays_dir

REPO = Path(__file__).resolve().parents[2]
README = REPO / "overlays" / "README.md"

PARAMS = {
    "environment": "t",
    "sso-issuer": "https://auth.cern.ch/auth/realms/cern",
    "sso-client-id": "kubeflow-ml",
    "sso-scope": "openid email profile",
    "sso-username-claim": "email",
    "sso-groups-claim": "cern_roles",
    "sso-redirect-url": "https://ml.cern.ch/oauth2/callback",
    "sso-login-url": "https://auth.cern.ch/auth/realms/cern/protocol/openid-connect/auth",
    "sso-redeem-url": "https://auth.cern.ch/auth/realms/cern/protocol/openid-connect/token",
    "sso-jwks-url": "https://auth.cern.ch/auth/realms/cern/protocol/openid-connect/certs",
    "storage-class": "geneva-cephfs",
    "gpu-device-plugin-image": "nvcr.io/nvidia/k8s-device-plugin:v0.17.1",
}

Obj = dict[str, Any]


def _write(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = (
        data
        if isinstance(data, str)
        else yaml.safe_dump_all(data if isinstance(data, list) else [data])
    )
    path.write_text(text, encoding="utf-8")


@pytest.fixture
def work(tmp_path: Path, manifests_dir: Path) -> Path:
    """The by-hand layout of overlays/README.md."""
    (tmp_path / "overlays").symlink_to(overlays_dir())
    (tmp_path / "r26").symlink_to(manifests_dir / "26.03")
    (tmp_path / "r111").symlink_to(manifests_dir / "v1.11.0")
    _write(
        tmp_path / "params" / "kustomization.yaml",
        {
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "resources": ["site-params.yaml"],
        },
    )
    _write(
        tmp_path / "params" / "site-params.yaml",
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": "kfdeploy-site-params",
                "annotations": {"config.kubernetes.io/local-config": "true"},
            },
            "data": PARAMS,
        },
    )
    return tmp_path


def build(work: Path, name: str, resources: list[str], components: list[str]) -> list[Obj]:
    _write(
        work / name / "kustomization.yaml",
        {
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "resources": [*resources, "../params"],
            "components": [f"../overlays/{c}" for c in components],
        },
    )
    kz = kustomize.find_kustomize()
    return kustomize.to_objects(kz, kustomize.build(kz, work / name))


def find(objs: list[Obj], kind: str, name: str) -> Obj:
    return next(o for o in objs if o["kind"] == kind and o["metadata"]["name"].startswith(name))


@pytest.mark.parametrize("release", ["r26", "r111"])
def test_sim_removes_webhooks_and_conversion(work: Path, release: str) -> None:
    objs = build(
        work, "pvc", [f"../{release}/applications/pvcviewer-controller/upstream/base"], ["sim"]
    )
    kinds = {o["kind"] for o in objs}
    assert not kinds & {"MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"}
    crd = find(objs, "CustomResourceDefinition", "pvcviewers.kubeflow.org")
    assert crd["spec"]["conversion"] == {"strategy": "None"}
    assert "cert-manager.io/inject-ca-from" not in crd["metadata"].get("annotations", {})
    # the rest is untouched: the controller still runs (it serves no webhooks in the simulation)
    assert find(objs, "Deployment", "pvcviewer-controller-manager")


def test_sim_removes_apiservices_and_keeps_unrelated_objects(work: Path) -> None:
    _write(
        work / "fx" / "res.yaml",
        [
            {
                "apiVersion": "apiregistration.k8s.io/v1",
                "kind": "APIService",
                "metadata": {"name": "v1beta1.metrics.k8s.io"},
                "spec": {
                    "service": {"name": "metrics-server", "namespace": "kube-system"},
                    "group": "metrics.k8s.io",
                    "version": "v1beta1",
                    "groupPriorityMinimum": 100,
                    "versionPriority": 100,
                },
            },
            {
                "apiVersion": "apiextensions.k8s.io/v1",
                "kind": "CustomResourceDefinition",
                "metadata": {"name": "as.x.io"},
                "spec": {
                    "group": "x.io",
                    "names": {"kind": "A", "plural": "as"},
                    "scope": "Namespaced",
                    "versions": [],
                },
            },
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "keep", "namespace": "x"},
            },
        ],
    )
    _write(work / "fx" / "kustomization.yaml", {"resources": ["res.yaml"]})
    objs = build(work, "b", ["../fx"], ["sim"])
    assert sorted(o["kind"] for o in objs) == ["ConfigMap", "CustomResourceDefinition"]
    assert find(objs, "CustomResourceDefinition", "as.x.io")["spec"]["conversion"] == {
        "strategy": "None"
    }


@pytest.mark.parametrize("release", ["r26", "r111"])
def test_sso_points_oauth2_proxy_and_istio_at_the_issuer(work: Path, release: str) -> None:
    objs = build(work, "o2p", [f"../{release}/common/oauth2-proxy/overlays/m2m-dex-only"], ["sso"])
    dep = find(objs, "Deployment", "oauth2-proxy")
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}
    assert env["OAUTH2_PROXY_OIDC_ISSUER_URL"] == PARAMS["sso-issuer"]
    assert env["OAUTH2_PROXY_CLIENT_ID"] == "kubeflow-ml"
    assert env["OAUTH2_PROXY_REDIRECT_URL"] == "https://ml.cern.ch/oauth2/callback"
    assert env["OAUTH2_PROXY_LOGIN_URL"].endswith("/protocol/openid-connect/auth")
    assert env["OAUTH2_PROXY_REDEEM_URL"].endswith("/protocol/openid-connect/token")
    assert env["OAUTH2_PROXY_OIDC_JWKS_URL"].endswith("/protocol/openid-connect/certs")
    assert env["OAUTH2_PROXY_SCOPE"] == "openid email profile"
    assert env["OAUTH2_PROXY_OIDC_GROUPS_CLAIM"] == "cern_roles"
    assert env["OAUTH2_PROXY_PROMPT"] == "login"
    # the client secret still comes from the Secret (a placeholder after kfdeploy render)
    assert "secretKeyRef" in env["OAUTH2_PROXY_CLIENT_SECRET"]
    assert not any("from-site-params" in str(v) for v in env.values())
    params = find(objs, "ConfigMap", "oauth2-proxy-parameters")
    assert params["data"]["FORCE_HTTPS"] == "true"
    assert params["data"]["ALLOW_SELF_SIGNED_ISSUER"] == "false"
    # the Deployment refers to the patched ConfigMap (kustomize re-hashed its name)
    refs = {
        e["valueFrom"]["configMapKeyRef"]["name"]
        for e in container["env"]
        if "configMapKeyRef" in e.get("valueFrom", {})
    }
    assert refs == {params["metadata"]["name"]}
    ra = find(objs, "RequestAuthentication", "dex-jwt")
    (rule,) = ra["spec"]["jwtRules"]
    assert rule["issuer"] == PARAMS["sso-issuer"]
    assert rule["jwksUri"] == PARAMS["sso-jwks-url"]
    assert rule["audiences"] == ["kubeflow-ml"]
    claims = {h["header"]: h["claim"] for h in rule["outputClaimToHeaders"]}
    assert claims == {"kubeflow-userid": "email", "kubeflow-groups": "cern_roles"}


def test_storage_class_on_every_claim(work: Path) -> None:
    _write(
        work / "fx" / "res.yaml",
        [
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": "a", "namespace": "x"},
                "spec": {
                    "accessModes": ["ReadWriteOnce"],
                    "resources": {"requests": {"storage": "1Gi"}},
                },
            },
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": "b", "namespace": "x"},
                "spec": {"storageClassName": "old", "resources": {"requests": {"storage": "1Gi"}}},
            },
        ],
    )
    _write(work / "fx" / "kustomization.yaml", {"resources": ["res.yaml"]})
    objs = build(work, "b", ["../fx"], ["storage-class"])
    assert [o["spec"]["storageClassName"] for o in objs] == ["geneva-cephfs", "geneva-cephfs"]
    # upstream: Katib's MySQL claim
    katib = build(
        work,
        "k",
        ["../r26/applications/katib/upstream/installs/katib-with-kubeflow"],
        ["storage-class"],
    )
    assert (
        find(katib, "PersistentVolumeClaim", "katib-mysql")["spec"]["storageClassName"]
        == "geneva-cephfs"
    )


def test_gpu_device_plugin(work: Path) -> None:
    _write(work / "fx" / "kustomization.yaml", {"resources": []})
    objs = build(work, "b", ["../fx"], ["gpu"])
    (ds,) = objs
    assert (ds["kind"], ds["metadata"]["namespace"], ds["metadata"]["name"]) == (
        "DaemonSet",
        "kube-system",
        "nvidia-device-plugin-daemonset",
    )
    spec = ds["spec"]["template"]["spec"]
    assert spec["containers"][0]["image"] == PARAMS["gpu-device-plugin-image"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec[
        "tolerations"
    ]
    assert spec["priorityClassName"] == "system-node-critical"


# Deployments the production-sizing Component patches, with the release paths that hold them.
SIZED = {
    "cert-manager": "common/cert-manager/base",
    "oauth2-proxy": "common/oauth2-proxy/overlays/m2m-dex-only",
    "centraldashboard": "applications/centraldashboard/overlays/oauth2-proxy",
    "profiles": "applications/profiles/pss",
    "katib": "applications/katib/upstream/installs/katib-with-kubeflow",
}


@pytest.mark.parametrize("release", ["r26", "r111"])
@pytest.mark.parametrize("component", sorted(SIZED))
def test_production_sizing_adds_requests_never_containers(
    work: Path, release: str, component: str
) -> None:
    path = SIZED[component]
    if release == "r26" and component == "cert-manager":
        path = "common/cert-manager/overlays/kubeflow"
    plain = build(work, "plain", [f"../{release}/{path}"], [])
    sized = build(work, "sized", [f"../{release}/{path}"], ["production-sizing"])
    patched = _patched_deployments()

    def containers(objs: list[Obj]) -> dict[str, list[str]]:
        return {
            o["metadata"]["name"]: [c["name"] for c in o["spec"]["template"]["spec"]["containers"]]
            for o in objs
            if o["kind"] == "Deployment"
        }

    assert containers(sized) == containers(plain)
    hit = 0
    for o in sized:
        if o["kind"] != "Deployment":
            continue
        for c in o["spec"]["template"]["spec"]["containers"]:
            assert c.get("image"), (
                f"{o['metadata']['name']}/{c['name']} has no image: a patch added a container"
            )
            if (o["metadata"]["name"], c["name"]) in patched:
                assert c["resources"]["requests"]["cpu"] and c["resources"]["requests"]["memory"]
                hit += 1
    assert hit, f"no patched deployment in {component}: patch names out of date"


def _patched_deployments() -> set[tuple[str, str]]:
    kust = yaml.safe_load((overlays_dir() / "production-sizing" / "kustomization.yaml").read_text())
    out = set()
    for p in kust["patches"]:
        patch = yaml.safe_load(p["patch"])
        for c in patch["spec"]["template"]["spec"]["containers"]:
            out.add((p["target"]["name"], c["name"]))
    return out


def test_readme_example_builds(work: Path) -> None:
    """overlays/README.md's by-hand example, exactly as written."""
    text = README.read_text(encoding="utf-8")
    blocks = re.findall(r"```yaml\n(.*?)```", text, re.S)
    params = next(b for b in blocks if "kfdeploy-site-params" in b)
    kust = next(b for b in blocks if "kind: Kustomization" in b)
    _write(work / "params" / "site-params.yaml", params)
    (work / "release").symlink_to(work / "r26")
    _write(work / "oauth2-proxy" / "kustomization.yaml", kust)
    kz = kustomize.find_kustomize()
    objs = kustomize.to_objects(kz, kustomize.build(kz, work / "oauth2-proxy"))
    ra = find(objs, "RequestAuthentication", "dex-jwt")
    assert ra["spec"]["jwtRules"][0]["issuer"] == "https://auth.cern.ch/auth/realms/cern"
    assert not any(
        o["kind"] == "ConfigMap" and o["metadata"]["name"] == "kfdeploy-site-params" for o in objs
    )


def test_every_overlay_is_a_component() -> None:
    for folder in sorted(p for p in overlays_dir().iterdir() if p.is_dir()):
        kust = folder / "kustomization.yaml"
        if folder.name == "registry-mirror":
            assert not kust.exists() and (folder / "README.md").is_file()
            continue
        data = yaml.safe_load(kust.read_text())
        assert (data["apiVersion"], data["kind"]) == (
            "kustomize.config.k8s.io/v1alpha1",
            "Component",
        ), folder
        assert kust.read_text().startswith("# "), (
            f"{folder.name}: explain the overlay in a header comment"
        )

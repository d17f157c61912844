"""Every shipped environment renders both pinned releases with the real kustomize, with zero
validation errors, and its object counts are upstream's figures plus the differences its
overlays make, each explained here.

Rendering one environment takes 5-30 s (more on a busy machine), so each (environment, release)
is rendered once per module into a session cache (KFDEPLOY_CACHE points at a temporary folder)
and every test reads the result.
"""

from __future__ import annotations

import base64
import json
import os
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from kfdeploy.config.load import list_environments, load_environment
from kfdeploy.config.model import Environment
from kfdeploy.render.engine import RenderResult, render
from kfdeploy.render.images import collect_images, mirror_reference
from kfdeploy.render.objects import RenderedObject
from kfdeploy.render.release import load_pin
from kfdeploy.render.secrets import MemoryGeneratedSecrets, placeholders_in, resolve_secrets
from kfdeploy.render.validate import DEFAULT_SECRET_VALUES

pytestmark = [pytest.mark.slow]

MANIFESTS = Path(
    os.environ.get("KFDEPLOY_MANIFESTS")
    or Path(__file__).resolve().parents[2].parent / "shared" / "kubeflow-manifests"
)
RELEASES = ("26.03", "v1.11.0")
ENVS = ("local", "cern-staging", "cern-prod", "burst-public")

# Upstream, per component, before any site overlay (kfdeploy's per-component build of the
# release's example/). 26.03 sums to upstream's 675. v1.11.0 sums to 652, one below upstream's
# 653: the example also emits user-namespace's generator ConfigMap `default-install-config-*`
# with no namespace (it only fed replacements that v1.11.0 gets wrong); kfdeploy's fix
# manifests/fixes/v1.11-user-namespace drops it and names the Profile properly.
UPSTREAM: dict[str, dict[str, int]] = {
    "26.03": {
        "cert-manager": 52, "istio": 56, "oauth2-proxy": 14, "dex": 13, "knative-serving": 89,
        "kubeflow-namespace": 27, "kubeflow-roles": 6, "kubeflow-istio-resources": 4, "pipelines": 133,
        "katib": 30, "centraldashboard": 11, "admission-webhook": 12, "jupyter-web-app": 16,
        "notebook-controller": 12, "profiles": 11, "pvcviewer-controller": 16, "volumes-web-app": 13,
        "tensorboard-controller": 12, "tensorboards-web-app": 12, "trainer": 39, "user-namespace": 1,
        "kserve": 67, "models-web-app": 8, "spark-operator": 21,
    },
    "v1.11.0": {
        "cert-manager": 50, "istio": 52, "oauth2-proxy": 12, "dex": 11, "knative-serving": 85,
        "kubeflow-namespace": 2, "kubeflow-roles": 6, "kubeflow-istio-resources": 4, "networkpolicies": 32,
        "pipelines": 131, "katib": 30, "centraldashboard": 11, "admission-webhook": 12,
        "jupyter-web-app": 16, "notebook-controller": 12, "profiles": 11, "pvcviewer-controller": 16,
        "volumes-web-app": 13, "tensorboard-controller": 12, "tensorboards-web-app": 12, "trainer": 39,
        "user-namespace": 1, "kserve": 53, "models-web-app": 8, "spark-operator": 21,
    },
}  # fmt: skip
UPSTREAM_EXAMPLE_GAP = {"26.03": 0, "v1.11.0": 1}

# Webhook configurations (mutating + validating) per component: what `sim` deletes. 26.03: 28
# (11 mutating, 17 validating), v1.11.0: 27 (KServe has one validating webhook fewer).
WEBHOOK_CONFIGS: dict[str, dict[str, int]] = {
    "26.03": {"admission-webhook": 1, "cert-manager": 2, "istio": 2, "katib": 2, "knative-serving": 5,
              "kserve": 8, "pipelines": 1, "pvcviewer-controller": 2, "spark-operator": 2, "trainer": 3},
    "v1.11.0": {"admission-webhook": 1, "cert-manager": 2, "istio": 2, "katib": 2, "knative-serving": 5,
                "kserve": 7, "pipelines": 1, "pvcviewer-controller": 2, "spark-operator": 2, "trainer": 3},
}  # fmt: skip


# The totals that follow from the tables above, written out so a change shows in review.
TOTALS = {
    ("local", "26.03"): 675 - 28,  # sim: webhook configurations
    ("local", "v1.11.0"): 652 - 27,
    ("cern-staging", "26.03"): 675 - 13,  # sso: no dex component
    ("cern-staging", "v1.11.0"): 652 - 11,
    ("cern-prod", "26.03"): 675 - 13 + 7,  # sso, + 7 PDBs of production-sizing
    ("cern-prod", "v1.11.0"): 652 - 11 + 7,
    # 7 components (cert-manager, istio, oauth2-proxy, knative-serving, kubeflow-namespace,
    # trainer, kserve) + the device plugin DaemonSet
    ("burst-public", "26.03"): 52 + 56 + 14 + 89 + 27 + 39 + 67 + 1,
    ("burst-public", "v1.11.0"): 50 + 52 + 12 + 85 + 2 + 39 + 53 + 1,
}


def expected_counts(env: Environment, release: str) -> dict[str, int]:
    """Upstream's per-component counts with each overlay's difference applied."""
    base = UPSTREAM[release]
    chosen = list(base) if env.kubeflow.components == "all" else list(env.kubeflow.components)
    # sso: `dex` is left out of every SSO environment (its static user and default client secret
    # must not reach a CERN cluster); kfdeploy refuses a render with both.
    counts = {c: base[c] for c in base if c in chosen and c not in env.kubeflow.exclude}
    ov = env.overlays
    if ov.sim is not None:
        # sim: every Mutating/ValidatingWebhookConfiguration deleted (-28 / -27); CRD conversion
        # set to None changes objects, not counts; upstream has no APIService.
        for c, n in WEBHOOK_CONFIGS[release].items():
            if c in counts:
                counts[c] -= n
    if ov.gpu is not None and ov.gpu.device_plugin:
        # gpu: +1 DaemonSet (kube-system/nvidia-device-plugin-daemonset) in the first component.
        counts[next(iter(counts))] += 1
    if ov.production_sizing is not None:
        # production-sizing: +1 PodDisruptionBudget per HA Deployment, in that Deployment's
        # component (knative's activator/webhook already have PDBs and are not in the list).
        home = {"istio-ingressgateway": "istio", "istiod": "istio", "oauth2-proxy": "oauth2-proxy",
                "ml-pipeline": "pipelines", "ml-pipeline-ui": "pipelines",
                "centraldashboard": "centraldashboard", "profiles-deployment": "profiles"}  # fmt: skip
        if ov.production_sizing.replicas >= 2:
            for d in ov.production_sizing.ha_deployments:
                if home[d] in counts:
                    counts[home[d]] += 1
    # storage-class, registry-mirror and secrets change objects, never counts.
    return counts


def _with_release(env: Environment, release: str) -> Environment:
    return env.model_copy(update={"kubeflow": env.kubeflow.model_copy(update={"release": release})})


@pytest.fixture(scope="module")
def cache(isolated_cache: Path) -> Path:
    return isolated_cache


_results: dict[tuple[str, str], RenderResult] = {}


@pytest.fixture(scope="module")
def rendered(cache: Path) -> Any:
    def get(name: str, release: str) -> RenderResult:
        if (name, release) not in _results:
            env = _with_release(load_environment(name).env, release)
            _results[(name, release)] = render(env, manifests_dir=MANIFESTS)
        return _results[(name, release)]

    return get


CASES = [pytest.param(e, r, id=f"{e}-{r}") for e in ENVS for r in RELEASES]


def test_every_shipped_environment_is_covered() -> None:
    assert sorted(p.stem for p in list_environments()) == sorted(ENVS)


@pytest.mark.parametrize("release", RELEASES)
def test_upstream_figures(release: str) -> None:
    pin = load_pin(release)
    assert sum(UPSTREAM[release].values()) + UPSTREAM_EXAMPLE_GAP[release] == pin.example_objects
    assert sorted(UPSTREAM[release]) == sorted(c.name for c in pin.components)


@pytest.mark.parametrize(("name", "release"), CASES)
def test_renders_without_errors_and_counts_are_explained(
    rendered: Any, name: str, release: str
) -> None:
    result = rendered(name, release)
    errors = [f for f in result.findings if f["severity"] == "error"]
    assert not errors, "\n".join(json.dumps(f) for f in errors)
    expected = expected_counts(result.env, release)
    assert result.counts == expected
    assert len(result.objects) == sum(expected.values()) == TOTALS[(name, release)]
    for o in result.objects:
        ps = o.obj.get("spec", {}).get("template", {}).get("spec")
        if o.kind in ("Deployment", "StatefulSet", "DaemonSet") and isinstance(ps, dict):
            # a strategic merge patch naming a missing container would add one without an image
            assert all(c.get("image") for c in ps["containers"]), o


@pytest.mark.parametrize("release", RELEASES)
def test_sim_leaves_nothing_that_dials_a_webhook(rendered: Any, release: str) -> None:
    objs = rendered("local", release).objects
    kinds = Counter(o.kind for o in objs)
    assert kinds["MutatingWebhookConfiguration"] == kinds["ValidatingWebhookConfiguration"] == 0
    assert kinds["APIService"] == 0
    for o in objs:
        if o.kind == "CustomResourceDefinition":
            assert o.obj["spec"].get("conversion", {"strategy": "None"}) == {"strategy": "None"}, o
            assert "cert-manager.io/inject-ca-from" not in o.obj["metadata"].get(
                "annotations", {}
            ), o
    assert "Webhook" not in json.dumps(
        [o.obj["spec"].get("conversion") for o in objs if o.kind == "CustomResourceDefinition"]
    )


@pytest.mark.parametrize("release", RELEASES)
def test_sso_uses_cern_keycloak(rendered: Any, release: str) -> None:
    result = rendered("cern-prod", release)
    objs = result.objects
    assert not [o for o in objs if o.namespace == "auth" or o.component == "dex"]
    ra = _one(objs, "RequestAuthentication", "dex-jwt")
    (rule,) = ra["spec"]["jwtRules"]
    assert rule["issuer"] == "https://auth.cern.ch/auth/realms/cern"
    assert rule["audiences"] == ["kubeflow-ml"]
    dep = _one(objs, "Deployment", "oauth2-proxy")
    env = {
        e["name"]: e.get("value") for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["OAUTH2_PROXY_OIDC_ISSUER_URL"] == "https://auth.cern.ch/auth/realms/cern"
    assert env["OAUTH2_PROXY_REDIRECT_URL"] == "https://ml.cern.ch/oauth2/callback"
    assert env["OAUTH2_PROXY_CLIENT_ID"] == "kubeflow-ml"


@pytest.mark.parametrize(
    ("name", "release"), [("cern-prod", r) for r in RELEASES] + [("burst-public", "26.03")]
)
def test_registry_mirror_rewrites_every_image(rendered: Any, name: str, release: str) -> None:
    result = rendered(name, release)
    mirror = result.env.overlays.registry_mirror
    assert mirror is not None
    refs = collect_images(result.objects)
    assert len(refs) >= (100 if name != "burst-public" else 40)
    for r in refs:
        assert r.image.startswith(mirror.prefix + "/"), r
        assert r.image == mirror_reference(r.source, mirror.prefix, mirror.keep_registry_host), r
    sources = {r.source for r in refs}
    if name == "cern-prod":
        # images named only inside ConfigMaps or env values are in the list too
        assert any(s.startswith("ghcr.io/kubeflow/katib/suggestion-") for s in sources)
        assert "kserve/agent:v0.15.2" in sources or "kserve/agent:v0.16.0" in sources
        assert any(s.startswith("ghcr.io/kubeflow/kfp-launcher:") for s in sources)
        assert any(s.startswith("gcr.io/istio-release/proxyv2:") for s in sources)
        assert any("notebook-servers/jupyter-scipy" in s for s in sources)
        katib = _one(result.objects, "ConfigMap", "katib-config")
        assert "ghcr.io/kubeflow" not in katib["data"]["katib-config.yaml"].replace(
            mirror.prefix + "/ghcr.io", ""
        )


@pytest.mark.parametrize(
    ("name", "release"), [("cern-staging", "26.03"), ("burst-public", "v1.11.0")]
)
def test_storage_class_on_every_claim(rendered: Any, name: str, release: str) -> None:
    result = rendered(name, release)
    sc = result.env.overlays.storage_class
    assert sc is not None
    claims = 0
    for o in result.objects:
        if o.kind == "PersistentVolumeClaim":
            assert o.obj["spec"]["storageClassName"] == sc.name
            claims += 1
        if o.kind == "StatefulSet":
            for t in o.obj["spec"].get("volumeClaimTemplates") or []:
                assert t["spec"]["storageClassName"] == sc.name
    assert claims == (3 if name == "cern-staging" else 0)


@pytest.mark.parametrize("release", RELEASES)
def test_gpu_plumbing(rendered: Any, release: str) -> None:
    burst = rendered("burst-public", release)
    (ds,) = [
        o
        for o in burst.objects
        if o.kind == "DaemonSet" and o.name == "nvidia-device-plugin-daemonset"
    ]
    assert (ds.component, ds.namespace) == ("cert-manager", "kube-system")
    spec = ds.obj["spec"]["template"]["spec"]
    assert spec["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-l4"}
    assert (
        spec["containers"][0]["image"]
        == "registry.cern.ch/kubeflow/nvcr.io/nvidia/k8s-device-plugin:v0.17.1"
    )
    tol = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    runtimes = [o for o in burst.objects if o.kind == "ClusterTrainingRuntime"]
    assert runtimes
    for rt in runtimes:
        for rj in rt.obj["spec"]["template"]["spec"]["replicatedJobs"]:
            if rj["name"] == "node":
                assert tol in rj["template"]["spec"]["template"]["spec"]["tolerations"], rt
    cern = rendered("cern-staging", release)
    assert not [
        o for o in cern.objects if o.name == "nvidia-device-plugin-daemonset"
    ]  # GPU operator's
    cm = next(
        o.obj
        for o in cern.objects
        if o.kind == "ConfigMap" and o.name.startswith("jupyter-web-app-config")
    )
    cfg = yaml.safe_load(cm["data"]["spawner_ui_config.yaml"])["spawnerFormDefaults"]
    assert cfg["gpus"]["value"]["vendors"] == [
        {"limitsKey": "nvidia.com/gpu", "uiName": "NVIDIA GPU"}
    ]
    assert cfg["tolerationGroup"]["options"][-1]["tolerations"] == [tol]


@pytest.mark.parametrize("release", RELEASES)
def test_production_sizing(rendered: Any, release: str) -> None:
    result = rendered("cern-prod", release)
    sizing = result.env.overlays.production_sizing
    assert sizing is not None
    for d in sizing.ha_deployments:
        assert _one(result.objects, "Deployment", d)["spec"]["replicas"] == sizing.replicas
        assert _one(result.objects, "PodDisruptionBudget", d)["spec"]["minAvailable"] == 1
    assert (
        _one(result.objects, "HorizontalPodAutoscaler", "istio-ingressgateway")["spec"][
            "minReplicas"
        ]
        == 3
    )
    cm = _one(result.objects, "Deployment", "cert-manager")["spec"]["template"]["spec"][
        "containers"
    ][0]
    assert cm["resources"]["requests"] == {"cpu": "50m", "memory": "128Mi"}


@pytest.mark.parametrize(
    ("name", "release"), [(e, r) for e in ENVS if e != "local" for r in RELEASES]
)
def test_no_default_credentials_in_output_and_placeholders_resolve(
    rendered: Any, name: str, release: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    result = rendered(name, release)
    env = result.env
    text = "".join(result.component_file(c).read_text() for c in result.components)
    for value in DEFAULT_SECRET_VALUES:
        if len(value) > 8:
            assert value not in text and base64.b64encode(value.encode()).decode() not in text
    objs = [o.obj for o in result.objects]
    names = placeholders_in(objs)
    assert names and names <= set(env.secrets)
    # apply time: every source provides a value, nothing is left
    for n, src in env.secrets.items():
        if src.env:
            monkeypatch.setenv(src.env, f"value-of-{n}-0123456789abcdef"[:32])
        if src.file:
            f = tmp_path / n
            f.write_text(f"file-{n}-0123456789abcdef0123456789"[:32] + "\n")
    env = env.model_copy(
        update={"secrets": {n: (s.model_copy(update={"file": str(tmp_path / n)}) if s.file else s)
                            for n, s in env.secrets.items()}}
    )  # fmt: skip
    out = resolve_secrets(objs, env, MemoryGeneratedSecrets())
    assert placeholders_in(out) == set()
    assert "kfdeploy-secret:" not in json.dumps(out)


def _one(objs: list[RenderedObject], kind: str, name: str) -> dict[str, Any]:
    """The object of that kind named `name` (plus a generator hash suffix for ConfigMaps and
    Secrets: `cert-manager-cainjector` must not match `cert-manager`)."""
    suffix = r"(-[a-z0-9]{10})?" if kind in ("ConfigMap", "Secret") else ""
    pattern = re.compile(rf"^{re.escape(name)}{suffix}$")
    (o,) = [x.obj for x in objs if x.kind == kind and pattern.match(x.name)]
    return o


@pytest.mark.parametrize(
    ("name", "release"),
    [
        pytest.param("local", "26.03", id="local-26.03"),
        pytest.param("cern-prod", "26.03", id="cern-prod-26.03"),
        pytest.param("burst-public", "v1.11.0", id="burst-public-v1.11.0"),
    ],
)
def test_schema_elision_changes_nothing(rendered: Any, name: str, release: str) -> None:
    """The default render (CRD schemas elided from kustomize's input and put back after) gives
    exactly what building from the release as it is gives: every object, every finding, and
    every component file parsed. notebook-controller's JSON patches into its CRD's schema make
    that CRD one of those built as released."""
    elided = rendered(name, release)
    env = _with_release(load_environment(name).env, release)
    plain = render(env, manifests_dir=MANIFESTS, elide_schemas=False)
    assert plain.key != elided.key
    assert [(o.component, o.obj) for o in elided.objects] == [
        (o.component, o.obj) for o in plain.objects
    ]
    assert elided.findings == plain.findings
    for c in elided.components:
        text = elided.component_file(c).read_text()
        assert "x-kfdeploy-elided" not in text
        assert list(yaml.load_all(text, Loader=yaml.CSafeLoader)) == list(
            yaml.load_all(plain.component_file(c).read_text(), Loader=yaml.CSafeLoader)
        ), c
    crds = [o for o in elided.objects if o.kind == "CustomResourceDefinition"]
    assert crds and all("openAPIV3Schema" in json.dumps(o.obj) for o in crds)

"""The Python side of the overlays: parameters, which Components go where, and the rewrites."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from kfdeploy.config.load import load_environment
from kfdeploy.config.model import Environment, GpuOverlay
from kfdeploy.render import overlays
from kfdeploy.render.overlays import kustomize_components, site_params, spawner_config, transform

Obj = dict[str, Any]


def _env(overlays_: dict[str, Any], **extra: Any) -> Environment:
    return Environment.model_validate(
        {
            "name": "t",
            "kubeflow": {"release": "26.03", **extra.pop("kubeflow", {})},
            "overlays": overlays_,
            "cluster": {"provider": "kubeconfig", "kubeconfig": "/dev/null"},
            **extra,
        }
    )


SSO = {
    "issuer": "https://auth.cern.ch/auth/realms/cern/",
    "client_id": "kubeflow-ml",
    "groups_claim": "cern_roles",
}


def test_site_params_for_sso() -> None:
    p = site_params(
        _env({"sso": SSO}, site={"domain": "ml.cern.ch"}, kubeflow={"exclude": ["dex"]})
    )
    assert p["sso-issuer"] == "https://auth.cern.ch/auth/realms/cern"  # trailing slash dropped
    assert p["sso-redirect-url"] == "https://ml.cern.ch/oauth2/callback"
    assert (
        p["sso-jwks-url"] == "https://auth.cern.ch/auth/realms/cern/protocol/openid-connect/certs"
    )
    assert p["sso-scope"] == "openid email profile"
    assert p["sso-groups-claim"] == "cern_roles"
    assert all(isinstance(v, str) for v in p.values())


def test_sso_needs_a_domain() -> None:
    # Refused when the file loads (the render-time check in site_params stays as a second line).
    with pytest.raises(ValidationError, match=r"overlays\.sso needs site\.domain"):
        _env({"sso": SSO}, kubeflow={"exclude": ["dex"]})


def test_sso_refuses_dex() -> None:
    with pytest.raises(ValidationError, match=r"overlays\.sso replaces Dex"):
        _env({"sso": SSO}, site={"domain": "ml.cern.ch"})


def test_patch_only_overlays_go_everywhere_device_plugin_once() -> None:
    env = _env(
        {
            "sim": {},
            "storage-class": {"name": "x"},
            "gpu": {"device_plugin": True},
            "production-sizing": {},
            "registry-mirror": {"prefix": "r.example.org/m"},
        },
        kubeflow={"components": ["istio", "cert-manager", "kserve"]},
    )
    # release order, not the order the environment lists them: cert-manager comes first
    assert kustomize_components(env, "cert-manager") == [
        "sim",
        "storage-class",
        "gpu",
        "production-sizing",
    ]
    assert kustomize_components(env, "kserve") == ["sim", "storage-class", "production-sizing"]
    off = _env({"gpu": {"device_plugin": False}, "sim": {"remove_webhooks": False}})
    assert kustomize_components(off, "cert-manager") == []


def _deploy(name: str, replicas: int | None = None, ns: str = "kubeflow") -> Obj:
    spec: Obj = {
        "selector": {"matchLabels": {"app": name}},
        "template": {
            "metadata": {"labels": {"app": name}},
            "spec": {"containers": [{"name": "c", "image": "x.io/a:1"}]},
        },
    }
    if replicas is not None:
        spec["replicas"] = replicas
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": name}},
        "spec": spec,
    }


def test_production_sizing_replicas_hpa_and_pdbs() -> None:
    env = _env(
        {
            "production-sizing": {
                "replicas": 3,
                "ha_deployments": ["istio-ingressgateway", "ml-pipeline", "gone"],
            }
        }
    )
    objs = [
        _deploy("istio-ingressgateway", ns="istio-system"),
        {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "istio-ingressgateway", "namespace": "istio-system"},
            "spec": {"minReplicas": 1, "maxReplicas": 2},
        },
        _deploy("ml-pipeline"),
        # an existing PDB for ml-pipeline's selector: not duplicated
        {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": {"name": "mine", "namespace": "kubeflow"},
            "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "ml-pipeline"}}},
        },
        _deploy("other", replicas=1),
    ]
    out = transform(env, "x", objs)
    by = {(o["kind"], o["metadata"]["name"]): o for o in out}
    assert by[("Deployment", "istio-ingressgateway")]["spec"]["replicas"] == 3
    assert by[("Deployment", "ml-pipeline")]["spec"]["replicas"] == 3
    assert by[("Deployment", "other")]["spec"]["replicas"] == 1
    assert by[("HorizontalPodAutoscaler", "istio-ingressgateway")]["spec"] == {
        "minReplicas": 3,
        "maxReplicas": 3,
    }
    pdbs = [o for o in out if o["kind"] == "PodDisruptionBudget"]
    assert len(pdbs) == 2
    pdb = by[("PodDisruptionBudget", "istio-ingressgateway")]
    assert pdb["metadata"]["namespace"] == "istio-system"
    assert pdb["spec"] == {
        "minAvailable": 1,
        "selector": {"matchLabels": {"app": "istio-ingressgateway"}},
    }


def test_production_sizing_single_replica_gets_no_pdb() -> None:
    # a PDB with minAvailable 1 over one replica would block every node drain
    env = _env({"production-sizing": {"replicas": 1, "ha_deployments": ["a"]}})
    out = transform(env, "x", [_deploy("a")])
    assert [o["kind"] for o in out] == ["Deployment"]


def test_storage_class_on_statefulset_claim_templates() -> None:
    env = _env({"storage-class": {"name": "geneva-cephfs"}})
    sts = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": "s", "namespace": "n"},
        "spec": {
            "volumeClaimTemplates": [
                {"metadata": {"name": "d"}, "spec": {}},
                {"metadata": {"name": "e"}, "spec": {"storageClassName": "old"}},
            ]
        },
    }
    empty = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": "m", "namespace": "n"},
        "spec": {"volumeClaimTemplates": []},
    }
    out = transform(env, "x", [sts, empty])
    assert [t["spec"]["storageClassName"] for t in out[0]["spec"]["volumeClaimTemplates"]] == [
        "geneva-cephfs"
    ] * 2
    assert out[1]["spec"]["volumeClaimTemplates"] == []


UPSTREAM_SPAWNER = """\
spawnerFormDefaults:
  image:
    value: ghcr.io/kubeflow/kubeflow/notebook-servers/jupyter-scipy:v1.10.0
  gpus:
    readOnly: false
    # configs for gpu/device-plugin limits of the container
    value:
      vendor: ""
      vendors:
      - limitsKey: "nvidia.com/gpu"
        uiName: "NVIDIA"
      - limitsKey: "amd.com/gpu"
        uiName: "AMD"
      num: "none"
  affinityConfig:
    readOnly: false
    value: ""
    options: []
  tolerationGroup:
    readOnly: false
    value: ""
    options: []
"""


def test_spawner_config_offers_gpu_nodes() -> None:
    gpu = GpuOverlay(
        node_selector={"nvidia.com/gpu.present": "true"},
        tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    )
    cfg = yaml.safe_load(spawner_config(UPSTREAM_SPAWNER, gpu))["spawnerFormDefaults"]
    assert cfg["gpus"]["value"]["vendors"] == [
        {"limitsKey": "nvidia.com/gpu", "uiName": "NVIDIA GPU"}
    ]
    assert cfg["gpus"]["value"]["vendor"] == "nvidia.com/gpu"
    assert cfg["gpus"]["value"]["num"] == "none"  # a GPU stays opt-in
    (group,) = cfg["tolerationGroup"]["options"]
    assert group["groupKey"] == "gpu-nodes" and group["tolerations"] == gpu.tolerations
    (aff,) = cfg["affinityConfig"]["options"]
    terms = aff["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    assert terms == [
        {
            "matchExpressions": [
                {"key": "nvidia.com/gpu.present", "operator": "In", "values": ["true"]}
            ]
        }
    ]
    # the rest of upstream's config survives, and applying twice changes nothing
    assert cfg["image"]["value"].endswith("jupyter-scipy:v1.10.0")
    again = spawner_config(spawner_config(UPSTREAM_SPAWNER, gpu), gpu)
    assert again == spawner_config(UPSTREAM_SPAWNER, gpu)


def test_gpu_device_plugin_and_trainer_runtimes() -> None:
    env = _env(
        {
            "gpu": {
                "node_selector": {"kfdeploy/gpu": "yes"},
                "tolerations": [
                    {"key": "gpu", "operator": "Equal", "value": "a100", "effect": "NoSchedule"}
                ],
            }
        }
    )
    ds = {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": "nvidia-device-plugin-daemonset", "namespace": "kube-system"},
        "spec": {
            "template": {
                "spec": {
                    "nodeSelector": {"nvidia.com/gpu.present": "true"},
                    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}],
                    "containers": [{"name": "c", "image": "x.io/a:1"}],
                }
            }
        },
    }

    def job(name: str) -> Obj:
        return {
            "name": name,
            "template": {"spec": {"template": {"spec": {"containers": [{"name": name}]}}}},
        }

    ctr = {
        "apiVersion": "trainer.kubeflow.org/v1alpha1",
        "kind": "ClusterTrainingRuntime",
        "metadata": {"name": "torch-distributed"},
        "spec": {
            "template": {"spec": {"replicatedJobs": [job("dataset-initializer"), job("node")]}}
        },
    }
    out = transform(env, "trainer", [ds, copy.deepcopy(ctr)])
    spec = out[0]["spec"]["template"]["spec"]
    assert spec["nodeSelector"] == {"kfdeploy/gpu": "yes"}
    assert spec["tolerations"] == [
        {"key": "gpu", "operator": "Equal", "value": "a100", "effect": "NoSchedule"}
    ]
    jobs = out[1]["spec"]["template"]["spec"]["replicatedJobs"]
    assert "tolerations" not in jobs[0]["template"]["spec"]["template"]["spec"]
    assert jobs[1]["template"]["spec"]["template"]["spec"]["tolerations"] == spec["tolerations"]


def test_render_settings_include_the_transform_code() -> None:
    env = _env({})
    a = overlays.render_settings(env)
    assert "transform_code" in a and a == overlays.render_settings(env)


@pytest.mark.parametrize("name", ["local", "cern-staging", "cern-prod", "burst-public"])
def test_shipped_environments_load_and_make_params(name: str) -> None:
    env = load_environment(name).env
    params = site_params(env)
    if env.overlays.sso is not None:
        assert params["sso-issuer"] == "https://auth.cern.ch/auth/realms/cern"
        components = env.kubeflow.components
        assert "dex" in env.kubeflow.exclude or (components != "all" and "dex" not in components)
    if not env.simulated:
        # every upstream default has a source outside the simulation
        needed = {"oidc-client-secret", "oauth2-proxy-cookie-secret"}
        components = env.kubeflow.components
        if components == "all" or "pipelines" in components:
            needed |= {
                "kfp-object-store-access-key",
                "kfp-object-store-secret-key",
                "kfp-db-password",
            }
        if components == "all" or "katib" in components:
            needed.add("katib-db-password")
        assert needed <= set(env.secrets)

"""Site overlays: which kustomize Components an environment adds to each component's build,
the parameters they read, and the rewrites kustomize cannot express.

The overlays live in the repository's `overlays/` folder as plain kustomize Components, so
`kustomize build` works on them by hand too (overlays/README.md). What they cannot do is done
here, after kustomize, in `transform`, and each step says why kustomize could not:

- registry-mirror: prefix arbitrary image names, including inside ConfigMap text and env values
  (kustomize `images:` matches exact names and never looks inside strings);
- storage-class: StatefulSet claim templates (replacements fail on StatefulSets without them);
- gpu: the device plugin's nodeSelector/tolerations (maps whose keys are parameters), the Jupyter
  spawner config (YAML inside a ConfigMap), Trainer runtime tolerations (lists inside CRs);
- production-sizing: replicas (an integer; replacements copy strings) and PodDisruptionBudgets;
- secrets: upstream default credentials become `kfdeploy-secret:<name>` placeholders
  (kfdeploy/render/secrets.py).
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import yaml

from kfdeploy.config.model import (
    Environment,
    GpuOverlay,
    ProductionSizingOverlay,
    RegistryMirrorOverlay,
)
from kfdeploy.errors import ConfigError
from kfdeploy.render import images, secrets

log = logging.getLogger(__name__)

Obj = dict[str, Any]

# Overlays whose kustomize Component only patches or deletes existing objects: safe to add to
# every component's build (a target that matches nothing is not an error).
_PATCH_ONLY = ("sim", "sso", "storage-class", "production-sizing")


def overlays_dir() -> Path:
    return Path(
        os.environ.get("KFDEPLOY_OVERLAYS") or Path(__file__).resolve().parents[2] / "overlays"
    )


def site_params(env: Environment) -> dict[str, str]:
    """Values the overlays read through kustomize `replacements` (a local-config ConfigMap)."""
    ov = env.overlays
    params: dict[str, str] = {"environment": env.name}
    if env.site.domain:
        params["domain"] = env.site.domain
    if ov.sso is not None:
        if not env.site.domain:
            raise ConfigError(
                "the sso overlay needs the platform's public host name for the OIDC redirect URL",
                key="site.domain",
            )
        issuer = ov.sso.issuer
        # Keycloak's standard endpoint paths under a realm's issuer (CERN SSO is Keycloak).
        params.update(
            {
                "sso-issuer": issuer,
                "sso-client-id": ov.sso.client_id,
                "sso-scope": " ".join(ov.sso.scopes),
                "sso-username-claim": ov.sso.username_claim,
                "sso-groups-claim": ov.sso.groups_claim,
                "sso-redirect-url": f"https://{env.site.domain}/oauth2/callback",
                "sso-login-url": f"{issuer}/protocol/openid-connect/auth",
                "sso-redeem-url": f"{issuer}/protocol/openid-connect/token",
                "sso-jwks-url": f"{issuer}/protocol/openid-connect/certs",
            }
        )
    if ov.storage_class is not None:
        params["storage-class"] = ov.storage_class.name
    if ov.gpu is not None:
        params["gpu-resource"] = ov.gpu.resource
        params["gpu-device-plugin-image"] = ov.gpu.device_plugin_image
    if ov.registry_mirror is not None:
        params["registry-mirror-prefix"] = ov.registry_mirror.prefix
    return params


def anchor_component(env: Environment) -> str | None:
    """The component that carries platform-wide additions (the GPU device plugin): the first
    one rendered, so they are applied before any workload that needs them."""
    from kfdeploy.render.engine import selected_components  # engine imports this module

    chosen = selected_components(env, env.kubeflow.release)
    return chosen[0] if chosen else None


def kustomize_components(env: Environment, component: str) -> list[str]:
    """Overlay folders (relative to overlays/) added to this component's build."""
    out: list[str] = []
    for name in env.overlays.enabled():
        if name == "sim" and env.overlays.sim is not None and not env.overlays.sim.remove_webhooks:
            continue  # a simulation that runs the webhooks' backends for real (advanced use)
        if name in _PATCH_ONLY:
            out.append(name)
        elif name == "gpu":
            gpu = env.overlays.gpu
            if gpu is not None and gpu.device_plugin and component == anchor_component(env):
                out.append(name)
        # registry-mirror has no kustomize part (see overlays/registry-mirror/README.md)
    return [n for n in out if (overlays_dir() / n / "kustomization.yaml").is_file()]


def transform(env: Environment, component: str, objs: list[Obj]) -> list[Obj]:
    """Python-side rewrites after kustomize, in a fixed order (the mirror last, so it also
    rewrites images the other overlays added)."""
    ov = env.overlays
    if ov.sso is not None and component == "dex":
        raise ConfigError(
            "the sso overlay replaces Dex; leave the dex component out (kubeflow.exclude: [dex]) so its "
            "static user and default client secret are not deployed",
            key="kubeflow.exclude",
        )
    if ov.storage_class is not None:
        for o in objs:
            _statefulset_storage_class(o, ov.storage_class.name)
    if ov.gpu is not None:
        for o in objs:
            _gpu(o, ov.gpu)
    if ov.production_sizing is not None:
        objs = _production_sizing(objs, ov.production_sizing)
    objs = secrets.placeholder_secrets(env, component, objs)
    if ov.registry_mirror is not None:
        mirror_objects(objs, ov.registry_mirror)
    return objs


# ---- registry mirror ----------------------------------------------------------------------------


def mirror_objects(objs: list[Obj], mirror: RegistryMirrorOverlay) -> None:
    """Rewrite every image reference to the mirror (in place); record the originals on each
    object (annotation kfdeploy.cern.ch/source-images) so `kfdeploy images` can list
    source -> destination pairs for `crane copy` / `skopeo copy`."""
    seen: dict[str, str] = {}  # destination -> source, across the component

    def record(dst: str, src: str, mapping: dict[str, str]) -> None:
        if dst == src:
            return
        prev = seen.setdefault(dst, src)
        if prev != src:
            raise ConfigError(
                f"mirror prefix maps both {prev} and {src} to {dst}; set keep_registry_host: true",
                key="overlays.registry-mirror.keep_registry_host",
            )
        mapping[dst] = src

    for o in objs:
        mapping: dict[str, str] = {}

        def rewrite(ref: str, where: str, _m: dict[str, str] = mapping) -> str:
            new = images.mirror_reference(ref, mirror.prefix, mirror.keep_registry_host)
            if not ref.endswith("/"):  # hubs are recorded as the images they compose
                record(new, ref, _m)
            return new

        # Istio composes its sidecar image from hub + name + tag; record the pair before the
        # hub is rewritten, since the composed name appears nowhere in the object.
        for ref in images.istio_hub_images(o):
            record(
                images.mirror_reference(ref, mirror.prefix, mirror.keep_registry_host), ref, mapping
            )
        images.visit_images(o, rewrite)
        if not mapping:
            continue
        annotations = o.setdefault("metadata", {}).setdefault("annotations", {})
        old = images.source_map(o)
        old.update(mapping)
        annotations[images.SOURCE_ANNOTATION] = json.dumps(
            old, sort_keys=True, separators=(",", ":")
        )


# ---- storage class --------------------------------------------------------------------------------


def _statefulset_storage_class(o: Obj, name: str) -> None:
    if o.get("kind") != "StatefulSet":
        return
    for tmpl in o.get("spec", {}).get("volumeClaimTemplates") or []:
        tmpl.setdefault("spec", {})["storageClassName"] = name


# ---- gpu ------------------------------------------------------------------------------------------


def _tolerations(gpu: GpuOverlay) -> list[dict[str, str]]:
    return [dict(t) for t in gpu.tolerations]


def _merge_tolerations(spec: Obj, wanted: list[dict[str, str]]) -> None:
    have = spec.setdefault("tolerations", [])
    for t in wanted:
        if t not in have:
            have.append(dict(t))


def _gpu(o: Obj, gpu: GpuOverlay) -> None:
    kind, name = o.get("kind"), o.get("metadata", {}).get("name", "")
    if kind == "DaemonSet" and name == "nvidia-device-plugin-daemonset":
        spec = o["spec"]["template"]["spec"]
        if gpu.node_selector:
            spec["nodeSelector"] = dict(gpu.node_selector)
        spec["tolerations"] = _tolerations(gpu)
    elif kind == "ConfigMap" and "spawner_ui_config.yaml" in (o.get("data") or {}):
        o["data"]["spawner_ui_config.yaml"] = spawner_config(
            o["data"]["spawner_ui_config.yaml"], gpu
        )
    elif kind == "ClusterTrainingRuntime":
        for rj in o.get("spec", {}).get("template", {}).get("spec", {}).get("replicatedJobs") or []:
            # Only the training nodes run on GPUs; initializers (dataset/model download) do not.
            if rj.get("name") != "node":
                continue
            pod = rj.get("template", {}).get("spec", {}).get("template", {}).get("spec")
            if isinstance(pod, dict):
                _merge_tolerations(pod, _tolerations(gpu))


def spawner_config(text: str, gpu: GpuOverlay) -> str:
    """Jupyter web app spawner config: offer the site's GPU resource and put GPU notebooks on
    GPU nodes. Upstream offers three vendors (NVIDIA, AMD, Intel Gaudi) and no toleration group,
    so a notebook asking for a GPU stays Pending on a cluster whose GPU nodes are tainted.

    Re-serialising drops upstream's comments; the keys and values are what the app reads.
    """
    data = yaml.safe_load(text)
    cfg = data.get("spawnerFormDefaults") if isinstance(data, dict) else None
    if not isinstance(cfg, dict):
        return text
    gpus = cfg.setdefault("gpus", {}).setdefault("value", {})
    gpus["vendors"] = [{"limitsKey": gpu.resource, "uiName": "NVIDIA GPU"}]
    gpus["vendor"] = gpu.resource
    tg = cfg.setdefault("tolerationGroup", {})
    tg.setdefault("options", [])
    tg["options"] = [x for x in tg["options"] if x.get("groupKey") != "gpu-nodes"] + [
        {"groupKey": "gpu-nodes", "displayName": "GPU nodes", "tolerations": _tolerations(gpu)}
    ]
    if gpu.node_selector:
        aff = cfg.setdefault("affinityConfig", {})
        aff.setdefault("options", [])
        terms = [
            {"key": k, "operator": "In", "values": [v]}
            for k, v in sorted(gpu.node_selector.items())
        ]
        aff["options"] = [x for x in aff["options"] if x.get("configKey") != "gpu-nodes"] + [
            {
                "configKey": "gpu-nodes",
                "displayName": "GPU nodes",
                "affinity": {
                    "nodeAffinity": {
                        "requiredDuringSchedulingIgnoredDuringExecution": {
                            "nodeSelectorTerms": [{"matchExpressions": terms}]
                        }
                    }
                },
            }
        ]
    return yaml.safe_dump(data, sort_keys=False, width=120)


# ---- production sizing ----------------------------------------------------------------------------


def _production_sizing(objs: list[Obj], sizing: ProductionSizingOverlay) -> list[Obj]:
    """`replicas` for the HA deployments, an HPA floor to match, and a PodDisruptionBudget
    (minAvailable 1) for each, so a node drain never takes the last replica."""
    wanted = set(sizing.ha_deployments)
    existing_pdbs = {
        json.dumps(o.get("spec", {}).get("selector", {}), sort_keys=True)
        for o in objs
        if o.get("kind") == "PodDisruptionBudget"
    }
    added: list[Obj] = []
    for o in objs:
        name = o.get("metadata", {}).get("name", "")
        if o.get("kind") == "HorizontalPodAutoscaler" and name in wanted:
            spec = o.setdefault("spec", {})
            spec["minReplicas"] = max(int(spec.get("minReplicas", 1)), sizing.replicas)
            spec["maxReplicas"] = max(int(spec.get("maxReplicas", 1)), spec["minReplicas"])
        if o.get("kind") != "Deployment" or name not in wanted:
            continue
        o["spec"]["replicas"] = sizing.replicas
        selector = copy.deepcopy(o["spec"].get("selector") or {})
        if sizing.replicas < 2 or json.dumps(selector, sort_keys=True) in existing_pdbs:
            continue
        meta = o["metadata"]
        added.append(
            {
                "apiVersion": "policy/v1",
                "kind": "PodDisruptionBudget",
                "metadata": {
                    "name": name,
                    "namespace": meta.get("namespace"),
                    "labels": dict(meta.get("labels") or {}),
                },
                "spec": {"minAvailable": 1, "selector": selector},
            }
        )
    return objs + added


# ---- cache support ----------------------------------------------------------------------------------


def render_settings(env: Environment) -> dict[str, Any]:
    """The parts of the environment that change rendered output (the cache key hashes these)."""
    settings = env.model_dump(
        mode="json", include={"kubeflow", "site", "overlays", "secrets", "simulated"}
    )
    # The Python rewrites are inputs too: a change to them must not serve a stale render.
    h = hashlib.sha256()
    for mod in ("overlays.py", "images.py", "secrets.py"):
        h.update((Path(__file__).parent / mod).read_bytes())
    settings["transform_code"] = h.hexdigest()
    return settings


def fingerprint(root: Path | None = None) -> str:
    """Content hash of a small folder (overlays/ by default): cheaper than a stale cache."""
    h = hashlib.sha256()
    root = root or overlays_dir()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for f in sorted(filenames):
            p = Path(dirpath) / f
            h.update(str(p.relative_to(root)).encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()

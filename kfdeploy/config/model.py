"""The environment model: what one deployment of Kubeflow looks like.

One YAML file under `environments/` per deployment. The model is strict (unknown keys are
errors, so a typo never silently falls back to a default) and its JSON Schema is what
`kfdeploy schema` prints for editors.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

NAME_RE = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
Name = Annotated[str, Field(pattern=NAME_RE, max_length=63)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ---- secrets -----------------------------------------------------------------------------------


class SecretSource(Strict):
    """Where one secret value comes from. Exactly one of env, file, generate."""

    env: str | None = Field(None, description="Name of an environment variable holding the value")
    file: str | None = Field(
        None, description="Path of a file holding the value (trailing newline dropped)"
    )
    generate: bool = Field(
        False,
        description="Generate a random value once and keep it in the cluster (Secret kfdeploy-secrets)",
    )
    length: int = Field(32, ge=16, le=256, description="Length of a generated value")

    @model_validator(mode="after")
    def _exactly_one(self) -> SecretSource:
        chosen = [k for k in ("env", "file") if getattr(self, k)] + (
            ["generate"] if self.generate else []
        )
        if len(chosen) != 1:
            raise ValueError("give exactly one of env, file or generate: true")
        return self


# The secrets that replace upstream defaults. Every one is optional in `local` (upstream defaults
# are tolerated there); elsewhere validation refuses a render that still carries a default.
SECRET_NAMES = (
    "oidc-client-secret",
    "oauth2-proxy-cookie-secret",
    "kfp-object-store-access-key",
    "kfp-object-store-secret-key",
    "kfp-db-password",
    "katib-db-password",
)


# ---- site overlays ------------------------------------------------------------------------------


class SsoOverlay(Strict):
    """OIDC login against an external identity provider (CERN's Keycloak) instead of Dex users."""

    issuer: str = Field(description="OIDC issuer URL, e.g. https://auth.cern.ch/auth/realms/cern")
    client_id: str = Field(min_length=1, description="OIDC client registered for this platform")
    username_claim: str = Field(
        "email", description="ID-token claim that names the user (CERN: cern_upn)"
    )
    groups_claim: str = Field(
        "groups", description="ID-token claim listing the user's groups (CERN: cern_roles)"
    )
    scopes: list[str] = Field(
        default_factory=lambda: ["openid", "email", "profile"],
        description="Scopes oauth2-proxy asks for",
    )

    @field_validator("issuer")
    @classmethod
    def _https(cls, v: str) -> str:
        if not re.match(r"^https://[^\s/]+(/\S*)?$", v):
            raise ValueError("expected an https:// URL")
        return v.rstrip("/")


class RegistryMirrorOverlay(Strict):
    """Pull every image through a mirror: `docker.io/istio/proxyv2:1.28` -> `<prefix>/istio/proxyv2:1.28`."""

    prefix: str = Field(description="Mirror prefix, e.g. registry.cern.ch/kubeflow")
    keep_registry_host: bool = Field(
        False,
        description="Keep the source registry's host as the first path element under the prefix",
    )

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        if not re.match(r"^[a-z0-9.-]+(:[0-9]+)?(/[a-z0-9._-]+)*$", v):
            raise ValueError(
                "expected a registry host with an optional path, e.g. registry.cern.ch/kubeflow"
            )
        return v


class StorageClassOverlay(Strict):
    """Give every PersistentVolumeClaim (and StatefulSet claim template) this storage class."""

    name: Name = Field(description="StorageClass every PVC and StatefulSet claim template gets")


class GpuOverlay(Strict):
    """Schedule GPU workloads onto GPU nodegroups and run the NVIDIA device plugin."""

    resource: str = Field("nvidia.com/gpu", description="Extended resource GPUs are requested as")
    node_selector: dict[str, str] = Field(
        default_factory=dict,
        description="Labels of GPU nodes (GPU workloads and the device plugin select them)",
    )
    tolerations: list[dict[str, str]] = Field(
        default_factory=lambda: [
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
        ]
    )
    device_plugin: bool = Field(
        True,
        description="Deploy NVIDIA's device plugin (off where the cloud's GPU operator runs it)",
    )
    device_plugin_image: str = Field(
        "nvcr.io/nvidia/k8s-device-plugin:v0.17.1", description="Device plugin image"
    )


class ProductionSizingOverlay(Strict):
    """Replicas and resource requests for a production service instead of upstream's single replicas."""

    replicas: int = Field(2, ge=1, le=10)
    ha_deployments: list[str] = Field(
        default_factory=lambda: [
            "istio-ingressgateway",
            "oauth2-proxy",
            "ml-pipeline",
            "ml-pipeline-ui",
        ]
    )


class SimOverlay(Strict):
    """Shape the platform for the simulated cluster: no webhooks, no PVC-less surprises."""

    remove_webhooks: bool = True


class Overlays(Strict):
    sim: SimOverlay | None = None
    sso: SsoOverlay | None = None
    registry_mirror: RegistryMirrorOverlay | None = Field(None, alias="registry-mirror")
    storage_class: StorageClassOverlay | None = Field(None, alias="storage-class")
    gpu: GpuOverlay | None = None
    production_sizing: ProductionSizingOverlay | None = Field(None, alias="production-sizing")

    model_config = ConfigDict(extra="forbid", frozen=True)

    def enabled(self) -> list[str]:
        """Names of enabled overlays, in the order they are applied."""
        order = ["sim", "sso", "storage-class", "gpu", "production-sizing", "registry-mirror"]
        return [n for n in order if getattr(self, n.replace("-", "_")) is not None]


# ---- cluster ------------------------------------------------------------------------------------


class Taint(Strict):
    key: str
    value: str = ""
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"]


class NodeGroup(Strict):
    name: Name = Field(description="StorageClass every PVC and StatefulSet claim template gets")
    flavor: str = Field(min_length=1, description="Cloud flavor name (differs per cloud)")
    count: int = Field(ge=0, le=1000)
    min: int = Field(0, ge=0)
    max: int | None = Field(None, ge=0)
    labels: dict[str, str] = Field(default_factory=dict)
    taints: list[Taint] = Field(default_factory=list)
    gpus: int = Field(0, ge=0, le=16, description="GPUs per node (nvidia.com/gpu)")
    role: str = "worker"

    @model_validator(mode="after")
    def _bounds(self) -> NodeGroup:
        if self.max is not None and self.max < self.min:
            raise ValueError(f"max ({self.max}) is below min ({self.min})")
        if self.count < self.min or (self.max is not None and self.count > self.max):
            raise ValueError(f"count {self.count} is outside min..max ({self.min}..{self.max})")
        if self.role == "master":
            raise ValueError("role 'master' is reserved for the default master nodegroup")
        return self


class ClusterTemplate(Strict):
    name: str = Field(min_length=1)
    create: bool = Field(False, description="Create the template if it does not exist")
    image: str | None = None
    coe: Literal["kubernetes"] = "kubernetes"
    network_driver: str = "calico"
    external_network: str | None = None
    keypair: str | None = None
    master_lb_enabled: bool = False
    floating_ip_enabled: bool = False
    labels: dict[str, str] = Field(default_factory=dict)


class Masters(Strict):
    flavor: str = Field(min_length=1)
    count: int = Field(1, ge=1, le=7)

    @field_validator("count")
    @classmethod
    def _odd(cls, v: int) -> int:
        if v % 2 == 0:
            raise ValueError("expected an odd number of masters (etcd quorum)")
        return v


class Identity(Strict):
    """How the context guard recognises the cluster this environment owns."""

    owner: str | None = Field(
        None, description="Owner marker kfdeploy writes on first apply (default: env name)"
    )
    api_server: str | None = Field(
        None, description="Regular expression the API server URL must match"
    )


class Cluster(Strict):
    provider: Literal["magnum", "kubeconfig"]
    name: Name | None = Field(
        None, description="Cluster name in the cloud (default: kfdeploy-<env>)"
    )
    cloud: str | None = Field(
        None, description="clouds.yaml cloud name (magnum); OS_CLOUD if unset"
    )
    kubeconfig: str | None = Field(None, description="kubeconfig file (kubeconfig provider)")
    context: str | None = None
    kubernetes_version: str | None = None
    template: ClusterTemplate | None = None
    masters: Masters | None = None
    workers: NodeGroup | None = Field(None, description="The default-worker nodegroup")
    nodegroups: list[NodeGroup] = Field(default_factory=list)
    identity: Identity = Field(default_factory=Identity)
    create_timeout: int = Field(
        3600, ge=60, description="Seconds to wait for the cluster to be created"
    )

    @model_validator(mode="after")
    def _provider_fields(self) -> Cluster:
        if self.provider == "magnum":
            missing = [k for k in ("template", "masters", "workers") if getattr(self, k) is None]
            if missing:
                raise ValueError(f"provider magnum needs {', '.join(missing)}")
        if self.provider == "kubeconfig" and not self.kubeconfig:
            raise ValueError("provider kubeconfig needs kubeconfig: <file>")
        names = [g.name for g in self.nodegroups]
        dupes = sorted({n for n in names if names.count(n) > 1} | ({"default-worker"} & set(names)))
        if dupes:
            raise ValueError(
                f"nodegroup names must be unique and not default-worker: {', '.join(dupes)}"
            )
        return self


# ---- smoke checks ---------------------------------------------------------------------------------

CHECK_NAMES = (
    "workloads-available",
    "crds-established",
    "webhooks-ready",
    "gpu-schedules",
    "profile-reconciles",
)


class Smoke(Strict):
    checks: list[str] = Field(default_factory=lambda: list(CHECK_NAMES))
    timeout: int = Field(300, ge=1, le=7200, description="Seconds per check")

    @field_validator("checks")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        unknown = [c for c in v if c not in CHECK_NAMES]
        if unknown:
            raise ValueError(
                f"unknown check {unknown[0]!r}; expected one of {', '.join(CHECK_NAMES)}"
            )
        return v


# ---- the environment -------------------------------------------------------------------------------


class Kubeflow(Strict):
    release: str = Field(
        description="Kubeflow release, a pin under manifests/ (e.g. 26.03, v1.11.0)"
    )
    components: list[str] | Literal["all"] = Field(
        "all", description="Components of the release to deploy ('all' = upstream's example)"
    )
    exclude: list[str] = Field(default_factory=list, description="Components left out of 'all'")


class Site(Strict):
    domain: str | None = Field(
        None, description="Public host name of the platform, e.g. ml.cern.ch"
    )

    @field_validator("domain")
    @classmethod
    def _host(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?\.)+[a-z]{2,}$", v):
            raise ValueError("expected a DNS host name like ml.cern.ch")
        return v


class Environment(Strict):
    """One deployment of Kubeflow."""

    name: Name = Field(description="StorageClass every PVC and StatefulSet claim template gets")
    description: str = ""
    simulated: bool = Field(
        False, description="A local simulated deployment: upstream defaults allowed"
    )
    kubeflow: Kubeflow
    site: Site = Field(default_factory=Site)
    overlays: Overlays = Field(default_factory=Overlays)
    secrets: dict[str, SecretSource] = Field(default_factory=dict)
    cluster: Cluster
    smoke: Smoke = Field(default_factory=Smoke)

    @field_validator("secrets")
    @classmethod
    def _known_secrets(cls, v: dict[str, SecretSource]) -> dict[str, SecretSource]:
        unknown = [k for k in v if k not in SECRET_NAMES]
        if unknown:
            raise ValueError(
                f"unknown secret {unknown[0]!r}; expected one of {', '.join(SECRET_NAMES)}"
            )
        return v

    @model_validator(mode="after")
    def _sso_needs(self) -> Environment:
        # Checked here rather than mid-render (overlays.transform checks again): a render takes
        # seconds, and this error belongs to the file.
        if self.overlays.sso is not None:
            if not self.site.domain:
                raise ValueError("overlays.sso needs site.domain (the host OIDC redirects back to)")
            comps = self.kubeflow.components
            dex_on = "dex" not in self.kubeflow.exclude and (comps == "all" or "dex" in comps)
            if dex_on:
                raise ValueError(
                    "overlays.sso replaces Dex: leave the dex component out (kubeflow.exclude: [dex])"
                )
        return self

    @property
    def cluster_name(self) -> str:
        return self.cluster.name or f"kfdeploy-{self.name}"

    @property
    def owner(self) -> str:
        return self.cluster.identity.owner or self.name

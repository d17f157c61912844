"""Configuration of the Keystone + Magnum emulator, and the faults it can inject.

`EmulatorConfig` is fixed when the emulator starts (read from a JSON/YAML file for the daemon,
passed directly for in-process use); `Faults` can be changed at run time through the admin
endpoint `POST /_emulator/faults`, so a test can arm a fault between two kfdeploy calls.
"""

from __future__ import annotations

import json
import threading
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from kfdeploy.errors import ConfigError

# The names `kfdeploy cluster ... local` expects. The password is not a secret: the emulator only
# listens on 127.0.0.1 and guards nothing but simulated clusters.
LOCAL_CLOUD = "kfdeploy-local"
DEFAULT_USER = "kfdeploy"
DEFAULT_PASSWORD = "kfdeploy-local-password"
DEFAULT_PROJECT = "kfdeploy"
DEFAULT_APP_CRED_ID = "kfdeploy-local-appcred"
DEFAULT_APP_CRED_SECRET = "kfdeploy-local-appcred-secret"
REGION = "RegionOne"

MIN_VERSION = (1, 1)
# Magnum's history: 1.7 resize, 1.8 upgrade, 1.9 nodegroups, 1.10 zero-node groups,
# 1.14 node_labels/node_taints. Production clouds (CERN included) run below 1.14, so that is the
# default; tests raise it when they need the newer behaviour.
DEFAULT_MAX_VERSION = "1.12"


@dataclass(frozen=True)
class Flavor:
    vcpus: int
    ram_mb: int
    gpus: int = 0

    def memory(self) -> str:
        return f"{self.ram_mb // 1024}Gi" if self.ram_mb % 1024 == 0 else f"{self.ram_mb}Mi"


# Flavor names are per cloud; these mimic CERN-style names and are what environments/local.yaml
# uses. A config file can replace or extend them.
DEFAULT_FLAVORS: dict[str, Flavor] = {
    "m2.small": Flavor(1, 2048),
    "m2.medium": Flavor(2, 4096),
    "m2.large": Flavor(4, 8192),
    "m2.xlarge": Flavor(8, 16384),
    "m2.2xlarge": Flavor(16, 32768),
    "g1.a100.x1": Flavor(16, 65536, 1),
    "g1.a100.x2": Flavor(32, 131072, 2),
    "g1.a100.x4": Flavor(64, 262144, 4),
    "g1.v100.x1": Flavor(8, 32768, 1),
    "g1.t4.x1": Flavor(8, 32768, 1),
    # the names environments/cern-*.yaml use, so those files run against the emulator as-is
    "g2.xlarge": Flavor(8, 32768, 1),
    "g4.a100.xlarge": Flavor(64, 262144, 4),
}


@dataclass
class Delays:
    """Seconds each asynchronous operation stays IN_PROGRESS (at least; starting a real control
    plane can take longer)."""

    cluster_create: float = 5.0
    cluster_delete: float = 2.0
    nodegroup_create: float = 3.0
    nodegroup_delete: float = 2.0
    resize: float = 3.0
    upgrade: float = 3.0
    update: float = 1.0


@dataclass
class EmulatorConfig:
    state_dir: Path
    host: str = "127.0.0.1"
    port: int = 0
    users: dict[str, str] = field(default_factory=lambda: {DEFAULT_USER: DEFAULT_PASSWORD})
    application_credentials: dict[str, str] = field(
        default_factory=lambda: {DEFAULT_APP_CRED_ID: DEFAULT_APP_CRED_SECRET}
    )
    project: str = DEFAULT_PROJECT
    token_ttl: float = 3600.0
    max_version: str = DEFAULT_MAX_VERSION
    # Magnum 22.0.0 (2025.2) and later also accept keystoneauth's official service type in the
    # microversion header; older ones (the default here, like production) ignore it and fall
    # back to 1.1.
    accept_official_service_type: bool = False
    # "local": each cluster is a real kfdeploy.sim LocalCluster. "fake": no processes, only a CA
    # (for tests of HTTP semantics that never talk to the Kubernetes API).
    backend: str = "local"
    delays: Delays = field(default_factory=Delays)
    flavors: dict[str, Flavor] = field(default_factory=lambda: dict(DEFAULT_FLAVORS))
    cluster_quota: int | None = None
    # faults armed from the start (same keys as POST /_emulator/faults)
    faults: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.host not in ("127.0.0.1", "localhost", "::1"):
            raise ConfigError(f"the emulator listens on loopback only, not {self.host!r}")
        if self.backend not in ("local", "fake"):
            raise ConfigError(f"emulator backend must be 'local' or 'fake', not {self.backend!r}")
        parse_version(self.max_version)

    @classmethod
    def from_mapping(cls, data: dict[str, Any], state_dir: Path) -> EmulatorConfig:
        known = {f.name for f in fields(cls)} - {"state_dir"}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"unknown emulator config keys: {', '.join(sorted(unknown))}")
        kwargs: dict[str, Any] = dict(data)
        if "delays" in kwargs:
            kwargs["delays"] = Delays(**kwargs["delays"])
        if "flavors" in kwargs:
            kwargs["flavors"] = {
                **DEFAULT_FLAVORS,
                **{k: Flavor(**v) for k, v in kwargs["flavors"].items()},
            }
        try:
            return cls(state_dir=state_dir, **kwargs)
        except TypeError as exc:
            raise ConfigError(f"invalid emulator config: {exc}") from exc

    @classmethod
    def from_file(cls, path: Path, state_dir: Path) -> EmulatorConfig:
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read emulator config: {exc}", file=str(path)) from exc
        if not isinstance(data, dict):
            raise ConfigError("emulator config must be a mapping", file=str(path))
        return cls.from_mapping(data, state_dir)

    def to_json(self) -> str:
        data = asdict(self)
        data["state_dir"] = str(self.state_dir)
        return json.dumps(data, indent=2, sort_keys=True)


def parse_version(text: str) -> tuple[int, int]:
    major, _, minor = text.strip().partition(".")
    try:
        return int(major), int(minor)
    except ValueError:
        raise ConfigError(f"invalid microversion {text!r}; expected MAJOR.MINOR") from None


@dataclass
class HttpErrorBurst:
    """Answer the next `count` matching requests with `status` (a 5xx burst)."""

    status: int = 503
    count: int = 3
    method: str | None = None  # None: any method
    path_contains: str = "/v1/"


@dataclass
class Faults:
    # nodegroup name -> status_reason: creating that nodegroup ends CREATE_FAILED
    fail_nodegroups: dict[str, str] = field(default_factory=dict)
    # cluster name -> status_reason: creating that cluster ends CREATE_FAILED (with faults)
    fail_clusters: dict[str, str] = field(default_factory=dict)
    # maximum number of clusters in the project: POST /v1/clusters beyond it answers 403
    cluster_quota: int | None = None
    http_errors: list[HttpErrorBurst] = field(default_factory=list)
    # revoke every token on each Nth Magnum request (a token expiring mid-operation, as seen
    # by a client in another process): that request answers 401 and the client must re-auth
    revoke_tokens_every: int | None = None
    # the next N resizes / nodegroup updates answer 202 and change nothing, as Magnum's conductor
    # does when it finds the cluster busy after the API accepted the call
    drop_actions: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class FaultState:
    """Thread-safe holder of the current faults; the HTTP handler consults it per request."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.faults = Faults()
        self._magnum_requests = 0

    def update(self, data: dict[str, Any]) -> Faults:
        """Merge `data` into the current faults. `{"reset": true}` clears everything first."""
        with self._lock:
            if data.get("reset"):
                self.faults = Faults()
            for key in ("fail_nodegroups", "fail_clusters"):
                if key in data:
                    getattr(self.faults, key).update({str(k): str(v) for k, v in data[key].items()})
            if "cluster_quota" in data:
                quota = data["cluster_quota"]
                self.faults.cluster_quota = None if quota is None else int(quota)
            for burst in data.get("http_errors", []):
                self.faults.http_errors.append(HttpErrorBurst(**burst))
            if "drop_actions" in data:
                self.faults.drop_actions = int(data["drop_actions"])
            if "revoke_tokens_every" in data:
                every = data["revoke_tokens_every"]
                self.faults.revoke_tokens_every = None if every is None else int(every)
                self._magnum_requests = 0
            return self.faults

    def take_drop(self) -> bool:
        with self._lock:
            if self.faults.drop_actions > 0:
                self.faults.drop_actions -= 1
                return True
            return False

    def take_token_revocation(self) -> bool:
        """Count a Magnum request; True when this one should find its token revoked."""
        with self._lock:
            every = self.faults.revoke_tokens_every
            if not every:
                return False
            self._magnum_requests += 1
            return self._magnum_requests % every == 0

    def take_http_error(self, method: str, path: str) -> int | None:
        """If a burst matches this request, consume one and return its status."""
        with self._lock:
            for burst in self.faults.http_errors:
                if burst.count <= 0:
                    continue
                if burst.method and burst.method.upper() != method:
                    continue
                if burst.path_contains not in path:
                    continue
                burst.count -= 1
                return burst.status
            self.faults.http_errors = [b for b in self.faults.http_errors if b.count > 0]
            return None

    def nodegroup_failure(self, name: str) -> str | None:
        with self._lock:
            return self.faults.fail_nodegroups.get(name)

    def cluster_failure(self, name: str) -> str | None:
        with self._lock:
            return self.faults.fail_clusters.get(name)

    def quota(self, configured: int | None) -> int | None:
        with self._lock:
            return (
                self.faults.cluster_quota if self.faults.cluster_quota is not None else configured
            )

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return self.faults.to_dict()

"""Generated secrets kept in the cluster (the `generate: true` secret source).

A generated value must survive re-renders and re-applies (a new cookie secret logs everyone out;
a new database password locks the pipelines database), so it is created once and stored in a
Secret beside the ApplySet parent. Values are registered with the log redactor as they are read.
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Callable

from kfdeploy.cluster.client import Kube, NotFound
from kfdeploy.logs import SecretRedactor

NAMESPACE = "kube-system"


class ClusterGeneratedSecrets:
    """`kfdeploy.render.secrets.GeneratedSecrets` backed by Secret kube-system/kfdeploy-secrets-<env>."""

    def __init__(
        self, kube: Kube, env_name: str, generate: Callable[[int], str], *, dry_run: bool = False
    ) -> None:
        self.kube = kube
        self.name = f"kfdeploy-secrets-{env_name}"
        self.path = f"/api/v1/namespaces/{NAMESPACE}/secrets/{self.name}"
        self.generate = generate
        self.dry_run = dry_run
        self._lock = threading.Lock()

    def __call__(self, name: str, length: int) -> str:
        with self._lock:
            try:
                data = (self.kube.get(self.path, what=f"Secret {NAMESPACE}/{self.name}") or {}).get(
                    "data"
                ) or {}
            except NotFound:
                data = {}
            if name in data:
                value = base64.b64decode(data[name]).decode()
                SecretRedactor.register(value)
                return value
            value = self.generate(length)
            SecretRedactor.register(value)
            if not self.dry_run:
                # Server-side apply of just this key: other generated keys stay as they are.
                self.kube.request(
                    "PATCH",
                    self.path,
                    query=[("fieldManager", f"kfdeploy-secret-{name}"), ("force", "true")],
                    body={
                        "apiVersion": "v1",
                        "kind": "Secret",
                        "metadata": {
                            "name": self.name,
                            "namespace": NAMESPACE,
                            "labels": {"app.kubernetes.io/managed-by": "kfdeploy"},
                        },
                        "type": "Opaque",
                        "data": {name: base64.b64encode(value.encode()).decode()},
                    },
                    content_type="application/apply-patch+yaml",
                    what=f"Secret {NAMESPACE}/{self.name}",
                )
            return value

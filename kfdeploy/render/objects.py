"""A rendered Kubernetes object and the component it came from.

Every later stage (validate, apply, prune, checks, reports) works per component, so the
component travels with the object from the moment kustomize produced it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple


class ObjectKey(NamedTuple):
    """Identity of an object in a cluster: group, kind, namespace ('' if cluster-scoped), name."""

    group: str
    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        kind = f"{self.kind}.{self.group}" if self.group else self.kind
        return f"{kind} {self.namespace}/{self.name}" if self.namespace else f"{kind} {self.name}"


@dataclass(frozen=True)
class RenderedObject:
    component: str
    obj: dict[str, Any]

    @property
    def api_version(self) -> str:
        return str(self.obj.get("apiVersion", ""))

    @property
    def group(self) -> str:
        av = self.api_version
        return av.split("/", 1)[0] if "/" in av else ""

    @property
    def kind(self) -> str:
        return str(self.obj.get("kind", ""))

    @property
    def name(self) -> str:
        return str(self.obj.get("metadata", {}).get("name", ""))

    @property
    def namespace(self) -> str:
        return str(self.obj.get("metadata", {}).get("namespace") or "")

    @property
    def key(self) -> ObjectKey:
        return ObjectKey(self.group, self.kind, self.namespace, self.name)

    def __str__(self) -> str:
        return f"{self.key} ({self.component})"

"""Shared fakes for the smoke-check unit tests: environments, rendered objects, a dict cluster."""

from __future__ import annotations

import copy
import itertools
from collections.abc import Mapping
from typing import Any

from kfdeploy.checks.kube import JSON, Query
from kfdeploy.config.model import Environment
from kfdeploy.errors import ClusterError
from kfdeploy.render.objects import RenderedObject


def make_env(**overrides: Any) -> Environment:
    data: dict[str, Any] = {
        "name": "unit",
        "kubeflow": {"release": "26.03"},
        "cluster": {"provider": "kubeconfig", "kubeconfig": "/dev/null"},
        "smoke": {"timeout": 5},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return Environment.model_validate(data)


def magnum_cluster(nodegroups: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "provider": "magnum",
        "template": {"name": "t"},
        "masters": {"flavor": "m"},
        "workers": {"name": "default-worker", "flavor": "w", "count": 1},
        "nodegroups": nodegroups,
    }


def rendered(
    kind: str,
    name: str,
    namespace: str = "",
    api_version: str = "apps/v1",
    component: str = "test",
    **fields: Any,
) -> RenderedObject:
    meta: dict[str, Any] = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    return RenderedObject(
        component, {"apiVersion": api_version, "kind": kind, "metadata": meta, **fields}
    )


class FakeKube:
    """A `Kube` over a dict of path -> object; collections are found by path prefix."""

    def __init__(self, objects: Mapping[str, JSON] | None = None) -> None:
        self.objects: dict[str, JSON] = dict(objects or {})
        self.calls: list[tuple[str, str]] = []
        self.errors: dict[str, list[ClusterError]] = {}  # path -> errors raised first, in order
        self._names = itertools.count()

    def _maybe_fail(self, method: str, path: str) -> None:
        self.calls.append((method, path))
        queue = self.errors.get(path)
        if queue:
            raise queue.pop(0)

    def get(self, path: str, query: Query | None = None) -> JSON | None:
        self._maybe_fail("GET", path)
        obj = self.objects.get(path)
        return copy.deepcopy(obj) if obj is not None else None

    def list(self, path: str, query: Query | None = None) -> list[JSON]:
        self._maybe_fail("LIST", path)
        selector = dict(query or {}).get("labelSelector")
        out = []
        for p, obj in self.objects.items():
            collection = p.rsplit("/", 1)[0]
            if "/namespaces/" not in path and "/namespaces/" in collection:  # cluster-wide list
                head, _, rest = collection.partition("/namespaces/")
                collection = head + "/" + rest.split("/", 1)[1]
            if collection != path:
                continue
            labels = obj.get("metadata", {}).get("labels") or {}
            if selector and not all(
                labels.get(k) == v for k, v in (s.split("=", 1) for s in str(selector).split(","))
            ):
                continue
            out.append(copy.deepcopy(obj))
        return out

    def create(self, path: str, body: JSON) -> JSON:
        self._maybe_fail("POST", path)
        obj = copy.deepcopy(body)
        meta = obj.setdefault("metadata", {})
        if "generateName" in meta and "name" not in meta:
            meta["name"] = f"{meta['generateName']}{next(self._names)}"
        self.objects[f"{path}/{meta['name']}"] = obj
        return copy.deepcopy(obj)

    def delete(self, path: str, query: Query | None = None) -> None:
        self._maybe_fail("DELETE", path)
        self.objects.pop(path, None)

"""A minimal CustomResourceDefinition for tests that need some custom kind on a real cluster."""

from __future__ import annotations

from typing import Any


def open_crd(group: str, plural: str, kind: str, *, scope: str = "Namespaced") -> dict[str, Any]:
    """A served, stored v1 CRD named plural.group whose schema accepts anything."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}"},
        "spec": {
            "group": group,
            "scope": scope,
            "names": {"plural": plural, "singular": plural[:-1], "kind": kind},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "x-kubernetes-preserve-unknown-fields": True,
                        }
                    },
                }
            ],
        },
    }

"""Diffs between live objects and what applying would make of them (pure).

The cluster adapter supplies both sides: the live object and the server's dry-run result of the
apply (defaults and admission included, so the diff shows what would really change). Fields the
server owns and that change on every write (resourceVersion, managedFields, generation, status)
are dropped from both sides first, or every object would look changed.
"""

from __future__ import annotations

import copy
import difflib
from dataclasses import dataclass, field
from typing import Any

import yaml

from kfdeploy.plan.prune import PrunePlan
from kfdeploy.render.objects import ObjectKey

_VOLATILE_METADATA = ("resourceVersion", "managedFields", "generation", "uid", "creationTimestamp")


def normalise(obj: dict[str, Any] | None) -> dict[str, Any] | None:
    if obj is None:
        return None
    out = copy.deepcopy(obj)
    out.pop("status", None)
    meta = out.get("metadata") or {}
    for k in _VOLATILE_METADATA:
        meta.pop(k, None)
    return out


def to_yaml(obj: dict[str, Any] | None) -> str:
    return "" if obj is None else yaml.safe_dump(obj, sort_keys=True, default_flow_style=False)


@dataclass
class ObjectDiff:
    key: ObjectKey
    component: str
    action: str  # create | update | unchanged
    text: str = ""  # unified diff


@dataclass
class DiffResult:
    objects: list[ObjectDiff] = field(default_factory=list)
    prune: PrunePlan = field(default_factory=PrunePlan)
    pending: list[tuple[ObjectKey, str]] = field(default_factory=list)  # cannot dry-run yet, why

    @property
    def changed(self) -> list[ObjectDiff]:
        return [d for d in self.objects if d.action != "unchanged"]

    @property
    def has_changes(self) -> bool:
        return bool(self.changed or self.prune.delete or self.pending)


def object_diff(
    key: ObjectKey, component: str, live: dict[str, Any] | None, applied: dict[str, Any] | None
) -> ObjectDiff:
    a, b = to_yaml(normalise(live)), to_yaml(normalise(applied))
    if a == b:
        return ObjectDiff(key, component, "unchanged")
    name = str(key)
    lines = difflib.unified_diff(
        a.splitlines(keepends=True),
        b.splitlines(keepends=True),
        fromfile=f"live/{name}" if live is not None else "/dev/null",
        tofile=f"applied/{name}",
    )
    return ObjectDiff(key, component, "create" if live is None else "update", "".join(lines))

"""Server-side apply of one step's objects: concurrent, skipping what is already applied.

Server-side apply (field manager `kfdeploy`) because client-side apply stores the whole object in
an annotation, which fails on upstream's large CRDs ("metadata.annotations: Too long"), and because
field ownership is what lets kfdeploy report a real conflict instead of silently overwriting
another tool's change. Conflicts are forced only with `force_conflicts`.

Skipping unchanged objects: each applied object carries `kfdeploy.cern.ch/content-hash`, the hash
of exactly what kfdeploy sent. One metadata-only LIST per kind (cluster-wide, restricted to the
ApplySet's members) returns the live hashes; an object whose hash matches and none of whose fields
another manager has taken is not sent again, so a no-op re-apply sends no PATCH at all.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kfdeploy.cluster.client import (
    JSON,
    METADATA_LIST,
    ApiError,
    Conflict,
    Kube,
    Resource,
    run_concurrently,
)
from kfdeploy.cluster.inventory import FIELD_MANAGER, PART_OF_LABEL, ApplySet
from kfdeploy.errors import ClusterError
from kfdeploy.plan.phases import Scope
from kfdeploy.plan.prune import LiveRef
from kfdeploy.render.kustomize import COMPONENT_LABEL
from kfdeploy.render.objects import ObjectKey, RenderedObject

log = logging.getLogger(__name__)

HASH_ANNOTATION = "kfdeploy.cern.ch/content-hash"
# Bump when what kfdeploy adds to objects changes, so every object is re-applied once.
APPLY_FORMAT = "1"

CREATED, CONFIGURED, UNCHANGED, FAILED, CONFLICT, PENDING = (
    "created",
    "configured",
    "unchanged",
    "failed",
    "conflict",
    "pending",
)


class ApplyFailed(ClusterError):
    """Some objects of a step could not be applied; `outcomes` says which and why."""

    def __init__(self, message: str, outcomes: list[Outcome]) -> None:
        super().__init__(message)
        self.outcomes = outcomes


@dataclass
class Outcome:
    key: ObjectKey
    component: str
    action: str
    message: str = ""
    result: JSON | None = None  # the server's answer (dry-run diffs use it)

    def __str__(self) -> str:
        return f"{self.component}: {self.key}: {self.action}" + (
            f": {self.message}" if self.message else ""
        )


@dataclass
class LiveMeta:
    content_hash: str
    managed_fields: list[JSON] = field(default_factory=list)
    ref: LiveRef | None = None


def content_hash(obj: Mapping[str, Any]) -> str:
    """Hash of the object as sent, without the hash annotation itself."""
    data = copy.deepcopy(dict(obj))
    ann = data.get("metadata", {}).get("annotations")
    if ann:
        ann.pop(HASH_ANNOTATION, None)
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(f"{APPLY_FORMAT}\0{text}".encode()).hexdigest()[:32]


def prepare(o: RenderedObject, applyset: ApplySet, scope: Scope | None = None) -> JSON:
    """The object as kfdeploy sends it: ApplySet member label and content hash added."""
    obj = copy.deepcopy(o.obj)
    meta = obj.setdefault("metadata", {})
    if scope is not None and scope.namespaced(o.group, o.kind) is False:
        meta.pop("namespace", None)
    if (o.group, o.kind) == ("rbac.authorization.k8s.io", "ClusterRole") and obj.get(
        "aggregationRule"
    ):
        # The aggregation controller owns `rules` of an aggregated role; applying upstream's
        # placeholder `rules: []` would conflict with it on every run (or, forced, wipe the
        # aggregated rules until the controller restores them).
        obj.pop("rules", None)
    meta.setdefault("labels", {})[PART_OF_LABEL] = applyset.id
    meta.setdefault("annotations", {}).pop(HASH_ANNOTATION, None)
    meta["annotations"][HASH_ANNOTATION] = content_hash(obj)
    return obj


# ---- field ownership --------------------------------------------------------------------------


def _owned_leaves(fields: Mapping[str, Any], desired: Any, path: str = "") -> Iterable[str]:
    """Paths in a managedFields `fieldsV1` tree that also exist in `desired`."""
    for key, sub in fields.items():
        if key == ".":
            continue
        kind, _, rest = key.partition(":")
        child: Any = None
        found = False
        if kind == "f" and isinstance(desired, dict) and rest in desired:
            child, found = desired[rest], True
        elif kind == "k" and isinstance(desired, list):
            want = json.loads(rest)
            for item in desired:
                if isinstance(item, dict) and all(
                    str(item.get(k)) == str(v) for k, v in want.items()
                ):
                    child, found = item, True
                    break
        elif kind == "v" and isinstance(desired, list):
            found = json.loads(rest) in desired
        elif kind == "i" and isinstance(desired, list) and int(rest) < len(desired):
            child, found = desired[int(rest)], True
        if not found:
            continue
        here = f"{path}.{rest}" if kind == "f" else f"{path}[{rest}]"
        if not sub or set(sub) == {"."}:
            yield here
        else:
            yield from _owned_leaves(sub, child, here)


def fields_taken(desired: JSON, managed_fields: Sequence[JSON]) -> list[str]:
    """`manager: path` for fields of `desired` that another field manager owns now.

    A manager that forced a conflict (or a `kubectl edit`) took these from kfdeploy; the content
    hash still matches, so without this check kfdeploy would report 'unchanged' and never notice.
    """
    out: list[str] = []
    for entry in managed_fields:
        if entry.get("manager") == FIELD_MANAGER or entry.get("subresource"):
            continue
        fields = entry.get("fieldsV1") or {}
        for leaf in _owned_leaves(fields, desired):
            if leaf.startswith(".metadata.labels") or leaf.startswith(".metadata.annotations"):
                continue  # shared maps: another manager's label beside ours is no conflict
            out.append(f"{entry.get('manager')}: {leaf}")
    return out


# ---- the applier ------------------------------------------------------------------------------


@dataclass
class ApplyOptions:
    force_conflicts: bool = False
    dry_run: bool = False
    workers: int = 8
    skip_unchanged: bool = True


class Applier:
    """Applies steps of one run; caches the live index of each kind for the run."""

    def __init__(
        self,
        kube: Kube,
        applyset: ApplySet,
        scope: Scope,
        options: ApplyOptions | None = None,
        *,
        on_object: Callable[[Outcome], None] | None = None,
    ) -> None:
        self.kube = kube
        self.applyset = applyset
        self.scope = scope
        self.options = options or ApplyOptions()
        self.on_object = on_object
        self._live: dict[tuple[str, str], dict[ObjectKey, LiveMeta]] = {}
        self._lock = threading.Lock()

    def live_index(self, group: str, kind: str) -> dict[ObjectKey, LiveMeta]:
        """Live members of one kind (one metadata-only LIST, cached for the run)."""
        gk = (group, kind)
        with self._lock:
            if gk in self._live:
                return self._live[gk]
        res = self.kube.discovery.find(group, kind)
        index: dict[ObjectKey, LiveMeta] = {}
        if res is not None:
            data = self.kube.get(
                res.collection(),
                query=[("labelSelector", f"{PART_OF_LABEL}={self.applyset.id}")],
                accept=METADATA_LIST,
                what=f"list {kind}",
            )
            for item in data.get("items") or []:
                meta = item.get("metadata") or {}
                key = ObjectKey(group, kind, str(meta.get("namespace") or ""), str(meta["name"]))
                annotations = dict(meta.get("annotations") or {})
                index[key] = LiveMeta(
                    str(annotations.get(HASH_ANNOTATION, "")),
                    list(meta.get("managedFields") or []),
                    LiveRef(
                        key,
                        component=str((meta.get("labels") or {}).get(COMPONENT_LABEL, "")),
                        annotations=annotations,
                    ),
                )
        with self._lock:
            self._live[gk] = index
        return index

    def members(self, group_kinds: Iterable[tuple[str, str]]) -> list[LiveRef]:
        """The ApplySet's members of these kinds as listed at the start of the run.

        Objects created by this run are missing, which is right for pruning: they are desired.
        """
        kinds = sorted(set(group_kinds))
        run_concurrently(kinds, lambda gk: self.live_index(*gk), self.options.workers)
        return [m.ref for gk in kinds for m in self.live_index(*gk).values() if m.ref is not None]

    def forget(self, group: str, kind: str) -> None:
        with self._lock:
            self._live.pop((group, kind), None)

    def apply(self, objects: Sequence[RenderedObject]) -> list[Outcome]:
        """Apply one step's objects concurrently; outcomes in input order (never raises per object)."""
        kinds = sorted({(o.group, o.kind) for o in objects})
        # The LISTs are independent: fetch them concurrently too.
        run_concurrently(kinds, lambda gk: self.live_index(*gk), self.options.workers)
        results = run_concurrently(list(objects), self._apply_one, self.options.workers)
        outcomes: list[Outcome] = []
        for o, outcome, exc in results:
            if exc is not None:
                outcome = Outcome(self.scope.key(o), o.component, FAILED, str(exc))
            outcomes.append(outcome)
        return outcomes

    def _apply_one(self, o: RenderedObject) -> Outcome:
        key = self.scope.key(o)
        desired = prepare(o, self.applyset, self.scope)
        what = f"{o.component}: {key}"
        live = self.live_index(o.group, o.kind).get(key)
        if live is not None and self.options.skip_unchanged:
            want = desired["metadata"]["annotations"][HASH_ANNOTATION]
            taken = fields_taken(desired, live.managed_fields)
            if live.content_hash == want and not taken:
                return self._done(Outcome(key, o.component, UNCHANGED))
        res = self.kube.discovery.find(o.group, o.kind)
        if res is None:
            if self.options.dry_run:
                return self._done(
                    Outcome(key, o.component, PENDING, "its CRD is not installed yet")
                )
            res = self.kube.discovery.require(o.group, o.kind, what)
        return self._done(self._patch(o, key, res, desired, what, existed=live is not None))

    def _patch(
        self,
        o: RenderedObject,
        key: ObjectKey,
        res: Resource,
        desired: JSON,
        what: str,
        *,
        existed: bool,
    ) -> Outcome:
        query = [
            ("fieldManager", FIELD_MANAGER),
            ("force", "true" if self.options.force_conflicts else "false"),
        ]
        if self.options.dry_run:
            query.append(("dryRun", "All"))
        if desired.get("apiVersion") != res.api_version and o.group == res.group:
            path = _versioned(res, str(desired.get("apiVersion")), key)
        else:
            path = res.path(key.name, key.namespace)
        try:
            status, result = self.kube.request(
                "PATCH",
                path,
                query=query,
                body=desired,
                content_type="application/apply-patch+yaml",
                what=what,
                with_status=True,
            )
        except Conflict as exc:
            return Outcome(
                key,
                o.component,
                CONFLICT,
                f"{exc.server_message}; another field manager owns these fields "
                "(re-run with --force-conflicts to take them over)",
            )
        except ApiError as exc:
            if self.options.dry_run and exc.status == 404:
                # A dry-run creates nothing: objects in a namespace this render would create
                # cannot be validated until it exists.
                return Outcome(key, o.component, PENDING, exc.server_message)
            return Outcome(key, o.component, FAILED, f"{exc.server_message} (HTTP {exc.status})")
        action = CREATED if status == 201 or (not existed and self.options.dry_run) else CONFIGURED
        return Outcome(key, o.component, action, result=result if self.options.dry_run else None)

    def _done(self, outcome: Outcome) -> Outcome:
        if self.on_object is not None:
            self.on_object(outcome)
        return outcome


def _versioned(res: Resource, api_version: str, key: ObjectKey) -> str:
    # Apply through the object's own version: the preferred version may lack fields it sets.
    version = api_version.split("/", 1)[1] if "/" in api_version else api_version
    other = Resource(res.group, version, res.kind, res.plural, res.namespaced)
    return other.path(key.name, key.namespace)


def raise_for_failures(outcomes: Sequence[Outcome], step: str) -> None:
    bad = [o for o in outcomes if o.action in (FAILED, CONFLICT)]
    if bad:
        lines = "\n".join(f"  {o}" for o in bad[:20])
        more = f"\n  ... and {len(bad) - 20} more" if len(bad) > 20 else ""
        raise ApplyFailed(f"{len(bad)} object(s) failed in step {step}:\n{lines}{more}", list(bad))

"""What kfdeploy owns in a cluster, recorded the way kubectl's ApplySet (KEP-3659) does.

The parent is a Secret `kfdeploy-applyset-<env>` in `kube-system` labelled
`applyset.kubernetes.io/id`; every member carries `applyset.kubernetes.io/part-of=<id>`. The
parent's annotations say which kinds (`contains-group-kinds`) and namespaces
(`additional-namespaces`) hold members, so listing the members takes one LIST per kind and never
a scan of the whole cluster. Using the standard means `kubectl` (and anyone leaving kfdeploy)
understands what kfdeploy owns: `kubectl get <kind> -A -l applyset.kubernetes.io/part-of=<id>`.

Crash safety, as kubectl does it: before applying, the parent is widened to the union of the old
and new kinds and namespaces; only after pruning succeeded is it narrowed to the new set. A run
killed in between leaves a superset, which the next run lists and prunes correctly.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass

from kfdeploy import __version__
from kfdeploy.cluster.client import JSON, METADATA_LIST, Kube
from kfdeploy.plan.prune import LiveRef
from kfdeploy.render.kustomize import COMPONENT_LABEL
from kfdeploy.render.objects import ObjectKey

log = logging.getLogger(__name__)

ID_LABEL = "applyset.kubernetes.io/id"
PART_OF_LABEL = "applyset.kubernetes.io/part-of"
TOOLING_ANNOTATION = "applyset.kubernetes.io/tooling"
GROUP_KINDS_ANNOTATION = "applyset.kubernetes.io/contains-group-kinds"
NAMESPACES_ANNOTATION = "applyset.kubernetes.io/additional-namespaces"
FIELD_MANAGER = "kfdeploy"
PARENT_NAMESPACE = "kube-system"


def applyset_id(name: str, namespace: str, kind: str = "Secret", group: str = "") -> str:
    """KEP-3659: "applyset-" + base64url_nopad(sha256("<name>.<namespace>.<Kind>.<group>")) + "-v1"."""
    digest = hashlib.sha256(f"{name}.{namespace}.{kind}.{group}".encode()).digest()
    return "applyset-" + base64.urlsafe_b64encode(digest).decode().rstrip("=") + "-v1"


def group_kind_str(group: str, kind: str) -> str:
    return f"{kind}.{group}" if group else kind


def parse_group_kind(text: str) -> tuple[str, str]:
    kind, _, group = text.partition(".")
    return group, kind


@dataclass(frozen=True)
class ParentState:
    group_kinds: frozenset[tuple[str, str]]
    namespaces: frozenset[str]
    tooling: str


@dataclass(frozen=True)
class ApplySet:
    name: str
    namespace: str = PARENT_NAMESPACE

    @classmethod
    def for_environment(cls, env_name: str) -> ApplySet:
        return cls(f"kfdeploy-applyset-{env_name}")

    @property
    def id(self) -> str:
        return applyset_id(self.name, self.namespace)

    @property
    def path(self) -> str:
        return f"/api/v1/namespaces/{self.namespace}/secrets/{self.name}"

    @property
    def tooling(self) -> str:
        return f"kfdeploy/{__version__}"

    def read(self, kube: Kube) -> ParentState | None:
        obj = kube.get_or_none(self.path, what=f"ApplySet parent {self.namespace}/{self.name}")
        if obj is None:
            return None
        ann = obj.get("metadata", {}).get("annotations") or {}
        gks = {parse_group_kind(s) for s in ann.get(GROUP_KINDS_ANNOTATION, "").split(",") if s}
        nss = {
            s for s in ann.get(NAMESPACES_ANNOTATION, "").split(",") if s and s != self.namespace
        }
        return ParentState(frozenset(gks), frozenset(nss), str(ann.get(TOOLING_ANNOTATION, "")))

    def ensure(
        self,
        kube: Kube,
        current: ParentState | None,
        group_kinds: Iterable[tuple[str, str]],
        namespaces: Iterable[str],
    ) -> ParentState:
        """Write the parent only if it differs: a no-op apply must send no PATCH at all."""
        want = ParentState(
            frozenset(group_kinds),
            frozenset(n for n in namespaces if n and n != self.namespace),
            self.tooling,
        )
        if current != want:
            self.write(kube, want.group_kinds, want.namespaces)
        return want

    def write(
        self,
        kube: Kube,
        group_kinds: Iterable[tuple[str, str]],
        namespaces: Iterable[str],
        *,
        dry_run: bool = False,
    ) -> None:
        """Server-side apply the parent with exactly these kinds and namespaces."""
        # The parent's own namespace is implicit in KEP-3659, not an "additional" one.
        nss = sorted({n for n in namespaces if n and n != self.namespace})
        body: JSON = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                "labels": {ID_LABEL: self.id},
                "annotations": {
                    TOOLING_ANNOTATION: self.tooling,
                    GROUP_KINDS_ANNOTATION: ",".join(
                        sorted(group_kind_str(g, k) for g, k in set(group_kinds))
                    ),
                    NAMESPACES_ANNOTATION: ",".join(nss),
                },
            },
            "type": "Opaque",
        }
        query = [("fieldManager", FIELD_MANAGER), ("force", "true")]
        if dry_run:
            query.append(("dryRun", "All"))
        kube.request(
            "PATCH",
            self.path,
            query=query,
            body=body,
            content_type="application/apply-patch+yaml",
            what=f"ApplySet parent {self.name}",
        )

    def members(self, kube: Kube, group_kinds: Iterable[tuple[str, str]]) -> list[LiveRef]:
        """Every live object labelled part-of this set, for the given kinds (one LIST per kind).

        Kinds the server no longer serves (a CRD deleted by hand) have no members left to list.
        """
        out: list[LiveRef] = []
        for group, kind in sorted(set(group_kinds)):
            res = kube.discovery.find(group, kind)
            if res is None:
                log.info("ApplySet kind %s is not served any more; nothing to list", kind)
                continue
            data = kube.get(
                res.collection(),
                query=[("labelSelector", f"{PART_OF_LABEL}={self.id}")],
                accept=METADATA_LIST,
                what=f"list {group_kind_str(group, kind)}",
            )
            for item in data.get("items") or []:
                meta = item.get("metadata") or {}
                out.append(
                    LiveRef(
                        ObjectKey(group, kind, str(meta.get("namespace") or ""), str(meta["name"])),
                        component=str((meta.get("labels") or {}).get(COMPONENT_LABEL, "")),
                        annotations=dict(meta.get("annotations") or {}),
                    )
                )
        return out

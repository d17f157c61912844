"""Rules every rendered platform must pass before anything reaches a cluster.

Errors stop `render`, `apply` and `up`; warnings and notes are reported. Each finding names its
rule, component and object so it can be traced to the file that produced it.
"""

from __future__ import annotations

import base64
import json
import re
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from kfdeploy.config.model import Environment
from kfdeploy.render import elide
from kfdeploy.render.objects import RenderedObject

Severity = Literal["error", "warning", "note"]

# The annotation limit of client-side apply; server-side apply has none (kfdeploy uses SSA).
LAST_APPLIED_LIMIT = 262_144

_PLACEHOLDER = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")

# Kinds that are cluster-scoped. CRDs in the render add theirs (see _scopes).
_CLUSTER_SCOPED = {
    ("", "Namespace"),
    ("", "Node"),
    ("", "PersistentVolume"),
    ("rbac.authorization.k8s.io", "ClusterRole"),
    ("rbac.authorization.k8s.io", "ClusterRoleBinding"),
    ("apiextensions.k8s.io", "CustomResourceDefinition"),
    ("admissionregistration.k8s.io", "MutatingWebhookConfiguration"),
    ("admissionregistration.k8s.io", "ValidatingWebhookConfiguration"),
    ("admissionregistration.k8s.io", "ValidatingAdmissionPolicy"),
    ("admissionregistration.k8s.io", "ValidatingAdmissionPolicyBinding"),
    ("apiregistration.k8s.io", "APIService"),
    ("storage.k8s.io", "StorageClass"),
    ("storage.k8s.io", "CSIDriver"),
    ("scheduling.k8s.io", "PriorityClass"),
    ("node.k8s.io", "RuntimeClass"),
    ("policy", "PodSecurityPolicy"),
    ("certificates.k8s.io", "CertificateSigningRequest"),
    ("networking.k8s.io", "IngressClass"),
}

# Upstream's well-known default credentials (values, so generator hash suffixes do not hide them).
DEFAULT_SECRET_VALUES = {
    "pUBnBOY80SnXgjibTYM9ZWNzY2xreNGQok": "Dex/oauth2-proxy OIDC client secret",
    "7d16fee92f8d11b8940b081b3f8b8acb": "oauth2-proxy cookie secret",
    "$2y$12$4K/VkmDd1q1Orb3xAt82zu8gk7Ad6ReFR4LCP9UeYE90NLiN9Df72": "Dex static user password hash",
    "minio123": "KFP object store secret key",
    "minio": "KFP object store access key",
    "test": "Katib MySQL root password",
}


@dataclass(frozen=True)
class Finding:
    rule: str
    severity: Severity
    message: str
    component: str = ""
    object: str = ""

    def to_dict(self) -> dict[str, str]:
        return {
            "rule": self.rule,
            "severity": self.severity,
            "message": self.message,
            "component": self.component,
            "object": self.object,
        }

    def __str__(self) -> str:
        where = f"{self.component}: {self.object}: " if self.object else ""
        return f"{self.severity}: {where}{self.message} [{self.rule}]"


class Schemas(Protocol):
    """Elided CRD schemas (kfdeploy.render.elide): their YAML text and their parsed JSON text."""

    def text(self, block_id: str) -> str: ...

    def json_texts(self, ids: set[str]) -> dict[str, str]: ...

    def json_sizes(self, ids: set[str]) -> dict[str, int]: ...


def validate(
    env: Environment, objects: list[RenderedObject], *, schemas: Schemas | None = None
) -> list[Finding]:
    findings: list[Finding] = []
    scopes = _scopes(objects)
    elided = {ro.key: list(elide.marker_paths(ro.obj)) for ro in objects if _may_hold_markers(ro)}
    elided = {k: v for k, v in elided.items() if v}
    if elided and schemas is None:
        raise ValueError("objects with elided schemas need the schemas to be validated")
    ids = {i for v in elided.values() for _, i in v}
    sizes = schemas.json_sizes(ids) if schemas and ids else {}
    # Only schemas whose text holds a `$(` are worth walking for placeholders.
    parsed = (
        schemas.json_texts({i for i in ids if "$(" in schemas.text(i)}) if schemas and ids else {}
    )
    seen: dict[tuple[str, str, str, str], str] = {}
    images: dict[str, set[str]] = defaultdict(set)
    for ro in objects:
        o = ro.obj
        where = str(ro.key)

        def add(
            rule: str, sev: Severity, msg: str, *, _ro: RenderedObject = ro, _where: str = where
        ) -> None:
            findings.append(Finding(rule, sev, msg, _ro.component, _where))

        key = tuple(ro.key)
        if key in seen and seen[key] != ro.component:  # type: ignore[comparison-overlap]
            add("duplicate-object", "error", f"also rendered by component {seen[key]}")  # type: ignore[index]
        seen.setdefault(key, ro.component)  # type: ignore[arg-type]

        namespaced = scopes.get((ro.group, ro.kind), (ro.group, ro.kind) not in _CLUSTER_SCOPED)
        if namespaced and not ro.namespace:
            add(
                "missing-namespace",
                "error",
                f"{ro.kind} is namespaced but has no metadata.namespace",
            )

        for path, value in _all_strings(o, elided.get(ro.key, []), schemas, parsed):
            m = _PLACEHOLDER.search(value)
            if m:
                add(
                    "unresolved-placeholder",
                    "error",
                    f"unresolved kustomize variable $({m.group(1)}) at {'.'.join(map(str, path))}",
                )

        for image in _images(o):
            images[image].add(ro.component)
            tag = image.rsplit("/", 1)[-1]
            if "@sha256:" in image:
                continue
            if ":" not in tag:
                add(
                    "image-untagged",
                    "warning",
                    f"image {image} has no tag (pulls :latest, unpinned)",
                )
            elif tag.endswith(":latest"):
                add("image-latest", "warning", f"image {image} uses :latest (unpinned)")

        size = (
            elide.json_size(o, sizes)
            if ro.key in elided
            else len(json.dumps(o, separators=(",", ":")))
        )
        if size > LAST_APPLIED_LIMIT:
            add(
                "large-object",
                "note",
                f"{size} bytes as JSON: over client-side apply's {LAST_APPLIED_LIMIT}-byte annotation limit; "
                "applied server-side",
            )

        if not env.simulated:
            for what in _default_credentials(ro):
                add(
                    "default-credentials",
                    "error",
                    f"carries upstream's default {what}; give it a secret source in the environment's secrets:",
                )
    return findings


def errors(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.severity == "error"]


def _scopes(objects: list[RenderedObject]) -> dict[tuple[str, str], bool]:
    """(group, kind) -> namespaced?, from the CRDs in the render."""
    out: dict[tuple[str, str], bool] = {}
    for ro in objects:
        if ro.kind == "CustomResourceDefinition":
            spec = ro.obj.get("spec", {})
            out[(spec.get("group", ""), spec.get("names", {}).get("kind", ""))] = (
                spec.get("scope") == "Namespaced"
            )
    return out


# Subtrees whose strings are not kustomize's to resolve: API docs, and container command/args/env
# where $(VAR) is Kubernetes' own dependent-variable syntax, expanded by the kubelet.
_SKIP_KEYS = {"description", "command", "args", "env"}


def _strings(node: Any, path: tuple[str | int, ...]) -> Iterator[tuple[tuple[str | int, ...], str]]:
    if isinstance(node, str):
        yield path, node
    elif isinstance(node, dict):
        for k, v in node.items():
            if k in _SKIP_KEYS or (
                k == "data" and path == ()
            ):  # ConfigMap data: scripts, templates
                continue
            yield from _strings(v, (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _strings(v, (*path, i))


def _may_hold_markers(ro: RenderedObject) -> bool:
    return ro.kind == "CustomResourceDefinition"


def _all_strings(
    o: dict[str, Any],
    markers: list[tuple[tuple[str | int, ...], str]],
    schemas: Schemas | None,
    parsed: dict[str, str],
) -> Iterator[tuple[tuple[str | int, ...], str]]:
    """The object's strings, and those of its elided schemas whose text holds a `$(` (the
    only ones worth walking)."""
    yield from _strings(o, ())
    for path, block_id in markers:
        if block_id in parsed:
            yield from _strings(json.loads(parsed[block_id]), path)


def pod_spec(o: dict[str, Any]) -> dict[str, Any] | None:
    """The pod template's spec of a workload (or a Pod's spec), else None."""
    spec = o.get("spec")
    if not isinstance(spec, dict):
        return None
    if o.get("kind") == "Pod":
        return spec
    if o.get("kind") == "CronJob":
        spec = spec.get("jobTemplate", {}).get("spec", {})
    tmpl = spec.get("template", {})
    ps = tmpl.get("spec") if isinstance(tmpl, dict) else None
    return ps if isinstance(ps, dict) else None


def _images(o: dict[str, Any]) -> Iterator[str]:
    ps = pod_spec(o)
    if ps is None:
        return
    for key in ("initContainers", "containers", "ephemeralContainers"):
        for c in ps.get(key) or []:
            img = c.get("image")
            # Templated images (Istio injection templates, $VAR env) are not pulled as written.
            if isinstance(img, str) and img and not any(ch in img for ch in '{}$"'):
                yield img


def _default_credentials(ro: RenderedObject) -> Iterator[str]:
    o = ro.obj
    if ro.kind == "Secret":
        for k, v in (o.get("stringData") or {}).items():
            yield from _match(k, str(v))
        for k, v in (o.get("data") or {}).items():
            try:
                yield from _match(k, base64.b64decode(v).decode())
            except (ValueError, UnicodeDecodeError):
                continue
        if ro.name.startswith("mysql-secret"):
            pw = (o.get("stringData") or {}).get("password")
            if pw is None and "password" in (o.get("data") or {}):
                pw = base64.b64decode(o["data"]["password"]).decode(errors="replace")
            if pw == "":
                yield "empty MySQL password"
    elif ro.kind == "ConfigMap" and ro.namespace == "auth" and ro.name.startswith("dex"):
        text = json.dumps(o.get("data") or {})
        if "staticPasswords" in text and "user@example.com" in text:
            yield "Dex static user user@example.com"


def _match(key: str, value: str) -> Iterator[str]:
    what = DEFAULT_SECRET_VALUES.get(value)
    # 'minio' and 'test' are defaults only where they are credentials, not any string.
    if what and (len(value) > 8 or any(w in key.lower() for w in ("key", "password", "secret"))):
        yield f"{what} ({key})"

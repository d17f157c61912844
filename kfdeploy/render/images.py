"""The images a rendered platform pulls, wherever they are named, and rewriting them to a mirror.

Upstream names images in far more places than pod templates, and an air-gapped cluster fails on
the first one a mirror misses, usually long after install (the first notebook, the first
pipeline run, the first injected sidecar). So one walker, `visit_images`, knows every place:

- any `image:` string field of an object (pod templates, KServe ServingRuntimes and
  ClusterStorageContainers, Trainer runtimes, Knative's caching `Image`),
- container `env` values whose name says IMAGE (`V2_DRIVER_IMAGE`, `VOLUME_VIEWER_IMAGE`),
- container args of the form `--...image=REF` or `--...image REF` (Argo's executor, cert-manager's
  ACME solver),
- ConfigMap values: a key naming an image whose whole value is a reference (`queue-sidecar-image`,
  `TENSORBOARD_IMAGE`, `cacheImage`), `image: REF` / `"image": "REF"` lines inside embedded
  YAML/JSON (Katib's suggestion and metrics-collector images, KServe's inferenceservice-config,
  the Jupyter spawner's image lists, Istio's injection template), and Istio's `"hub"` (the
  injected sidecar is `<hub>/<proxy.image>:<tag>`, never written out whole).

Collecting and rewriting share the walker, so `kfdeploy images` lists exactly what the mirror
rewrite touched. The registry-mirror overlay records each rewritten object's originals in the
annotation `kfdeploy.cern.ch/source-images`, so the list carries source and destination.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from kfdeploy.render.objects import RenderedObject

SOURCE_ANNOTATION = "kfdeploy.cern.ch/source-images"

# A reference as the distribution spec writes it: [host[:port]/]path[:tag][@digest]. Lower-case
# path components only; templated strings ({{ }}, $VAR) never match, which is what we want:
# kustomize or Istio fills them in later and they are not pulled as written.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_HOST = r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::[0-9]+)?)"
_REF = (
    rf"(?:{_HOST}/)?{_COMPONENT}(?:/{_COMPONENT})*"
    r"(?::[\w][\w.-]{0,127})?(?:@sha256:[0-9a-f]{64})?"
)
_REF_RE = re.compile(rf"^{_REF}$")
# `image: REF`, `"image" : "REF"`, `defaultImage: REF` inside embedded YAML/JSON text. The key
# must end in image/Image; the value must look qualified (see _plausible).
_TEXT_RE = re.compile(
    rf"""(?P<pre>["']?[A-Za-z_]*[iI]mage["']?\s*[:=]\s*["']?)(?P<ref>{_REF})(?P<post>["']?)(?=[\s,}}\]]|$)""",
    re.M,
)
# A YAML list item that is a fully qualified reference (the Jupyter spawner's image options).
_LIST_RE = re.compile(
    rf"""^(?P<pre>[ \t]*-[ \t]+["']?)(?P<ref>{_REF})(?P<post>["']?)[ \t]*$""", re.M
)
_HUB_RE = re.compile(rf"""(?P<pre>"hub"\s*:\s*")(?P<ref>{_HOST}(?:/{_COMPONENT})*)(?P<post>")""")
_ARG_RE = re.compile(rf"^(?P<pre>--[\w-]*image[\w-]*=)(?P<ref>{_REF})$", re.I)
_ARG_FLAG_RE = re.compile(r"^--[\w-]*image[\w-]*$", re.I)


@dataclass(frozen=True)
class ImageName:
    """A parsed reference, normalised the way the container runtime resolves it."""

    registry: str  # docker.io when the reference names none
    path: str  # library/busybox for a bare docker.io name
    tag: str  # "" when absent
    digest: str  # "" or sha256:...

    @classmethod
    def parse(cls, ref: str) -> ImageName:
        rest, _, digest = ref.partition("@")
        first, sep, remainder = rest.partition("/")
        if sep and ("." in first or ":" in first or first == "localhost"):
            registry, path = first, remainder
        else:
            registry, path = "docker.io", rest
        tag = ""
        last_slash = path.rfind("/")
        colon = path.rfind(":")
        if colon > last_slash:
            path, tag = path[:colon], path[colon + 1 :]
        if registry == "docker.io" and "/" not in path:
            path = f"library/{path}"
        return cls(registry, path, tag, digest)

    def suffix(self) -> str:
        return (f":{self.tag}" if self.tag else "") + (f"@{self.digest}" if self.digest else "")


def is_reference(value: str) -> bool:
    return bool(_REF_RE.match(value))


def _plausible(ref: str) -> bool:
    """In free text, only qualified references count: a bare `proxyv2` is Istio's image *name*
    (combined with its hub), not something to pull or rewrite."""
    return "/" in ref or ":" in ref or "@" in ref


def mirror_reference(ref: str, prefix: str, keep_registry_host: bool = False) -> str:
    """`gcr.io/istio-release/proxyv2:1.28.0` -> `<prefix>/istio-release/proxyv2:1.28.0`.

    Idempotent: a reference already under the prefix is returned unchanged.
    """
    if ref == prefix or ref.startswith(prefix + "/"):
        return ref
    name = ImageName.parse(ref)
    path = f"{name.registry}/{name.path}" if keep_registry_host else name.path
    return f"{prefix}/{path}{name.suffix()}"


def mirror_hub(hub: str, prefix: str, keep_registry_host: bool = False) -> str:
    """Istio's hub is a reference without the final name: mirror it as a directory."""
    if hub == prefix or hub.startswith(prefix + "/"):
        return hub
    probe = mirror_reference(f"{hub}/x", prefix, keep_registry_host)
    return probe[: -len("/x")]


# ---- the walker ------------------------------------------------------------------------------------

# fn(reference, where) -> replacement; `where` is a short description of the site for reports.
Visitor = Callable[[str, str], str]

_SKIP_KINDS = {"CustomResourceDefinition"}  # schemas describe `image`, they name none


def visit_images(obj: dict[str, Any], fn: Visitor) -> dict[str, Any]:
    """Call fn on every image reference in obj, replacing each with fn's result (in place)."""
    if obj.get("kind") in _SKIP_KINDS:
        return obj
    if obj.get("kind") == "ConfigMap" and isinstance(obj.get("data"), dict):
        data = obj["data"]
        for key in sorted(data):
            if isinstance(data[key], str):
                data[key] = _visit_text(key, data[key], fn)
    _visit_node(obj, (), fn)
    return obj


def _visit_node(node: Any, path: tuple[str | int, ...], fn: Visitor) -> None:
    if isinstance(node, dict):
        for k, v in list(node.items()):
            if k in ("description", "data", "stringData", "binaryData", "annotations") and (
                k != "data" or path == ()
            ):
                # ConfigMap data is text (handled above); Secret data is not ours to touch.
                continue
            where = ".".join(map(str, (*path, k)))
            if k == "image" and isinstance(v, str) and is_reference(v):
                node[k] = fn(v, where)
            elif k == "env" and isinstance(v, list):
                for i, e in enumerate(v):
                    if (
                        isinstance(e, dict)
                        and isinstance(e.get("value"), str)
                        and "IMAGE" in str(e.get("name", "")).upper()
                        and is_reference(e["value"])
                        and _plausible(e["value"])
                    ):
                        e["value"] = fn(e["value"], f"{where}.{e.get('name')}")
                    else:
                        _visit_node(e, (*path, k, i), fn)
            elif k in ("args", "command") and isinstance(v, list):
                _visit_args(v, where, fn)
            else:
                _visit_node(v, (*path, k), fn)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            _visit_node(v, (*path, i), fn)


def _visit_args(args: list[Any], where: str, fn: Visitor) -> None:
    for i, a in enumerate(args):
        if not isinstance(a, str):
            continue
        if m := _ARG_RE.match(a):
            args[i] = m.group("pre") + fn(m.group("ref"), f"{where}[{i}]")
        elif (
            i > 0
            and isinstance(args[i - 1], str)
            and _ARG_FLAG_RE.match(args[i - 1])
            and is_reference(a)
            and _plausible(a)
        ):
            args[i] = fn(a, f"{where}[{i}]")


def _visit_text(key: str, text: str, fn: Visitor) -> str:
    where = f"data.{key}"
    if key.startswith("_example"):
        return text  # Knative/KServe documentation blocks: read by people, never by a controller
    stripped = text.strip()
    if "image" in key.lower() and is_reference(stripped) and _plausible(stripped):
        new = fn(stripped, where)
        return text.replace(stripped, new, 1)

    def sub(m: re.Match[str]) -> str:
        ref = m.group("ref")
        if not _plausible(ref):
            return m.group(0)
        return m.group("pre") + fn(ref, where) + m.group("post")

    def sub_item(m: re.Match[str]) -> str:
        name = ImageName.parse(m.group("ref"))
        qualified = name.registry != "docker.io" or m.group("ref").startswith("docker.io/")
        if not (qualified and (name.tag or name.digest)):
            return m.group(0)
        return m.group("pre") + fn(m.group("ref"), where) + m.group("post")

    text = _TEXT_RE.sub(sub, text)
    text = _LIST_RE.sub(sub_item, text)
    if '"hub"' in text:
        text = _HUB_RE.sub(
            lambda m: (
                m.group("pre") + fn(m.group("ref") + "/", where + " (hub)")[:-1] + m.group("post")
            ),
            text,
        )
    return text


def istio_hub_images(obj: dict[str, Any]) -> Iterator[str]:
    """The images Istio composes from `values` (hub + image + tag): the sidecar it injects."""
    if obj.get("kind") != "ConfigMap":
        return
    for key in ("values", "merged-values"):
        raw = (obj.get("data") or {}).get(key)
        if not isinstance(raw, str) or '"hub"' not in raw:
            continue
        try:
            glob = json.loads(raw).get("global", {})
        except (ValueError, AttributeError):
            continue
        hub, tag = glob.get("hub"), glob.get("tag")
        if not hub or not tag:
            continue
        for part in ("proxy", "proxy_init"):
            image = (glob.get(part) or {}).get("image")
            if isinstance(image, str) and image and "/" not in image:
                yield f"{hub}/{image}:{tag}"


# ---- the list -----------------------------------------------------------------------------------


@dataclass
class ImageRef:
    image: str  # what the cluster pulls (after the registry mirror, if any)
    source: str  # where it comes from upstream (== image without a mirror)
    components: set[str] = field(default_factory=set)
    where: set[str] = field(default_factory=set)

    def to_dict(self) -> dict[str, object]:
        return {
            "image": self.image,
            "source": self.source,
            "components": sorted(self.components),
            "where": sorted(self.where),
        }


def source_map(obj: dict[str, Any]) -> dict[str, str]:
    raw = (obj.get("metadata", {}).get("annotations") or {}).get(SOURCE_ANNOTATION)
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except ValueError:
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def collect_images(objects: Iterable[RenderedObject]) -> list[ImageRef]:
    """Every image the platform pulls, with its upstream source and where it is named."""
    found: dict[str, ImageRef] = {}
    for ro in objects:
        sources = source_map(ro.obj)

        def record(
            ref: str, where: str, _ro: RenderedObject = ro, _src: dict[str, str] = sources
        ) -> str:
            if ref.endswith("/"):  # an Istio hub: the images it composes are added below
                return ref
            item = found.setdefault(ref, ImageRef(ref, _src.get(ref, ref)))
            item.components.add(_ro.component)
            item.where.add(f"{_ro.key} {where}")
            return ref

        # The walker mutates; collect must not, so it walks a copy.
        visit_images(json.loads(json.dumps(ro.obj)), record)
        for ref in istio_hub_images(ro.obj):
            record(ref, "data.values (hub/proxy.image:tag)")
    return sorted(found.values(), key=lambda r: r.image)

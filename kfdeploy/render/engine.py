"""Render an environment: one kustomize build per component, in parallel, cached by content.

Workspace layout (stable relative paths, so the generated kustomizations read the same every
time and can be built by hand with plain `kustomize build`):

    <cache>/render/work/<env>/
        release  -> the release folder          overlays -> the repository's overlays/
        params/site-params.yaml                  (local-config ConfigMap the overlays read)
        components/<name>/kustomization.yaml     (release paths + site overlay components)

The cache entry `<cache>/render/out/<key>/` holds one YAML file per component, `objects.json`
and `index.json`; its key hashes every input (release files, overlays, the environment's render
settings, kustomize's version, kfdeploy's render version), so an unchanged render only copies.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kfdeploy.config.model import Environment
from kfdeploy.errors import ConfigError, RenderError
from kfdeploy.render import elide, kustomize, memo, overlays
from kfdeploy.render.kustomize import COMPONENT_LABEL, Kustomize
from kfdeploy.render.objects import RenderedObject
from kfdeploy.render.release import Release, cache_dir, default_pins_dir, load_pin, locate_release

log = logging.getLogger(__name__)

# Bump when the shape of rendered output changes, so old cache entries are not reused.
RENDER_VERSION = "4"


@dataclass
class RenderResult:
    env: Environment
    release: Release
    key: str
    cache_hit: bool
    cache_path: Path
    components: list[str]
    counts: dict[str, int]
    seconds: float
    findings: list[Any] = field(default_factory=list)
    kustomize: Kustomize | None = None  # the program that rendered (or would render) it
    _objects: list[RenderedObject] | None = None

    @property
    def objects(self) -> list[RenderedObject]:
        """All rendered objects in component order, CRD schemas included (loaded from the cache
        and the schema store on first use; a schema never parsed before is parsed then)."""
        if self._objects is None:
            data = json.loads((self.cache_path / "objects.json").read_text(encoding="utf-8"))
            objects = [RenderedObject(d["component"], d["object"]) for d in data]
            _fill_schemas(objects)
            self._objects = objects
        return self._objects

    def component_file(self, component: str) -> Path:
        return self.cache_path / f"{component}.yaml"

    def index(self) -> dict[str, Any]:
        index: dict[str, Any] = json.loads(
            (self.cache_path / "index.json").read_text(encoding="utf-8")
        )
        return index


def selected_components(env: Environment, release: str) -> list[str]:
    pin = load_pin(release)
    names = [c.name for c in pin.components]
    if env.kubeflow.components == "all":
        chosen = names
    else:
        unknown = [c for c in env.kubeflow.components if c not in names]
        if unknown:
            raise ConfigError(
                f"unknown component {unknown[0]!r} in release {release}; expected one of {', '.join(names)}",
                key="kubeflow.components",
            )
        chosen = [n for n in names if n in env.kubeflow.components]
    bad_exclude = [c for c in env.kubeflow.exclude if c not in names]
    if bad_exclude:
        raise ConfigError(
            f"unknown component {bad_exclude[0]!r} in release {release}; expected one of {', '.join(names)}",
            key="kubeflow.exclude",
        )
    return [n for n in chosen if n not in env.kubeflow.exclude]


def render(
    env: Environment,
    *,
    manifests_dir: Path | None = None,
    use_cache: bool = True,
    jobs: int | None = None,
    progress: Any = None,
    elide_schemas: bool | None = None,
) -> RenderResult:
    """Render env; returns quickly from the cache when no input changed.

    CRD schemas are elided from what kustomize reads and put back afterwards (see
    kfdeploy.render.elide); elide_schemas=False, or KFDEPLOY_RENDER_ELIDE=0, builds from the
    release as it is."""
    started = time.monotonic()
    pin = load_pin(env.kubeflow.release)
    release = locate_release(pin, manifests_dir)
    components = selected_components(env, pin.release)
    kz = kustomize.find_kustomize()
    if elide_schemas is None:
        elide_schemas = os.environ.get("KFDEPLOY_RENDER_ELIDE", "1") != "0"
    fingerprint = _release_fingerprint(release)
    key = _cache_key(env, release, components, kz, fingerprint, elide_schemas)
    out = cache_dir() / "render" / "out" / key
    if use_cache and (out / "index.json").is_file():
        index = json.loads((out / "index.json").read_text(encoding="utf-8"))
        return RenderResult(
            env,
            release,
            key,
            True,
            out,
            components,
            {c: index["components"][c]["objects"] for c in components},
            time.monotonic() - started,
            findings=index.get("findings", []),
            kustomize=kz,
        )

    store = schema_store()
    elided_root = _elided_dest(release, fingerprint) if elide_schemas else None
    ws = _workspace(env, release, components, elided_root)
    jobs = jobs or max(2, os.cpu_count() or 2)

    convert = _schema_converter(kz, jobs=1)
    # Schemas are parsed (for their size) beside the builds, from the moment a build names
    # them, rather than all after the last build; output conversions run here too.
    parser = ThreadPoolExecutor(max_workers=jobs)
    requested: set[str] = set()
    waiting: set[str] = set()
    lock = threading.Lock()
    parsing: list[Future[None]] = []

    def build(name: str, as_released: bool = False) -> bytes:
        stream = None
        if elided_root is not None and not as_released:
            try:
                stream = kustomize.build(kz, ws / "components" / name)
                ids = set(elide.markers(stream.decode()))
            except RenderError as exc:
                # A kustomization that reaches into a schema: build this one as it is.
                log.debug("component %s: built without schema elision (%s)", name, exc)
                stream = None
            else:
                # Its schemas are parsed (for their size) while other components build, in
                # parts of a few megabytes: each kubectl start costs ~0.06 s of CPU.
                with lock:
                    new = ids - requested
                    requested.update(new)
                    waiting.update(new)
                    if sum(store.size_of(i) for i in waiting) >= _PARSE_PART:
                        parsing.append(parser.submit(store.parse, set(waiting), convert))
                        waiting.clear()
        if stream is None:
            stream = kustomize.build(kz, ws / _PRISTINE / name)
        if progress is not None:
            progress(name, stream.count(b"\n---\n") + 1 if stream.strip() else 0)
        return stream

    # Biggest builds first: the pool then finishes close together instead of waiting on a tail.
    order = sorted(components, key=lambda n: -_weight(n))
    with parser, ThreadPoolExecutor(max_workers=jobs) as pool:
        futures: dict[str, Future[bytes]] = {}
        if elided_root is not None and not (elided_root / ".complete").is_file():
            # The elided copy is made once per release. Components that read no elidable file
            # build from the release itself meanwhile (the same result, sooner).
            reach = elide.Reach(release.root)
            files, reached = reach.elidable(
                {c.name: [*c.paths, *c.components] for c in release.pin.components}
            )
            for name in order:
                if not reached.get(name, set()) & files:
                    futures[name] = pool.submit(build, name, True)
            elide.prepare(release.root, elided_root, store, files, reach.folders)
        for name in order:
            if name not in futures:
                futures[name] = pool.submit(build, name)
        # Converted to JSON in a few batches as builds finish (not one process per component:
        # kubectl's start-up alone costs ~0.05 s of CPU; not all at the end, where it would
        # trail the last build). Objects find their component again by the label kustomize
        # stamped on them.
        streams: dict[str, bytes] = {}
        converting: list[Future[str]] = []
        batch: list[str] = []
        names = {f: n for n, f in futures.items()}
        per_batch = max(6, len(components) // 3)
        for fut in as_completed(futures.values()):
            streams[names[fut]] = fut.result()
            batch.append(names[fut])
            if len(batch) >= per_batch or len(streams) == len(components):
                data = b"\n---\n".join(streams[c] for c in batch)
                converting.append(parser.submit(kustomize.to_json, kz, data))
                batch = []
        # What is left to parse when the builds are done, spread over every core.
        for part in _chunks(waiting, store, size=_PARSE_PART // jobs):
            parsing.append(parser.submit(store.parse, part, convert))
        texts = [job.result() for job in converting]
    for job in parsing:
        job.result()
    text = "\n".join(texts)
    built: dict[str, list[dict[str, Any]]] = {c: [] for c in components}
    pristine: dict[str, list[dict[str, Any]]] = {c: [] for c in components}
    for o, p in zip(kustomize.json_stream(text), kustomize.json_stream(text), strict=True):
        comp = (o.get("metadata", {}).get("labels") or {}).get(COMPONENT_LABEL)
        if comp not in built:
            raise RenderError(
                f"kustomize returned an object without its component label: {o.get('kind')} {o.get('metadata', {}).get('name')}"
            )
        built[comp].append(o)
        pristine[comp].append(p)
    for c in components:
        built[c] = overlays.transform(env, c, built[c])

    objects = [RenderedObject(c, o) for c in components for o in built[c]]
    from kfdeploy.render.validate import validate  # import here: validate imports engine types

    findings = validate(env, objects, schemas=SchemaFacts(store, kz))
    # Components Python did not touch keep kustomize's own YAML, byte for byte (but for the
    # schemas put back).
    changed = [c for c in components if built[c] != pristine[c]]
    yaml_texts = {c: streams[c].decode() for c in components if c not in changed}
    if changed:
        printed = kustomize.print_yaml(kz, ws / "print", [built[c] for c in changed])
        yaml_texts.update(zip(changed, printed, strict=True))
    yaml_texts = {c: elide.splice(t, store) for c, t in yaml_texts.items()}
    _write_cache(out, kz, components, built, yaml_texts, objects, findings, key, env, release)
    return RenderResult(
        env,
        release,
        key,
        False,
        out,
        components,
        {c: len(built[c]) for c in components},
        time.monotonic() - started,
        findings=[f.to_dict() for f in findings],
        kustomize=kz,
    )


# ---- CRD schemas ----------------------------------------------------------------------------------


def schema_store() -> elide.SchemaStore:
    return elide.SchemaStore(cache_dir() / "render" / "schemas")


def _elided_dest(release: Release, fingerprint: str) -> Path:
    """Where the release's copy with CRD schemas elided lives (made once per release content)."""
    tag = hashlib.sha256(
        f"{elide.ELIDE_VERSION}\0{release.root.resolve()}\0{fingerprint}".encode()
    ).hexdigest()[:32]
    return cache_dir() / "render" / "elided" / tag


def _fill_schemas(objects: list[RenderedObject]) -> None:
    ids = {i for ro in objects for _, i in elide.marker_paths(ro.obj)}
    if not ids:
        return
    schemas = schema_store().json_texts(ids, _schema_converter(kustomize.find_kustomize()))
    for ro in objects:
        elide.fill(ro.obj, schemas)


def _schema_converter(kz: Kustomize, jobs: int | None = None) -> Any:
    """Parse schema blocks ({id: YAML} -> {id: JSON text}) the way the rest of the render is
    parsed: by kubectl (`jobs` processes at once, default one per core), each block wrapped in
    an object kubectl accepts."""

    def convert(blocks: dict[str, str]) -> dict[str, str]:
        docs = {
            i: f"apiVersion: kfdeploy.cern.ch/v1\nkind: Schema\nmetadata:\n  name: {i}\nschema:\n  "
            + text[:-1].replace("\n", "\n  ")
            + "\n"
            for i, text in blocks.items()
        }
        sizes = {i: len(d) for i, d in docs.items()}
        n = jobs or max(2, os.cpu_count() or 2)
        out: dict[str, str] = {}
        with ThreadPoolExecutor(max_workers=n) as pool:
            for part in pool.map(
                lambda part: kustomize.field_json(
                    kz, "\n---\n".join(docs[i] for i in part).encode(), "schema"
                ),
                _balanced_by(sorted(docs), sizes, n),
            ):
                out.update(part)
        missing = set(blocks) - set(out)
        if missing:
            raise RenderError(f"kubectl returned no schema for {sorted(missing)[0]}")
        return out

    return convert


@dataclass
class SchemaFacts:
    """Elided schemas as validation reads them (kfdeploy.render.validate.Schemas)."""

    store: elide.SchemaStore
    kz: Kustomize

    def text(self, block_id: str) -> str:
        return self.store.text(block_id)

    def json_texts(self, ids: set[str]) -> dict[str, str]:
        return self.store.json_texts(ids, _schema_converter(self.kz))

    def json_sizes(self, ids: set[str]) -> dict[str, int]:
        return self.store.json_sizes(ids, _schema_converter(self.kz))


_PARSE_PART = 3 << 20


def _chunks(ids: set[str], store: elide.SchemaStore, size: int) -> list[set[str]]:
    parts: list[set[str]] = [set()]
    acc = 0
    for i in sorted(ids):
        n = store.size_of(i)
        if parts[-1] and acc + n > size:
            parts.append(set())
            acc = 0
        parts[-1].add(i)
        acc += n
    return [p for p in parts if p]


def _balanced_by(names: list[str], sizes: dict[str, int], parts: int) -> list[list[str]]:
    total = sum(sizes[n] for n in names) or 1
    groups: list[list[str]] = [[]]
    acc = 0
    for n in names:
        if acc >= total * len(groups) / parts and len(groups) < parts:
            groups.append([])
        groups[-1].append(n)
        acc += sizes[n]
    return [g for g in groups if g]


def _weight(name: str) -> int:
    # Rough build cost measured on 26.03 with schemas elided; unknown names go in the middle.
    return {
        "pipelines": 10,
        "notebook-controller": 6,
        "istio": 6,
        "knative-serving": 5,
        "katib": 5,
        "cert-manager": 5,
        "trainer": 4,
        "kserve": 4,
        "spark-operator": 4,
    }.get(name, 3)


def write_out(result: RenderResult, out_dir: Path) -> list[Path]:
    """Copy the rendered files (one per component, plus index.json) into out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for c in result.components:
        dst = out_dir / f"{c}.yaml"
        shutil.copyfile(result.component_file(c), dst)
        written.append(dst)
    shutil.copyfile(result.cache_path / "index.json", out_dir / "index.json")
    written.append(out_dir / "index.json")
    return written


# ---- workspace ----------------------------------------------------------------------------------


_PRISTINE = "components-as-released"


def _workspace(
    env: Environment, release: Release, components: list[str], elided_root: Path | None
) -> Path:
    """components/<name> builds from the elided release (or the release itself when elision is
    off); components-as-released/<name> always from the release itself."""
    ws = cache_dir() / "render" / "work" / env.name
    (ws / "components").mkdir(parents=True, exist_ok=True)
    _symlink(ws / "release", (elided_root or release.root).resolve())
    _symlink(ws / "release-as-released", release.root.resolve())
    _symlink(ws / "overlays", overlays.overlays_dir().resolve())
    _symlink(ws / "fixes", fixes_dir().resolve())
    params = overlays.site_params(env)
    # A folder of its own: kustomize only reads files at or below a kustomization's root.
    (ws / "params").mkdir(exist_ok=True)
    _write_if_changed(
        ws / "params" / "kustomization.yaml",
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [site-params.yaml]\n",
    )
    _write_if_changed(
        ws / "params" / "site-params.yaml",
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {
                    "name": "kfdeploy-site-params",
                    # local-config: kustomize reads it (replacements) but never outputs it
                    "annotations": {"config.kubernetes.io/local-config": "true"},
                },
                "data": params,
            },
            sort_keys=True,
        ),
    )
    for name in components:
        comp = release.pin.component(name)
        kust: dict[str, Any] = {
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "resources": [f"../../release/{p}" for p in comp.paths] + ["../../params"],
            "labels": [
                {
                    "pairs": {COMPONENT_LABEL: name},
                    "includeSelectors": False,
                    "includeTemplates": False,
                }
            ],
        }
        comps = [f"../../release/{p}" for p in comp.components]
        comps += [f"../../fixes/{p}" for p in comp.fixes]
        comps += [f"../../overlays/{p}" for p in overlays.kustomize_components(env, name)]
        if comps:
            kust["components"] = comps
        for folder, release_link in (("components", "release"), (_PRISTINE, "release-as-released")):
            d = ws / folder / name
            d.mkdir(parents=True, exist_ok=True)
            text = yaml.safe_dump(kust, sort_keys=False)
            _write_if_changed(
                d / "kustomization.yaml", text.replace("../../release/", f"../../{release_link}/")
            )
    return ws


def fixes_dir() -> Path:
    return default_pins_dir() / "fixes"


def _symlink(link: Path, target: Path) -> None:
    if link.is_symlink() and link.readlink() == target:
        return
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(target, target_is_directory=True)


def _write_if_changed(path: Path, text: str) -> None:
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")


# ---- cache ----------------------------------------------------------------------------------------


def _cache_key(
    env: Environment,
    release: Release,
    components: list[str],
    kz: Kustomize,
    fingerprint: str,
    elided: bool,
) -> str:
    h = hashlib.sha256()
    h.update(f"render-{RENDER_VERSION}\0{kz.version}\0{elided}\0".encode())
    h.update(fingerprint.encode())
    h.update(overlays.fingerprint().encode())
    h.update(overlays.fingerprint(fixes_dir()).encode())
    h.update(json.dumps(overlays.render_settings(env), sort_keys=True).encode())
    h.update(json.dumps(components).encode())
    return h.hexdigest()[:32]


def _release_fingerprint(release: Release) -> str:
    """The pin's digest for verified trees; for a local folder, every file's path, size and mtime
    (the same digest a render's memo keeps, kfdeploy.render.memo)."""
    if release.origin != "local":
        return release.pin.digest
    return memo.stat_digest(release.root.resolve())


def _write_cache(
    out: Path,
    kz: Kustomize,
    components: list[str],
    built: dict[str, list[dict[str, Any]]],
    yaml_texts: dict[str, str],
    objects: list[RenderedObject],
    findings: list[Any],
    key: str,
    env: Environment,
    release: Release,
) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=".tmp-"))
    try:
        for c in components:
            (tmp / f"{c}.yaml").write_text(yaml_texts[c], encoding="utf-8")
        (tmp / "objects.json").write_text(
            json.dumps(
                [{"component": o.component, "object": o.obj} for o in objects], sort_keys=True
            ),
            encoding="utf-8",
        )
        index = {
            "environment": env.name,
            "release": release.pin.release,
            "key": key,
            "kustomize": kz.version,
            "total": len(objects),
            "components": {
                c: {
                    "objects": len(built[c]),
                    "file": f"{c}.yaml",
                    "kinds": dict(sorted(Counter(o["kind"] for o in built[c]).items())),
                }
                for c in components
            },
            "kinds": dict(sorted(Counter(o.kind for o in objects).items())),
            "findings": [f.to_dict() for f in findings],
        }
        (tmp / "index.json").write_text(
            json.dumps(index, indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)  # atomic: a crash mid-write never leaves a half cache entry
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)

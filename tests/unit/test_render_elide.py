"""CRD schema elision: what is elided, what is left alone, and how changes by kustomize are caught.

The end-to-end proof (every shipped environment renders the same objects with and without
elision) is in tests/integration/test_render_envs.py; these pin down the rules one by one.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import yaml

from kfdeploy.errors import RenderError
from kfdeploy.render import elide, kustomize

CRD = """\
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.org
spec:
  group: example.org
  names: {kind: Widget, plural: widgets}
  scope: Namespaced
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        description: A widget.
        properties:
          spec:
            description: |
              Spec of the widget.
              Two lines.
            properties:
              size:
                type: integer
                enum: [1, 2, 3]
              pattern:
                type: string
                pattern: '^[a-z]+$'
            type: object
        type: object
  - name: v2
    served: true
    storage: false
    schema:
      openAPIV3Schema:
        type: object
        x-kubernetes-preserve-unknown-fields: true
"""

CONFIGMAP = """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: docs
data:
  crd.yaml: |
    kind: CustomResourceDefinition
    spec:
      openAPIV3Schema:
        type: object
"""


def _elide(tmp_path: Path, text: str) -> tuple[str | None, elide.SchemaStore]:
    path = tmp_path / "crd.yaml"
    path.write_text(text)
    store = elide.SchemaStore(tmp_path / "store")
    return elide._elided_file(path, store), store


def test_schemas_become_markers_and_splice_restores_them(tmp_path: Path) -> None:
    text = CONFIGMAP + "---\n" + CRD
    elided, store = _elide(tmp_path, text)
    assert elided is not None
    assert elided.count(elide.MARKER) == 2
    assert "Two lines." not in elided
    assert elided.startswith(CONFIGMAP)  # a non-CRD document is never touched
    restored = elide.splice(elided, store)
    assert list(yaml.safe_load_all(restored)) == list(yaml.safe_load_all(text))


def test_same_schema_text_shares_one_id_whatever_its_indent(tmp_path: Path) -> None:
    head, versions = CRD.split("  versions:\n")
    indented = head + "  versions:\n" + "".join("  " + ln + "\n" for ln in versions.splitlines())
    assert yaml.safe_load(indented) == yaml.safe_load(CRD)
    a, _ = _elide(tmp_path, CRD)
    b, _ = _elide(tmp_path, indented)
    assert a is not None and b is not None
    assert elide.markers(a) == elide.markers(b)
    assert len(set(elide.markers(a))) == 2


@pytest.mark.parametrize(
    ("change", "why"),
    [
        # a quoted scalar whose continuation sits left of the key: parsers accept it, so the
        # block's extent is not what indentation says
        (
            ("description: A widget.", "description: 'A\n  widget.'"),
            "quoted scalar past the block",
        ),
        (("description: A widget.", "description: &doc A widget."), "anchor"),
        (("type: integer", "type: *kind"), "alias"),
        (("description: |\n", "description: |+\n"), "keep chomping"),
        (("Two lines.", "Two\tlines."), "tab"),
    ],
)
def test_uncertain_blocks_are_left_alone(tmp_path: Path, change: tuple[str, str], why: str) -> None:
    one_version = CRD.split("  - name: v2")[0]
    elided, _ = _elide(tmp_path, one_version.replace(*change, 1))
    assert elided is None, why


def test_flow_style_and_non_crd_documents_are_left_alone(tmp_path: Path) -> None:
    flow = CRD.split("  - name: v2")[0].split("    schema:")[0] + (
        "    schema:\n      openAPIV3Schema: {type: object}\n"
    )
    assert _elide(tmp_path, flow)[0] is None
    assert _elide(tmp_path, CONFIGMAP)[0] is None


def test_markers_refuse_a_schema_kustomize_merged_into(tmp_path: Path) -> None:
    elided, _ = _elide(tmp_path, CRD)
    assert elided is not None
    block_id = elide.markers(elided)[0]
    merged = elided.replace(
        f"{elide.MARKER}: {block_id}\n", f"{elide.MARKER}: {block_id}\n        required: [spec]\n"
    )
    with pytest.raises(elide.ElisionError):
        elide.markers(merged)
    moved = elided.replace(
        f"openAPIV3Schema:\n        {elide.MARKER}", f"other:\n        {elide.MARKER}"
    )
    with pytest.raises(elide.ElisionError):
        elide.markers(moved)


def _kustomization(folder: Path, base: str, extra: str) -> Path:
    folder.mkdir()
    (folder / "kustomization.yaml").write_text(f"resources: [../{base}]\n" + textwrap.dedent(extra))
    return folder


@pytest.mark.parametrize(
    ("extra", "outcome"),
    [
        ("labels:\n- pairs: {app: widgets}\nnamespace: apps\n", "kept"),
        # a JSON patch adding into a schema: a key beside the marker, which `markers` refuses
        (
            """\
            patches:
            - target: {kind: CustomResourceDefinition}
              patch: '[{"op": "add", "path": "/spec/versions/0/schema/openAPIV3Schema/required", "value": ["spec"]}]'
            """,
            "refused",
        ),
        # a JSON patch into a schema's inside: kustomize fails on the elided copy
        (
            """\
            patches:
            - target: {kind: CustomResourceDefinition}
              patch: '[{"op": "replace", "path": "/spec/versions/0/schema/openAPIV3Schema/properties/spec/type", "value": "string"}]'
            """,
            "failed",
        ),
        # a strategic merge replacing the versions list: same result either way
        (
            """\
            patches:
            - patch: |
                apiVersion: apiextensions.k8s.io/v1
                kind: CustomResourceDefinition
                metadata: {name: widgets.example.org}
                spec:
                  versions:
                  - name: v1
                    schema:
                      openAPIV3Schema: {required: [spec]}
            """,
            "kept",
        ),
    ],
)
def test_what_kustomize_does_to_markers(tmp_path: Path, extra: str, outcome: str) -> None:
    """Against the real kustomize: a marker either comes out as it went in (and splicing gives
    what the release itself renders to), or the change is caught."""
    elided, store = _elide(tmp_path, CRD)
    assert elided is not None
    for name, text in (("elided", elided), ("as-released", CRD)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "crd.yaml").write_text(text)
        (tmp_path / name / "kustomization.yaml").write_text("resources: [crd.yaml]\n")
    kz = kustomize.find_kustomize()
    expected = kustomize.build(kz, _kustomization(tmp_path / "a", "as-released", extra)).decode()
    built = _kustomization(tmp_path / "b", "elided", extra)
    if outcome == "failed":
        with pytest.raises(RenderError):
            kustomize.build(kz, built)
        return
    out = kustomize.build(kz, built).decode()
    if outcome == "refused":
        with pytest.raises(elide.ElisionError):
            elide.markers(out)
        return
    assert yaml.safe_load(elide.splice(out, store)) == yaml.safe_load(expected)


def test_only_plain_resources_are_elidable(tmp_path: Path) -> None:
    """Patches and anything below a kustomization that talks about schemas (a JSON patch into
    one, a patch file carrying one) stay as they are."""
    rel = tmp_path / "release"
    for d in ("app/base", "app/overlay", "patcher", "other"):
        (rel / d).mkdir(parents=True)
    (rel / "app/base/crd.yaml").write_text(CRD)
    (rel / "app/base/labels.yaml").write_text(
        "kind: CustomResourceDefinition\nmetadata: {name: x}\n"
    )
    (rel / "app/base/kustomization.yaml").write_text(
        "resources: [crd.yaml]\npatchesStrategicMerge: [labels.yaml]\n"
    )
    (rel / "app/overlay/kustomization.yaml").write_text("resources: [../base]\n")
    (rel / "patcher/crd-patch.yaml").write_text(CRD)
    (rel / "patcher/kustomization.yaml").write_text(
        "resources: [../app/base]\npatchesStrategicMerge: [crd-patch.yaml]\n"
    )
    (rel / "other/crd.yaml").write_text(CRD)
    (rel / "other/kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "resources": ["crd.yaml"],
                "patchesJson6902": [
                    {
                        "target": {
                            "kind": "CustomResourceDefinition",
                            "name": "widgets.example.org",
                        },
                        "patch": json.dumps(
                            [
                                {
                                    "op": "add",
                                    "path": "/spec/versions/0/schema/openAPIV3Schema/x",
                                    "value": 1,
                                }
                            ]
                        ),
                    }
                ],
            }
        )
    )

    def elidable(*roots: str) -> set[Path]:
        return elide.Reach(rel).elidable({"all": list(roots)})[0]

    assert elidable("app/overlay", "other") == {(rel / "app/base/crd.yaml").resolve()}
    # a patch file carrying a schema marks what lies below its kustomization
    assert elidable("app/overlay", "patcher") == set()

    files = elidable("app/overlay", "other")
    store = elide.SchemaStore(tmp_path / "store")
    copy = elide.prepare(rel, tmp_path / "elided", store, files)
    assert elide.MARKER in (copy / "app/base/crd.yaml").read_text()
    assert (copy / "patcher/crd-patch.yaml").read_text() == CRD
    assert (copy / "other/crd.yaml").read_text() == CRD
    # made once: a second call finds it
    assert elide.prepare(rel, tmp_path / "elided", store, files) == copy


def test_fill_and_json_size_match_the_full_object(tmp_path: Path) -> None:
    elided, store = _elide(tmp_path, CRD)
    assert elided is not None
    obj = yaml.safe_load(elided)
    full = yaml.safe_load(CRD)
    ids = [i for _, i in elide.marker_paths(obj)]
    schemas = {i: json.dumps(yaml.safe_load(store.text(i)), separators=(",", ":")) for i in ids}
    size = elide.json_size(obj, {i: len(t) for i, t in schemas.items()})
    assert size == len(json.dumps(full, separators=(",", ":")))
    elide.fill(obj, schemas)
    assert obj == full


def test_schema_sizes_as_python_counts_them_from_kubectls_json() -> None:
    """kubectl (Go) and Python write JSON differently (<>& and non-ASCII, \\b \\f, floats);
    the size kept for a schema is Python's, as for every other object the size rule measures."""
    doc = textwrap.dedent(
        """\
        apiVersion: kfdeploy.cern.ch/v1
        kind: Schema
        metadata: {name: s1}
        schema:
          description: "a <b> & c, café, 🙂, tab\\tbell\\bform\\f"
          type: object
        ---
        apiVersion: kfdeploy.cern.ch/v1
        kind: Schema
        metadata: {name: s2}
        schema:
          maximum: 0.000001
          minimum: 1.50
          pattern: '^\\\\u003c$'
        """
    )
    texts = kustomize.field_json(kustomize.find_kustomize(), doc.encode(), "schema")
    assert sorted(texts) == ["s1", "s2"]
    for text in texts.values():
        assert elide.python_json_size(text) == len(
            json.dumps(json.loads(text), separators=(",", ":"))
        )
    assert "\\u003c" in texts["s1"]  # Go's escaping really is exercised


def test_sparse_copy_builds_like_the_release_and_never_writes_into_it(tmp_path: Path) -> None:
    """With the kustomization folders given, only what kustomize must read through real folders
    is real (an overlay three levels away from its base, a patches/ folder beside it); the
    rest are symlinks. Building from the copy gives what building from the release gives, and
    the release is left exactly as it was."""
    rel = tmp_path / "release"
    for d in ("apps/widget/base/patches", "apps/widget/overlays/site", "docs/deep/er"):
        (rel / d).mkdir(parents=True)
    (rel / "apps/widget/base/crd.yaml").write_text(CRD)
    (rel / "apps/widget/base/patches/labels.yaml").write_text(
        "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\n"
        "metadata:\n  name: widgets.example.org\n  labels: {team: ml}\n"
    )
    (rel / "apps/widget/base/kustomization.yaml").write_text(
        "resources: [crd.yaml]\npatches:\n- path: patches/labels.yaml\n"
    )
    (rel / "apps/widget/overlays/site/kustomization.yaml").write_text(
        "resources: [../../base]\nlabels:\n- pairs: {site: cern}\n"
    )
    (rel / "docs/deep/er/notes.md").write_text("not kustomize's\n")
    before = {p: p.read_bytes() for p in rel.rglob("*") if p.is_file()}

    reach = elide.Reach(rel)
    files, reached = reach.elidable({"widget": ["apps/widget/overlays/site"]})
    assert files == {(rel / "apps/widget/base/crd.yaml").resolve()}
    assert reached["widget"] >= files
    store = elide.SchemaStore(tmp_path / "store")
    copy = elide.prepare(rel, tmp_path / "elided", store, files, reach.folders)
    assert (copy / "docs").is_symlink()
    assert not (copy / "apps/widget/base/patches").is_symlink()

    kz = kustomize.find_kustomize()
    out = kustomize.build(kz, copy / "apps/widget/overlays/site").decode()
    assert len(elide.markers(out)) == 2
    expected = kustomize.build(kz, rel / "apps/widget/overlays/site").decode()
    assert yaml.safe_load(elide.splice(out, store)) == yaml.safe_load(expected)
    assert {p: p.read_bytes() for p in rel.rglob("*") if p.is_file()} == before

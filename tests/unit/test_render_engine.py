"""The render engine against the real kustomize and the real upstream releases."""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from kfdeploy.config.load import load_environment
from kfdeploy.errors import ManifestsError, RenderError, ToolError
from kfdeploy.render import kustomize
from kfdeploy.render.engine import render, write_out
from kfdeploy.render.objects import ObjectKey
from kfdeploy.render.release import Source, fetch_release, load_pin, locate_release, tree_digest

DATA = Path(__file__).resolve().parents[1] / "data"
EXAMPLE_COUNTS = {"26.03": 675, "v1.11.0": 653}


@pytest.fixture(scope="module")
def cache(isolated_cache: Path) -> Path:
    return isolated_cache


def _monolithic_keys(release_dir: Path) -> list[ObjectKey]:
    kz = kustomize.find_kustomize()
    objs = kustomize.to_objects(kz, kustomize.build(kz, release_dir / "example"))
    keys = []
    for o in objs:
        av = o["apiVersion"]
        md = o["metadata"]
        keys.append(
            ObjectKey(
                av.split("/")[0] if "/" in av else "",
                o["kind"],
                md.get("namespace", ""),
                md["name"],
            )
        )
    return keys


@pytest.mark.slow
@pytest.mark.parametrize("release", ["26.03", "v1.11.0"])
def test_per_component_render_equals_upstream_example(
    release: str, cache: Path, manifests_dir: Path
) -> None:
    """Building component by component loses and adds nothing compared with upstream's one build."""
    env = load_environment(str(DATA / "envs" / f"plain-{release.replace('.', '-')}.yaml")).env
    result = render(env, manifests_dir=manifests_dir)
    assert not result.cache_hit
    keys = [o.key for o in result.objects]
    expected = _monolithic_keys(manifests_dir / release)
    assert len(expected) == EXAMPLE_COUNTS[release]
    if release == "v1.11.0":
        # manifests/fixes/v1.11-user-namespace: upstream's Profile keeps its unresolved name
        # `$(profile-name)`; the fix gives it the example's intended name and drops the
        # namespace-less generator ConfigMap that only fed the broken replacement (653 -> 652).
        profile = ObjectKey("kubeflow.org", "Profile", "", "$(profile-name)")
        expected.remove(profile)
        expected.append(profile._replace(name="kubeflow-user-example-com"))
        expected = [k for k in expected if not k.name.startswith("default-install-config")]
        assert len(expected) == EXAMPLE_COUNTS[release] - 1
    assert len(keys) == len(expected) == result.index()["total"] == sum(result.counts.values())
    assert sorted(keys) == sorted(expected)
    # every object knows its component, and kustomize stamped it on the object too
    for o in result.objects:
        assert o.obj["metadata"]["labels"][kustomize.COMPONENT_LABEL] == o.component
    # the JobSet placeholder upstream leaves unresolved is fixed, so validation finds no error
    assert [f for f in result.findings if f["severity"] == "error"] == []
    assert (
        sum(1 for f in result.findings if f["rule"] == "large-object")
        == {"26.03": 8, "v1.11.0": 6}[release]
    )


@pytest.mark.slow
def test_render_is_byte_identical_and_cached(
    cache: Path, manifests_dir: Path, tmp_path: Path
) -> None:
    env = load_environment(str(DATA / "envs" / "plain-26-03.yaml")).env
    first = render(env, manifests_dir=manifests_dir, use_cache=False)
    a = write_out(first, tmp_path / "a")
    second = render(env, manifests_dir=manifests_dir, use_cache=False)
    b = write_out(second, tmp_path / "b")
    assert [p.name for p in a] == [p.name for p in b]
    for pa, pb in zip(a, b, strict=True):
        assert pa.read_bytes() == pb.read_bytes(), f"{pa.name} differs between two renders"
    warm = render(env, manifests_dir=manifests_dir)
    assert warm.cache_hit
    assert warm.counts == first.counts
    assert [o.key for o in warm.objects] == [o.key for o in first.objects]
    index = json.loads((tmp_path / "a" / "index.json").read_text())
    assert index["total"] == 675
    assert index["components"]["pipelines"]["objects"] == first.counts["pipelines"]


@pytest.mark.slow
def test_changed_input_misses_the_cache(cache: Path, manifests_dir: Path, tmp_path: Path) -> None:
    """Editing a file of the release (here: a copy of it) changes the key; nothing stale is served."""
    copy = tmp_path / "manifests"
    shutil.copytree(manifests_dir / "26.03", copy / "26.03", symlinks=True)
    text = "\n".join(
        [
            "simulated: true",
            "kubeflow: {release: '26.03', components: [kubeflow-roles]}",
            "cluster: {provider: kubeconfig, kubeconfig: /x}",
        ]
    )
    (tmp_path / "roles.yaml").write_text(text)
    env = load_environment(str(tmp_path / "roles.yaml")).env
    first = render(env, manifests_dir=copy)
    assert render(env, manifests_dir=copy).cache_hit
    role = copy / "26.03" / "common" / "kubeflow-roles" / "base" / "cluster-roles.yaml"
    role.write_text(role.read_text() + "\n")  # content-equal for kustomize, but an input changed
    again = render(env, manifests_dir=copy)
    assert not again.cache_hit and again.key != first.key
    assert again.counts == first.counts


def test_kustomize_failure_carries_its_message(cache: Path, tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text("resources: [does-not-exist.yaml]\n")
    with pytest.raises(RenderError) as exc:
        kustomize.build(kustomize.find_kustomize(), tmp_path)
    assert "does-not-exist.yaml" in str(exc.value)
    assert exc.value.stderr


def test_old_kustomize_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake = tmp_path / "kustomize"
    fake.write_text("#!/bin/sh\necho v4.5.7\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("KFDEPLOY_KUSTOMIZE", str(fake))
    with pytest.raises(ToolError, match="needs >= 5"):
        kustomize.find_kustomize()


def _fake(path: Path, output: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\necho '{output}'\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


def test_a_standalone_kustomize_of_kubectls_version_is_preferred(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`kfdeploy tools build` puts kustomize of kubectl's kustomize version in the cache; render
    then runs it (`build`), and still converts with kubectl. Another version is never taken
    for kubectl's."""
    from kfdeploy.render import tools

    monkeypatch.setenv("KFDEPLOY_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("KFDEPLOY_KUSTOMIZE", raising=False)
    bin_dir = tmp_path / "bin"
    kubectl = _fake(bin_dir / "kubectl", "Client Version: v1.37.1\nKustomize Version: v5.8.1")
    monkeypatch.setattr(kustomize, "_candidates", lambda: [str(kubectl)])
    monkeypatch.setenv("PATH", str(bin_dir))
    kustomize._found.clear()
    assert kustomize.find_kustomize().build_cmd == (str(kubectl), "kustomize")

    _fake(tools.kustomize_path("5.8.1"), "v5.8.0")  # not the same version: ignored
    kustomize._found.clear()
    assert kustomize.find_kustomize().build_cmd == (str(kubectl), "kustomize")

    tools.kustomize_path("5.8.1").unlink()
    built = _fake(tools.kustomize_path("5.8.1"), "v5.8.1")
    kustomize._found.clear()
    kz = kustomize.find_kustomize()
    assert kz.build_cmd == (str(built), "build")
    assert kz.kubectl == str(kubectl) and kz.version == "5.8.1"
    kustomize._found.clear()


# ---- downloading a pinned release ------------------------------------------------------------------


@pytest.fixture(scope="module")
def release_repo(tmp_path_factory: pytest.TempPathFactory, manifests_dir: Path) -> Path:
    """A local git repository holding the prepared v1.11.0 tree (stands in for the mirror)."""
    repo = tmp_path_factory.mktemp("mirror") / "manifests"
    shutil.copytree(manifests_dir / "v1.11.0", repo)
    git = ["git", "-C", str(repo), "-c", "user.email=t@example.org", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q", "-b", "main"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "v1.11.0 prepared"], check=True)
    subprocess.run([*git, "tag", "v1.11.0"], check=True)
    return repo


def test_download_verifies_digest_and_fills_cache(
    release_repo: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KFDEPLOY_MANIFESTS", raising=False)
    pin = load_pin("v1.11.0")
    source = Source(url=release_repo.as_uri(), revision="v1.11.0")
    first = locate_release(pin, None, source=source)
    assert first.origin == "download"
    assert tree_digest(first.root) == pin.digest
    again = locate_release(pin, None, source=source)
    assert again.origin == "cache" and again.root == first.root


def test_download_with_wrong_digest_is_refused(release_repo: Path, tmp_path: Path) -> None:
    git = ["git", "-C", str(release_repo), "-c", "user.email=t@example.org", "-c", "user.name=t"]
    tampered = release_repo / "common" / "kubeflow-roles" / "base" / "kustomization.yaml"
    original = tampered.read_text()
    tampered.write_text(original + "# tampered\n")
    subprocess.run([*git, "commit", "-qam", "tamper"], check=True)
    subprocess.run([*git, "tag", "tampered"], check=True)
    pin = load_pin("v1.11.0")
    dest = tmp_path / "dl" / "v1.11.0"
    with pytest.raises(ManifestsError, match="refusing to use it"):
        fetch_release(pin, dest, source=Source(url=release_repo.as_uri(), revision="tampered"))
    assert not dest.exists(), "an unverified tree never lands where the cache would find it"


def test_download_of_unknown_revision_says_so(release_repo: Path, tmp_path: Path) -> None:
    pin = load_pin("v1.11.0")
    with pytest.raises(ManifestsError, match="git could not fetch no-such-tag"):
        fetch_release(
            pin,
            tmp_path / "x" / "v1.11.0",
            source=Source(url=release_repo.as_uri(), revision="no-such-tag"),
        )


def test_shared_releases_match_their_pins(manifests_dir: Path) -> None:
    for release in EXAMPLE_COUNTS:
        assert tree_digest(manifests_dir / release) == load_pin(release).digest

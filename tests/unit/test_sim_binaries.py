"""The build recipe: derived from k8s.io/kubernetes' own go.mod, cached by version."""

from __future__ import annotations

from pathlib import Path

import pytest

from kfdeploy.sim import binaries
from kfdeploy.sim.errors import SimBuildError

UPSTREAM = """module k8s.io/kubernetes

go 1.26.0

require (
\tgithub.com/blang/semver/v4 v4.0.0
\tk8s.io/api v0.0.0
\tk8s.io/apimachinery v0.0.0
\tk8s.io/utils v0.0.0-20260210185600-b8788abfbbc2
)

require (
\tk8s.io/cri-client v0.0.0 // indirect
)

replace (
\tk8s.io/api => ./staging/src/k8s.io/api
)
"""


def test_staging_modules_map_to_published_versions() -> None:
    repl = binaries.staging_replacements(UPSTREAM, "v1.36.3")
    # pseudo-versions (k8s.io/utils) are real modules and must not be replaced
    assert repl == {"k8s.io/api": "v0.36.3", "k8s.io/apimachinery": "v0.36.3"}


def test_generated_gomod_matches_the_recipe() -> None:
    text = binaries.kubernetes_gomod("v1.36.3", {"k8s.io/api": "v0.36.3"}, "1.26.0")
    assert text.startswith(
        "module kfdeploy.local/k8sbuild\n\ngo 1.26.0\n\nrequire k8s.io/kubernetes v1.36.3\n"
    )
    assert "replace k8s.io/api => k8s.io/api v0.36.3\n" in text


def test_ldflags_stamp_the_version() -> None:
    flags = binaries._ldflags("v1.36.3")
    assert "k8s.io/component-base/version.gitVersion=v1.36.3" in flags
    assert "gitMajor=1 " in flags and "gitMinor=36 " in flags


def _fake_bins(directory: Path, names: list[str]) -> None:
    directory.mkdir(parents=True)
    for name in names:
        path = directory / name
        path.write_text("#!/bin/sh\necho 'Kubernetes v9.9.9'\necho 'etcd Version: 9.9.9'\n")
        path.chmod(0o755)


def test_bin_dir_setting_is_used_and_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_bins(
        tmp_path / "bins", ["kube-apiserver", "kube-controller-manager", "kube-scheduler", "etcd"]
    )
    monkeypatch.setenv(binaries.BIN_DIR_ENV, str(tmp_path / "bins"))
    found = binaries.locate()
    assert found is not None and found.source == binaries.BIN_DIR_ENV
    assert found.kubernetes_version == "v9.9.9"
    (tmp_path / "bins" / "etcd").unlink()
    with pytest.raises(SimBuildError, match="lacks executable etcd"):
        binaries.locate()


def test_cached_build_is_a_no_op(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KFDEPLOY_CACHE", str(tmp_path))
    monkeypatch.delenv(binaries.BIN_DIR_ENV, raising=False)
    _fake_bins(binaries.kube_dir() / "bin", list(binaries.KUBE_COMMANDS))
    _fake_bins(binaries.etcd_dir() / "bin", ["etcd"])
    monkeypatch.setenv("PATH", "/nonexistent")  # proves `go` is never needed
    found = binaries.ensure()
    assert found.source == "cache"
    assert found.kube_apiserver == binaries.kube_dir() / "bin" / "kube-apiserver"


def test_missing_go_gives_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KFDEPLOY_CACHE", str(tmp_path))
    monkeypatch.delenv(binaries.BIN_DIR_ENV, raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(SimBuildError) as err:
        binaries.build_kubernetes()
    assert "`go` is not installed" in str(err.value)
    assert err.value.hint and binaries.BIN_DIR_ENV in err.value.hint
    assert err.value.exit_code == 4


def test_require_never_builds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KFDEPLOY_CACHE", str(tmp_path))
    monkeypatch.delenv(binaries.BIN_DIR_ENV, raising=False)
    with pytest.raises(SimBuildError, match="not built"):
        binaries.require()
    assert not (tmp_path / "go").exists()

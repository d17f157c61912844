"""Session-wide test settings.

Every test renders from the shared, prepared Kubeflow releases beside the repository
(../shared/kubeflow-manifests), never from a download: the test suite must not reach the network.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_MANIFESTS = REPO.parent / "shared" / "kubeflow-manifests"


def pytest_configure(config: pytest.Config) -> None:
    if not os.environ.get("KFDEPLOY_MANIFESTS"):
        os.environ["KFDEPLOY_MANIFESTS"] = str(SHARED_MANIFESTS)


@pytest.fixture(scope="session")
def manifests_dir() -> Path:
    path = Path(os.environ["KFDEPLOY_MANIFESTS"])
    if not (path / "26.03").is_dir():
        pytest.fail(
            f"Kubeflow manifests not found at {path} (set KFDEPLOY_MANIFESTS)", pytrace=False
        )
    return path


@pytest.fixture(scope="module")
def isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A render cache of the module's own (KFDEPLOY_CACHE), so 'cold' really is cold and nothing
    leaks between modules. Not for simulator tests: the binaries live in the cache too."""
    path = tmp_path_factory.mktemp("kfdeploy-cache")
    old = os.environ.get("KFDEPLOY_CACHE")
    os.environ["KFDEPLOY_CACHE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("KFDEPLOY_CACHE", None)
    else:
        os.environ["KFDEPLOY_CACHE"] = old

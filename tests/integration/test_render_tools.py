"""The standalone kustomize `kfdeploy tools build` makes renders exactly what kubectl's own
kustomize renders (so preferring it changes nothing but start-up time).

The binary is built before the suite enters its network namespace (`nox -s tests` runs
`kfdeploy tools build`, which needs the Go module proxy once). Without it the test is skipped,
except under CI=true, where that is a failure.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kfdeploy.config.load import load_environment
from kfdeploy.render import kustomize, tools
from kfdeploy.render.engine import render

pytestmark = [pytest.mark.slow]

DATA = Path(__file__).resolve().parents[1] / "data"


def test_standalone_kustomize_renders_what_kubectl_renders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, manifests_dir: Path
) -> None:
    kustomize._found.clear()
    monkeypatch.delenv("KFDEPLOY_KUSTOMIZE", raising=False)
    found = kustomize.find_kustomize()
    assert found.kubectl is not None
    standalone = tools.kustomize_path(found.version)  # the real cache, not a test's
    if not standalone.is_file():
        message = f"no standalone kustomize at {standalone}: run `kfdeploy tools build`"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    env = load_environment(str(DATA / "envs" / "plain-v1-11-0.yaml")).env
    results = {}
    for name, program in (("kubectl", found.kubectl), ("standalone", str(standalone))):
        monkeypatch.setenv("KFDEPLOY_CACHE", str(tmp_path / name))
        monkeypatch.setenv(
            "KFDEPLOY_KUSTOMIZE", "" if name == "kubectl" else program
        )  # empty: the default search, which finds kubectl in a fresh cache
        kustomize._found.clear()
        results[name] = render(env, manifests_dir=manifests_dir)
        assert results[name].kustomize is not None
        assert results[name].kustomize.build_cmd[0] == program
    kustomize._found.clear()
    a, b = results["kubectl"], results["standalone"]
    assert a.findings == b.findings
    for c in a.components:
        assert a.component_file(c).read_bytes() == b.component_file(c).read_bytes(), c

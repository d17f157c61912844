"""Developer and CI sessions: `nox -s tests`, `lint`, `typecheck`, `bench`.

The test session builds (or reuses, from ~/.cache/kfdeploy) the simulated control plane's Go
binaries first, because the integration tests run against that real control plane.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import nox

nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["lint", "typecheck", "tests"]

ROOT = Path(__file__).parent
SHARED_MANIFESTS = ROOT.parent / "shared" / "kubeflow-manifests"
PY = "3.11"


def _env() -> dict[str, str]:
    env = {}
    if not os.environ.get("KFDEPLOY_MANIFESTS") and SHARED_MANIFESTS.is_dir():
        env["KFDEPLOY_MANIFESTS"] = str(SHARED_MANIFESTS)
    return env


@nox.session(python=PY)
def tests(session: nox.Session) -> None:
    """Unit and integration tests (real kustomize, real control plane, Magnum emulator)."""
    session.install("-e", ".[dev]")
    session.run("kfdeploy", "sim", "build", env=_env())
    # Built before the suite loses the network (the Go module proxy is needed once).
    session.run("kfdeploy", "tools", "build", env=_env())
    # The network rule: the whole suite runs in a loopback-only network namespace, so no test
    # (and no kfdeploy code under test) can reach an address off this machine. `--required`
    # fails instead of running unisolated where namespaces are not available.
    session.run(
        "kfdeploy",
        "sim",
        "isolate",
        "--required",
        "--",
        "pytest",
        *(session.posargs or ["-p", "no:cacheprovider"]),
        env=_env(),
    )


@nox.session(python=PY)
def lint(session: nox.Session) -> None:
    session.install("ruff>=0.6")
    session.run("ruff", "check", "kfdeploy", "tests", "bench", "noxfile.py")
    session.run("ruff", "format", "--check", "kfdeploy", "tests", "bench", "noxfile.py")


@nox.session(python=PY)
def typecheck(session: nox.Session) -> None:
    session.install("-e", ".[dev]")
    session.run("mypy", "kfdeploy")


@nox.session(python=PY)
def bench(session: nox.Session) -> None:
    """Benchmarks against the tools a user would otherwise run, in the same run (ratios)."""
    session.install("-e", ".[dev]")
    # The kustomize kfdeploy renders with where Go is there (once, cached): what an operator
    # who ran `kfdeploy tools build` gets. Without Go, kubectl's own kustomize is measured.
    if shutil.which("go"):
        session.run("kfdeploy", "tools", "build", env=_env())
    which = session.posargs or ["render", "apply"]
    for name in which:
        session.run("python", f"bench/{name}.py", env=_env())

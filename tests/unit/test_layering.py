"""The layering DEVELOPERS.md asks for, checked on every import statement in kfdeploy (those
inside functions too): a pure core that plans, adapters at the edges that talk to programs,
clusters and clouds, and a thin CLI on top."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "kfdeploy"


def _modules() -> dict[str, set[str]]:
    """Module name -> every module it imports (absolute names)."""
    found: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        imports: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                imports.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                imports.add(node.module)
                imports.update(f"{node.module}.{a.name}" for a in node.names)
        found[name] = imports
    return found


MODULES = _modules()


def _importers(prefix: str) -> set[str]:
    return {
        m
        for m, imports in MODULES.items()
        if any(i == prefix or i.startswith(prefix + ".") for i in imports)
    }


def _inside(module: str, *packages: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def test_only_the_cluster_adapters_speak_kubernetes() -> None:
    assert _importers("kubernetes") == {
        "kfdeploy.cluster.client",
        "kfdeploy.checks.kube",
        "kfdeploy.cloud.kubeconfig_provider",
    }


def test_only_the_magnum_adapter_speaks_openstack() -> None:
    assert _importers("openstack")
    assert all(_inside(m, "kfdeploy.cloud.magnum") for m in _importers("openstack"))


@pytest.mark.parametrize("core", ["kfdeploy.plan", "kfdeploy.config"])
def test_the_core_is_pure(core: str) -> None:
    """Plans and environment models are computed, not fetched: no processes, sockets, clients."""
    for module, imports in MODULES.items():
        if not _inside(module, core):
            continue
        for i in imports:
            assert not _inside(i, "subprocess", "socket", "kubernetes", "openstack", "urllib3"), (
                module,
                i,
            )
            assert not _inside(
                i, "kfdeploy.cluster", "kfdeploy.cloud", "kfdeploy.workflows", "kfdeploy.cli"
            ), (module, i)


def test_rendering_needs_no_cluster_cloud_or_simulator() -> None:
    for module, imports in MODULES.items():
        if _inside(module, "kfdeploy.render"):
            bad = [
                i
                for i in imports
                if _inside(
                    i,
                    "kfdeploy.cluster",
                    "kfdeploy.cloud",
                    "kfdeploy.workflows",
                    "kfdeploy.sim",
                    "kfdeploy.cli",
                )
            ]
            assert not bad, (module, bad)


def test_nothing_below_the_cli_imports_it() -> None:
    assert all(_inside(m, "kfdeploy.cli", "kfdeploy.entry") for m in _importers("kfdeploy.cli"))

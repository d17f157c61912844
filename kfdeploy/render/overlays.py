"""Site overlays: which kustomize Components an environment adds to each component's build,
the parameters they read, and the few rewrites kustomize cannot express.

The overlays themselves live in the repository's `overlays/` folder as plain kustomize
Components, so `kustomize build` works on them by hand too.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from kfdeploy.config.model import Environment


def overlays_dir() -> Path:
    return Path(os.environ.get("KFDEPLOY_OVERLAYS") or Path(__file__).resolve().parents[2] / "overlays")


def site_params(env: Environment) -> dict[str, str]:
    """Values the overlays read through kustomize `replacements` (a local-config ConfigMap)."""
    params: dict[str, str] = {"environment": env.name}
    if env.site.domain:
        params["domain"] = env.site.domain
    return params


def kustomize_components(env: Environment, component: str) -> list[str]:
    """Overlay folders (relative to overlays/) added to this component's build."""
    out: list[str] = []
    for name in env.overlays.enabled():
        folder = overlays_dir() / name
        if (folder / "kustomization.yaml").is_file():
            out.append(name)
    return out


def transform(env: Environment, component: str, objs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Python-side rewrites after kustomize (none yet)."""
    return objs


def render_settings(env: Environment) -> dict[str, Any]:
    """The parts of the environment that change rendered output (the cache key hashes these)."""
    return env.model_dump(mode="json", include={"kubeflow", "site", "overlays", "secrets", "simulated"})


def fingerprint(root: Path | None = None) -> str:
    """Content hash of a small folder (overlays/ by default): cheaper than a stale cache."""
    h = hashlib.sha256()
    root = root or overlays_dir()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for f in sorted(filenames):
            p = Path(dirpath) / f
            h.update(str(p.relative_to(root)).encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()

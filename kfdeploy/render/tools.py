"""A standalone kustomize of the same version as kubectl's, built once from its Go module.

`kubectl kustomize` and `kustomize build` of the same version render the same bytes, but every
`kubectl` start pays for kubectl's own initialisation (~0.05 s of CPU); a render runs one build
per component (24 for Kubeflow 26.03), so a standalone binary saves about a second of CPU per
cold render. kfdeploy uses it when it finds one of kubectl's kustomize version: built here by
`kfdeploy tools build` (cached under $KFDEPLOY_CACHE/tools), or on PATH.
"""

from __future__ import annotations

import logging
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from kfdeploy.errors import ToolError
from kfdeploy.files import cache_root

log = logging.getLogger(__name__)

MODULE = "sigs.k8s.io/kustomize/kustomize/v5"


def tools_dir() -> Path:
    return cache_root() / "tools"


def kustomize_path(version: str) -> Path:
    """Where `kfdeploy tools build` puts kustomize `version` (e.g. 5.8.1)."""
    return tools_dir() / f"kustomize-v{version}" / "kustomize"


def build_kustomize(version: str, progress: Callable[[str], None] = lambda _: None) -> Path:
    """`go install` kustomize `version` into the tools folder (nothing to do when it is there)."""
    from kfdeploy import gobuild  # the same Go environment and lock as the simulator's

    dest = kustomize_path(version)
    if dest.is_file():
        return dest
    go = gobuild.go_binary()
    if go is None:
        raise ToolError(
            "`go` is not installed; it is needed once to build kustomize",
            hint="install Go, or keep using kubectl's built-in kustomize (nothing else changes)",
        )
    folder = dest.parent
    with gobuild.build_lock(folder, progress):
        if dest.is_file():
            return dest
        started = time.monotonic()
        log_file = folder / "build.log"
        argv = [go, "install", f"{MODULE}@v{version}"]
        progress(f"go install {MODULE}@v{version} (once; about a minute)")
        env = {**gobuild.go_env(), "GOBIN": str(folder / ".bin")}
        with log_file.open("a") as logf:
            proc = subprocess.run(
                argv, cwd=folder, env=env, stdout=logf, stderr=subprocess.STDOUT, check=False
            )
        if proc.returncode != 0:
            tail = log_file.read_text(errors="replace")[-2000:]
            raise ToolError(
                f"building kustomize v{version} failed (exit {proc.returncode}); log: {log_file}",
                command=argv,
                returncode=proc.returncode,
                stderr=tail,
            )
        (folder / ".bin" / "kustomize").replace(dest)
        log.info("built kustomize v%s in %.0f s: %s", version, time.monotonic() - started, dest)
    return dest

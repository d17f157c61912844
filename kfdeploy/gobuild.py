"""Building Go programs from the module proxy: the simulator's control plane and the standalone
kustomize share one Go environment under $KFDEPLOY_CACHE/go and one way of locking a build."""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from kfdeploy.files import cache_root

Progress = Callable[[str], None]


def go_binary() -> str | None:
    return shutil.which("go")


def go_env() -> dict[str, str]:
    root = cache_root() / "go"
    env = dict(os.environ)
    env.update(
        GOMODCACHE=str(root / "mod"),
        GOCACHE=str(root / "build"),
        GOFLAGS="-mod=mod",
        # Never fetch a toolchain: only the module proxy is reachable, and a silent toolchain
        # switch would hide a too-old Go behind a confusing download error.
        GOTOOLCHAIN="local",
    )
    return env


@contextmanager
def build_lock(directory: Path, progress: Progress) -> Iterator[None]:
    """One build per directory at a time: a second build waits instead of racing."""
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / ".lock").open("w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            progress(f"waiting for another build in {directory}")
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)

"""Where kfdeploy keeps its files, and the one way it replaces one.

Standard library only: the warm `kfdeploy render` path (kfdeploy.render.memo) imports it before
anything else of kfdeploy.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

# The process's umask, read once at import (reading it means setting it, which is not safe
# once threads run): files written here get the mode a plain open() would give them.
_UMASK = os.umask(0)
os.umask(_UMASK)


def cache_root() -> Path:
    """`$KFDEPLOY_CACHE`, default `~/.cache/kfdeploy`: renders, releases, builds, logs."""
    return Path(os.environ.get("KFDEPLOY_CACHE") or Path.home() / ".cache" / "kfdeploy")


def write_atomic(path: Path, data: str | bytes, *, private: bool = False) -> Path:
    """Replace `path` with `data` through a uniquely named file beside it and a rename: readers
    see the old content or the new, never part of either, and two writers never share a
    temporary file. `private`: readable by the owner only from the first byte (the temporary
    file is created 0600); otherwise the mode a plain open() would give."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.tmp-")
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
        if not private:
            tmp.chmod(0o666 & ~_UMASK)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path

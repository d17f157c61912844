"""A warm `kfdeploy render` without starting the rest of kfdeploy.

Most of a warm render's 0.4 s is Python starting kfdeploy (typer, pydantic's environment model,
the render engine) only to compute a cache key that has not changed. So every successful render
also leaves a memo: for this command (environment argument, working folder, manifests folder,
the variables that steer a render), which files and folders it depended on, with each one's
size and modification time, and the summary it printed. `kfdeploy render` with the same
arguments first checks the memo with plain stat calls (its environment files and their bases,
the release folder, the pins, fixes and overlays, kfdeploy's own code, the kustomize it ran);
when nothing moved and the cached render is still there, it copies that render out and prints
the same summary, in a fraction of the time. Anything else goes the full way, which writes a
new memo. The memo holds no secrets: rendered output never does (secrets are resolved at apply).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from kfdeploy.files import cache_root, write_atomic

MEMO_VERSION = "1"
# Variables that change what a render reads or produces.
_ENV_VARS = (
    "KFDEPLOY_MANIFESTS",
    "KFDEPLOY_KUSTOMIZE",
    "KFDEPLOY_RENDER_ELIDE",
    "KFDEPLOY_ENVIRONMENTS",
    "PATH",
)
PACKAGE = Path(__file__).resolve().parents[1]


def memo_key(env_arg: str, manifests: str | None) -> str:
    """The memo's name: this command line in this place with these variables."""
    ident = {
        "v": MEMO_VERSION,
        "env": env_arg,
        "cwd": str(Path.cwd()),
        "manifests": manifests,
        "vars": {k: os.environ.get(k) for k in _ENV_VARS if k != "KFDEPLOY_MANIFESTS"},
        "python": sys.executable,
    }
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:32]


def stat_digest(path: Path) -> str:
    """Size and modification time of a file, or of every file below a folder (Python caches
    left out: compiling kfdeploy's code does not change it)."""
    try:
        st = path.stat()
    except OSError:
        return "missing"
    if not path.is_dir():
        return f"{st.st_size}:{st.st_mtime_ns}"
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for f in sorted(filenames):
            with contextlib.suppress(OSError):
                s = os.stat(os.path.join(dirpath, f))  # noqa: PTH116, PTH118 (hot loop: no Path objects)
                h.update(f"{dirpath}/{f}\0{s.st_size}\0{s.st_mtime_ns}\n".encode())
    return h.hexdigest()


def record(key: str, depends_on: list[Path], summary: dict[str, Any], cache_path: Path) -> None:
    """Leave the memo of a successful render (best effort: a memo is only ever a shortcut)."""
    entry = {
        "depends_on": {str(p): stat_digest(p) for p in [*depends_on, PACKAGE]},
        "summary": summary,
        "cache_path": str(cache_path),
    }
    with contextlib.suppress(OSError):
        write_atomic(cache_root() / "render" / "memo" / f"{key}.json", json.dumps(entry))


def lookup(key: str) -> dict[str, Any] | None:
    """The memo, if nothing it depends on has changed and its render is still cached."""
    try:
        entry: dict[str, Any] = json.loads(
            (cache_root() / "render" / "memo" / f"{key}.json").read_text(encoding="utf-8")
        )
    except (OSError, ValueError):
        return None
    for p, digest in entry.get("depends_on", {}).items():
        if stat_digest(Path(p)) != digest:
            return None
    if not (Path(entry["cache_path"]) / "index.json").is_file():
        return None
    return entry


def fast_render(args: list[str]) -> int | None:
    """`kfdeploy render ENV [--out DIR] [--manifests DIR] [--output text|json]` from its memo;
    None when this command needs the full CLI (other options, no memo, anything changed)."""
    started = time.monotonic()
    parsed = _parse(args)
    if parsed is None:
        return None
    env_arg, out, manifests, output = parsed
    entry = lookup(memo_key(env_arg, manifests))
    if entry is None:
        return None
    summary = dict(entry["summary"])
    if any(f["severity"] == "error" for f in summary["findings"]):
        return None  # errors are reported by the full CLI, with their exit code
    cache_path = Path(entry["cache_path"])
    written: list[str] = []
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
        for c in summary["components"]:
            shutil.copyfile(cache_path / f"{c}.yaml", Path(out) / f"{c}.yaml")
            written.append(str(Path(out) / f"{c}.yaml"))
        shutil.copyfile(cache_path / "index.json", Path(out) / "index.json")
        written.append(str(Path(out) / "index.json"))
    summary.update(
        cache="hit",
        seconds=round(time.monotonic() - started, 3),
        out=str(Path(out)) if out is not None else None,
        files=written,
    )
    if output == "json":
        print(json.dumps(summary, indent=2))
    else:
        from kfdeploy.render.summary import print_summary

        print_summary(summary)
    return 0


def _parse(args: list[str]) -> tuple[str, str | None, str | None, str] | None:
    env_arg: str | None = None
    out: str | None = None
    manifests = os.environ.get("KFDEPLOY_MANIFESTS") or None
    output = "text"
    i = 0
    while i < len(args):
        a = args[i]
        name, eq, value = a.partition("=")
        if name in ("--out", "--manifests", "--output", "-o"):
            if not eq:
                if i + 1 >= len(args):
                    return None
                value = args[i + 1]
                i += 1
            if name == "--out":
                out = value
            elif name == "--manifests":
                manifests = value
            elif value in ("text", "json"):
                output = value
            else:
                return None
        elif a.startswith("-") or env_arg is not None:
            return None  # --help, --no-cache, anything the full CLI should see
        else:
            env_arg = a
        i += 1
    if env_arg is None:
        return None
    return env_arg, out, str(Path(manifests)) if manifests else None, output

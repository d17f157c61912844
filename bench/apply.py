"""Apply benchmark: kfdeploy against upstream's install loop, on the same local control plane.

One run, same machine, same rendered objects (the `local` environment: 26.03 with the sim overlay):

1. upstream: a fresh cluster; `kubectl apply --server-side --force-conflicts -f <rendered>` until it
   succeeds, sleeping 20 s between attempts as upstream's README writes it; then `kubectl wait`
   until every Deployment is Available and every StatefulSet/DaemonSet rolled out (converged).
   Then the no-op: `kubectl apply --server-side --force-conflicts -f <rendered>` again on the
   converged cluster (without --force-conflicts kubectl fails on upstream's aggregated roles).
2. kfdeploy: the cluster wiped (destroyed and started fresh, same binaries and nodes);
   `kfdeploy apply local --kubeconfig ...` (phases, waits, rollouts: converged when it returns);
   then the no-op re-apply. kfdeploy's peak RSS comes from wait4() on its process.

    python bench/apply.py [--keep]

Targets (2-core machine): converge <= 0.3x, no-op <= 0.1x, peak RSS <= 300 MB. Wall-clock times
are printed, never asserted by tests.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
KUBECTL = str(BIN / "kubectl")
KFDEPLOY = str(BIN / "kfdeploy")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run_timed(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, int, int, str]:
    """(seconds, returncode, peak RSS in KiB of that process, stdout)."""
    started = time.monotonic()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(argv, stdout=out, stderr=err, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.monotonic() - started
        out.seek(0)
        err.seek(0)
        text = out.read().decode(errors="replace")
        if proc.returncode != 0:
            log(f"{argv[0]} exited {proc.returncode}: {err.read().decode(errors='replace')[-800:]}")
    return seconds, proc.returncode, usage.ru_maxrss, text


def fresh_cluster(state: Path, name: str) -> Any:
    from kfdeploy.sim.cluster import LocalCluster
    from kfdeploy.sim.nodes import SimNode

    cluster = LocalCluster(state / name, name=name)
    cluster.destroy()
    nodes = [
        SimNode(
            name=f"bench-{i}",
            cpu="32",
            memory="128Gi",
            labels={"magnum.openstack.org/role": "worker"},
        )
        for i in range(3)
    ]
    cluster.start(nodes, timeout=300)
    return cluster


def upstream(cluster: Any, rendered: Path) -> dict[str, float]:
    kc = ["--kubeconfig", str(cluster.kubeconfig_path)]
    started = time.monotonic()
    attempts = 0
    while True:  # upstream: while ! kustomize build example | kubectl apply ...; do sleep 20; done
        attempts += 1
        proc = subprocess.run(
            [KUBECTL, *kc, "apply", "--server-side", "--force-conflicts", "-f", str(rendered)],
            capture_output=True,
            text=True,
        )
        if proc.returncode == 0:
            break
        first = next((ln for ln in proc.stderr.splitlines() if ln.strip()), "")
        log(f"upstream attempt {attempts} failed: {first[:160]}")
        if attempts >= 20:
            raise SystemExit("upstream loop did not succeed in 20 attempts")
        time.sleep(20)
    applied = time.monotonic() - started
    for kind, how in (
        ("deployments", ["wait", "--for=condition=Available"]),
        ("statefulsets", ["rollout", "status"]),
        ("daemonsets", ["rollout", "status"]),
    ):
        names = subprocess.run(
            [KUBECTL, *kc, "get", kind, "-A", "-o", "json"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for item in json.loads(names)["items"]:
            meta = item["metadata"]
            if meta["namespace"] in ("kube-system",):
                continue
            subprocess.run(
                [
                    KUBECTL,
                    *kc,
                    *how,
                    "-n",
                    meta["namespace"],
                    f"{kind}/{meta['name']}",
                    "--timeout=900s",
                ],
                capture_output=True,
                check=True,
            )
    converged = time.monotonic() - started
    # --force-conflicts as in upstream's loop: without it kubectl fails on every re-apply, because
    # the aggregation controller owns `.rules` of upstream's aggregated ClusterRoles.
    noop, rc, _, _ = run_timed(
        [KUBECTL, *kc, "apply", "--server-side", "--force-conflicts", "-f", str(rendered)]
    )
    if rc != 0:
        raise SystemExit("kubectl no-op re-apply failed")
    return {"attempts": attempts, "applied": applied, "converge": converged, "noop": noop}


def kfdeploy(cluster: Any) -> dict[str, Any]:
    env = {
        **os.environ,
        "KFDEPLOY_MANIFESTS": os.environ.get(
            "KFDEPLOY_MANIFESTS", "/work/shared/kubeflow-manifests"
        ),
    }
    argv = [
        KFDEPLOY,
        "apply",
        "local",
        "--kubeconfig",
        str(cluster.kubeconfig_path),
        "--output",
        "json",
        "--timeout",
        "900",
    ]
    converge, rc, rss, out = run_timed(argv, env)
    if rc != 0:
        raise SystemExit("kfdeploy apply failed")
    first = json.loads(out)
    noop, rc, rss2, out2 = run_timed(argv, env)
    second = json.loads(out2)
    return {
        "converge": converge,
        "noop": noop,
        "rss_kb": max(rss, rss2),
        "first": first,
        "second": second,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="keep the kfdeploy cluster running")
    parser.add_argument(
        "--state", type=Path, default=Path(tempfile.gettempdir()) / "kfdeploy-bench"
    )
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from kfdeploy.config.load import load_environment
    from kfdeploy.render.engine import render

    os.environ.setdefault("KFDEPLOY_MANIFESTS", "/work/shared/kubeflow-manifests")
    loaded = load_environment("local")
    objects = render(loaded.env, manifests_dir=Path(os.environ["KFDEPLOY_MANIFESTS"])).objects
    args.state.mkdir(parents=True, exist_ok=True)
    rendered = args.state / "rendered.yaml"
    rendered.write_text(yaml.safe_dump_all([o.obj for o in objects]), encoding="utf-8")
    log(f"{len(objects)} objects rendered to {rendered}")

    log("upstream: fresh cluster")
    cluster = fresh_cluster(args.state, "bench")
    try:
        up = upstream(cluster, rendered)
    finally:
        cluster.destroy()
    log(f"upstream: {json.dumps(up)}")

    log("kfdeploy: fresh cluster")
    cluster = fresh_cluster(args.state, "bench")
    try:
        kf = kfdeploy(cluster)
    finally:
        if not args.keep:
            cluster.destroy()
    log(
        f"kfdeploy: converge {kf['converge']:.1f}s, no-op {kf['noop']:.1f}s, rss {kf['rss_kb']} KiB"
    )

    rss_mb = kf["rss_kb"] / 1024
    rows = [
        ("fresh converge", kf["converge"], up["converge"], 0.3),
        ("no-op re-apply", kf["noop"], up["noop"], 0.1),
    ]
    print(
        f"objects: {len(objects)}; upstream loop attempts: {up['attempts']} "
        f"(kubectl apply succeeded after {up['applied']:.1f}s)"
    )
    print(f"{'':<16} {'kfdeploy':>9} {'upstream':>9} {'ratio':>6} {'target':>7}")
    for name, a, b, target in rows:
        ok = "ok" if a / b <= target else "MISSED"
        print(f"{name:<16} {a:>8.1f}s {b:>8.1f}s {a / b:>6.2f} {'<=' + str(target):>7} {ok}")
    print(f"kfdeploy peak RSS: {rss_mb:.0f} MB (target <= 300 MB)")
    print(f"kfdeploy steps (first run): {json.dumps(kf['first'].get('steps'))}")
    print(f"kfdeploy requests: first {kf['first']['requests']}, no-op {kf['second']['requests']}")
    print(f"kfdeploy no-op totals: {kf['second']['totals']}")


if __name__ == "__main__":
    main()

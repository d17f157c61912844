"""Render benchmark: `kfdeploy render` (cold and warm) against `kubectl kustomize <release>/example`.

Both run in the same process of this script, alternating, on the same machine state, so the
ratio survives a noisy machine better than the absolute times. Peak memory is sampled over the
whole process tree (kfdeploy runs several kustomize processes at once; their sum is what the
machine must hold).

    python bench/render.py [--release 26.03] [--runs 5]

Targets on a 2-core machine: cold <= 0.6x, warm <= 0.05x of kubectl kustomize.

"cold" is a render with an empty KFDEPLOY_CACHE (no render, no elided release copy, no parsed
schema); "warm" repeats a render whose inputs did not change. kfdeploy renders with the kustomize
it would pick for the user (a standalone one after `kfdeploy tools build`, else kubectl's); the
first line of the output says which.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _tree_rss_kb(pid: int) -> int:
    """RSS of pid and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for proc_dir in Path("/proc").iterdir():
        entry = proc_dir.name
        if not entry.isdigit():
            continue
        try:
            with (proc_dir / "stat").open() as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        todo.extend(children.get(p, []))
        try:
            with Path(f"/proc/{p}/status").open() as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            continue
    return total


def run(cmd: list[str], env: dict[str, str]) -> tuple[float, int]:
    """Wall seconds and peak tree RSS (MB) of one command."""
    peak = 0
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _tree_rss_kb(proc.pid))
            done.wait(0.05)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    _, err = proc.communicate(timeout=900)
    elapsed = time.perf_counter() - start
    done.set()
    t.join()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}): {err.decode()[-2000:]}")
    return elapsed, peak // 1024


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--release", default="26.03")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument(
        "--manifests",
        default=os.environ.get("KFDEPLOY_MANIFESTS")
        or str(ROOT.parent / "shared" / "kubeflow-manifests"),
    )
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args()

    manifests = Path(args.manifests)
    env_file = ROOT / "tests" / "data" / "envs" / f"plain-{args.release.replace('.', '-')}.yaml"
    kubectl = str(BIN / "kubectl") if (BIN / "kubectl").exists() else "kubectl"
    kfdeploy = str(BIN / "kfdeploy")
    work = Path(tempfile.mkdtemp(prefix="kfbench-"))
    base_env = {**os.environ, "KFDEPLOY_MANIFESTS": str(manifests)}
    # The kustomize kfdeploy picks with the user's own cache (a standalone one built by
    # `kfdeploy tools build`, else kubectl's), pinned for the cold runs, whose fresh caches
    # would not see it: a cold render means no render cached, not a reinstalled toolbox.
    tool = json.loads(
        subprocess.run(
            [kfdeploy, "tools", "show", "--json"], env=base_env, check=True, capture_output=True
        ).stdout
    )
    if tool["kustomize"][-1] == "build":
        base_env["KFDEPLOY_KUSTOMIZE"] = tool["kustomize"][0]
    warm_cache = work / "warm-cache"
    warm_env = {**base_env, "KFDEPLOY_CACHE": str(warm_cache)}
    # Fill the warm cache once (not timed).
    subprocess.run(
        [kfdeploy, "render", str(env_file)], env=warm_env, check=True, capture_output=True
    )

    results: dict[str, list[tuple[float, int]]] = {
        "kubectl kustomize": [],
        "kfdeploy cold": [],
        "kfdeploy warm": [],
    }
    for i in range(args.runs):
        cold_cache = work / f"cold-{i}"
        results["kubectl kustomize"].append(
            run([kubectl, "kustomize", str(manifests / args.release / "example")], base_env)
        )
        results["kfdeploy cold"].append(
            run(
                [kfdeploy, "render", str(env_file), "--out", str(work / f"out-c{i}")],
                {**base_env, "KFDEPLOY_CACHE": str(cold_cache)},
            )
        )
        results["kfdeploy warm"].append(
            run([kfdeploy, "render", str(env_file), "--out", str(work / f"out-w{i}")], warm_env)
        )
        shutil.rmtree(cold_cache, ignore_errors=True)

    base = statistics.median(t for t, _ in results["kubectl kustomize"])
    figures = {}
    print(f"Kubeflow {args.release}, {args.runs} runs each, alternating; {os.cpu_count()} cores")
    print(f"kfdeploy runs: {' '.join(tool['kustomize'])} (kustomize {tool['version']})")
    print(f"{'command':<20} {'median s':>9} {'ratio':>7} {'peak MB':>8}")
    for name, rows in results.items():
        med = statistics.median(t for t, _ in rows)
        peak = max(m for _, m in rows)
        figures[name] = {
            "median_s": round(med, 3),
            "ratio": round(med / base, 3),
            "peak_mb": peak,
            "runs_s": [round(t, 3) for t, _ in rows],
        }
        print(f"{name:<20} {med:>9.3f} {med / base:>7.3f} {peak:>8}")
    print("targets: cold <= 0.6x, warm <= 0.05x")
    if args.json:
        figures["kustomize"] = tool  # type: ignore[assignment]
        Path(args.json).write_text(json.dumps(figures, indent=2))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

"""`kfdeploy sim ...`: build, start, inspect and stop the local simulated Kubernetes cluster.

Thin by design: parse options, call kfdeploy.sim, print. Errors are KfdeployError subclasses and
reach the root CLI, which prints them and picks the exit code.
"""

from __future__ import annotations

import json
import time
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
import yaml
from rich.console import Console
from rich.table import Table

from kfdeploy.errors import ConfigError

if TYPE_CHECKING:
    from kfdeploy.sim.cluster import LocalCluster
    from kfdeploy.sim.nodes import SimNode

app = typer.Typer(
    help="Run a real local Kubernetes control plane with simulated (GPU) nodes.",
    no_args_is_help=True,
)
_console = Console(stderr=True)


class Output(StrEnum):
    text = "text"
    json = "json"


NameOpt = Annotated[
    str, typer.Option("--name", help="Cluster name (selects the default state directory).")
]
StateDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--state-dir",
        help="State directory [default: $KFDEPLOY_CACHE/sim/<name>].",
        show_default=False,
    ),
]


def _cluster(name: str, state_dir: Path | None) -> LocalCluster:
    from kfdeploy.sim.cluster import LocalCluster, default_state_dir

    return LocalCluster(state_dir or default_state_dir(name), name=name)


def load_nodes(path: Path) -> list[SimNode]:
    """Read a node list: YAML/JSON, either a list or a mapping with a `nodes` list."""
    from kfdeploy.sim.nodes import SimNode

    try:
        data: Any = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read node list: {exc}", file=str(path)) from exc
    if isinstance(data, dict):
        data = data.get("nodes")
    if not isinstance(data, list) or not all(isinstance(n, dict) for n in data):
        raise ConfigError(
            "expected a list of nodes (or a mapping with a `nodes` list)", file=str(path)
        )
    try:
        return [SimNode.from_dict(n) for n in data]
    except (KeyError, ValueError) as exc:
        raise ConfigError(f"invalid node entry: {exc}", file=str(path)) from exc


@app.command()
def build() -> None:
    """Build (once) kube-apiserver, kube-controller-manager, kube-scheduler and etcd with Go."""
    from kfdeploy.sim import binaries

    started = time.monotonic()
    with _console.status("checking the binary cache") as status:
        found = binaries.ensure(progress=lambda msg: status.update(msg))
    for key, value in found.as_dict().items():
        typer.echo(f"{key}: {value}")
    _console.print(f"ready in {time.monotonic() - started:.1f}s")


@app.command()
def start(
    name: NameOpt = "kfdeploy-sim",
    state_dir: StateDirOpt = None,
    nodes: Annotated[
        Path | None,
        typer.Option(
            "--nodes", help="YAML list of nodes (name, cpu, memory, gpus, pods, labels, taints)."
        ),
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the control plane.")] = 120,
) -> None:
    """Start the control plane (or reuse a running one) and register simulated nodes."""
    from kfdeploy.sim.nodes import default_nodes

    node_list = load_nodes(nodes) if nodes else default_nodes()
    cluster = _cluster(name, state_dir)
    started = time.monotonic()
    with _console.status("starting") as status:
        cluster.start(node_list, timeout=timeout, progress=lambda msg: status.update(msg))
    _console.print(
        f"simulated cluster {name!r} ready in {time.monotonic() - started:.1f}s "
        f"at {cluster.api_url}"
    )
    typer.echo(f"export KUBECONFIG={cluster.kubeconfig_path}")


@app.command()
def status(
    name: NameOpt = "kfdeploy-sim",
    state_dir: StateDirOpt = None,
    output: Annotated[Output, typer.Option("--output", "-o")] = Output.text,
) -> None:
    """Describe the cluster: API URL, network isolation, versions, components, nodes.

    Exits 3 when the cluster is not running (after printing what is known), like other
    "cluster unreachable" errors, so scripts can test it.
    """
    info = _cluster(name, state_dir).status()
    if output is Output.json:
        typer.echo(json.dumps(info, indent=2, sort_keys=True))
        if not info["running"]:
            raise typer.Exit(3)
        return
    console = Console()
    console.print(f"[bold]{info['name']}[/]  running={info['running']}  api={info['api_url']}")
    console.print(f"kubeconfig: {info['kubeconfig']}")
    net = info.get("network") or {}
    if net:
        console.print(f"network: {net.get('mode')} — {net.get('guarantee')}")
    console.print("versions: " + ", ".join(f"{k}={v}" for k, v in info["versions"].items()))
    table = Table("component", "running", "pid", "RSS MiB")
    for comp, c in info["components"].items():
        table.add_row(
            comp, str(c["running"]), str(c["pid"] or "-"), f"{c['rss_bytes'] / 2**20:.0f}"
        )
    console.print(table)
    if info["nodes"]:
        nodes = Table("node", "ready", "cpu", "memory", "gpus", "taints")
        for n in info["nodes"]:
            cap = n["capacity"]
            taints = ",".join(f"{t['key']}:{t['effect']}" for t in n["taints"])
            nodes.add_row(
                n["name"],
                str(n["ready"]),
                cap.get("cpu", ""),
                cap.get("memory", ""),
                cap.get("nvidia.com/gpu", "0"),
                taints,
            )
        console.print(nodes)
    if not info["running"]:
        raise typer.Exit(3)


@app.command()
def stop(
    name: NameOpt = "kfdeploy-sim",
    state_dir: StateDirOpt = None,
    destroy: Annotated[
        bool, typer.Option("--destroy", help="Also delete all data, credentials and the namespace.")
    ] = False,
) -> None:
    """Stop the control plane; data stays for the next start unless --destroy."""
    cluster = _cluster(name, state_dir)
    if destroy:
        cluster.destroy()
        _console.print(f"destroyed {cluster.state_dir}")
    else:
        cluster.stop()
        _console.print(f"stopped; data kept in {cluster.state_dir}")


@app.command()
def kubeconfig(name: NameOpt = "kfdeploy-sim", state_dir: StateDirOpt = None) -> None:
    """Print the path of the running cluster's admin kubeconfig."""
    from kfdeploy.sim.errors import SimNotRunning

    cluster = _cluster(name, state_dir)
    if not cluster.is_running():
        raise SimNotRunning(
            f"no simulated cluster is running in {cluster.state_dir}",
            hint="run `kfdeploy sim start`",
        )
    typer.echo(str(cluster.kubeconfig_path))


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def isolate(
    ctx: typer.Context,
    required: Annotated[
        bool, typer.Option(help="Fail (exit 4) instead of running unisolated.")
    ] = False,
) -> None:
    """Run a command in a loopback-only network namespace: `kfdeploy sim isolate -- pytest`."""
    from kfdeploy.sim.isolate import exec_isolated

    exec_isolated(list(ctx.args), required=required)


@app.command()
def prune() -> None:
    """Remove simulated clusters' network namespaces that no process uses (after killed runs)."""
    from kfdeploy.sim import netns
    from kfdeploy.sim.cluster import NETNS_PREFIX

    for name in netns.prune(NETNS_PREFIX):
        typer.echo(f"removed network namespace {name}")

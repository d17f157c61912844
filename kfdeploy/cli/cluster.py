"""`kfdeploy cluster plan|apply|status|resize|delete|kubeconfig ENV`.

Thin: load the environment, get its provider (for the `kfdeploy-local` cloud that starts the
Magnum emulator unless a clouds.yaml defines that cloud), call one provider method, print. Plans
and results go to stdout, progress lines to stderr; `--output json` prints exactly one JSON
document on stdout for machines.
"""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from kfdeploy.errors import GuardError

app = typer.Typer(
    help="Provision and keep the environment's Kubernetes cluster (OpenStack Magnum, or an "
    "existing cluster via kubeconfig).",
    no_args_is_help=True,
)


class Output(StrEnum):
    text = "text"
    json = "json"


EnvArg = Annotated[str, typer.Argument(help="Environment name (environments/<name>.yaml) or file.")]
OutputOpt = Annotated[
    Output, typer.Option("--output", "-o", help="text for people, json for machines.")
]
CloudsOpt = Annotated[
    Path | None,
    typer.Option("--clouds-file", help="clouds.yaml to read instead of the standard locations."),
]
PruneOpt = Annotated[
    bool,
    typer.Option(
        "--prune", help="Delete nodegroups that exist in the cloud but not in the environment."
    ),
]


def _load(env_name: str, clouds_file: Path | None) -> tuple[Any, Any]:
    from kfdeploy.cloud.provider import get_provider
    from kfdeploy.config.load import load_environment

    env = load_environment(env_name).env
    return env, get_provider(env, clouds_file=clouds_file)


def _say(message: str) -> None:
    typer.echo(message)


def _progress(message: str) -> None:
    typer.echo(f"  {message}", err=True)


def _confirm(question: str, yes: bool) -> None:
    if yes:
        return
    if not sys.stdin.isatty():
        raise GuardError(f"{question} needs confirmation; pass --yes (stdin is not a terminal)")
    if not typer.confirm(question, default=False):
        raise GuardError("not confirmed; nothing was changed")


@app.command()
def plan(
    env: EnvArg,
    output: OutputOpt = Output.text,
    prune: PruneOpt = False,
    clouds_file: CloudsOpt = None,
) -> None:
    """Show what `apply` would change; changes nothing."""
    environment, provider = _load(env, clouds_file)
    result = provider.plan(environment, prune=prune)
    if output is Output.json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
    else:
        for line in result.lines():
            _say(line)


@app.command()
def apply(
    env: EnvArg,
    prune: PruneOpt = False,
    keep_failed: Annotated[
        bool,
        typer.Option("--keep-failed", help="Keep what a failed apply created (to inspect it)."),
    ] = False,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Do not ask before deleting nodegroups.")
    ] = False,
    kubeconfig_out: Annotated[
        Path | None,
        typer.Option("--kubeconfig-out", help="Write an admin kubeconfig here afterwards."),
    ] = None,
    clouds_file: CloudsOpt = None,
) -> None:
    """Make the cluster match the environment: show the plan, then apply it."""
    environment, provider = _load(env, clouds_file)
    result = provider.plan(environment, prune=prune)
    for line in result.lines():
        _say(line)
    deletions = [c for c in result.changes if c.action == "delete-nodegroup"]
    if deletions:
        _confirm(f"Delete {', '.join(c.target for c in deletions)}?", yes)
    applied = provider.apply(result, _progress, keep_failed=keep_failed)
    if applied.changed:
        _say(f"applied {len(applied.applied)} change(s) to cluster {result.cluster_name}")
    else:
        _say(f"cluster {result.cluster_name}: nothing to do (no requests that change the cloud)")
    if kubeconfig_out is not None:
        path = provider.kubeconfig(environment, kubeconfig_out)
        _say(f"kubeconfig written to {path}")


@app.command()
def status(env: EnvArg, output: OutputOpt = Output.text, clouds_file: CloudsOpt = None) -> None:
    """Show the cluster's state in the cloud, nodegroup by nodegroup."""
    environment, provider = _load(env, clouds_file)
    result = provider.status(environment)
    if output is Output.json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
    else:
        for line in result.lines():
            _say(line)


@app.command()
def resize(
    env: EnvArg,
    nodegroup: Annotated[str, typer.Argument(help="Nodegroup name, e.g. default-worker.")],
    count: Annotated[int, typer.Argument(min=0, help="New node count.")],
    clouds_file: CloudsOpt = None,
) -> None:
    """Resize one nodegroup now (the next `apply` restores the environment's count)."""
    environment, provider = _load(env, clouds_file)
    provider.resize(environment, nodegroup, count, _progress)
    _say(
        f"nodegroup {nodegroup} resized to {count}; the environment file still says otherwise "
        "unless you change it"
    )


@app.command()
def delete(
    env: EnvArg,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    clouds_file: CloudsOpt = None,
) -> None:
    """Delete the environment's cluster (the template is kept)."""
    from kfdeploy.config.load import load_environment

    environment = load_environment(env).env
    _confirm(f"Delete cluster {environment.cluster_name} of environment {environment.name}?", yes)
    _, provider = _load(env, clouds_file)
    if provider.delete(environment, _progress):
        _say(f"cluster {environment.cluster_name} deleted")
    else:
        _say(f"cluster {environment.cluster_name} does not exist; nothing to delete")


@app.command()
def kubeconfig(
    env: EnvArg,
    out: Annotated[
        Path | None,
        typer.Option(
            "--output-file",
            "-f",
            help="Where to write (default: where `kfdeploy up` keeps it).",
        ),
    ] = None,
    clouds_file: CloudsOpt = None,
) -> None:
    """Write an admin kubeconfig (mode 0600) and print its path; never prints credentials."""
    from kfdeploy.workflows.up import kubeconfig_path

    environment, provider = _load(env, clouds_file)
    # Default: where `kfdeploy up` keeps it, so both commands leave one file per environment.
    path = provider.kubeconfig(environment, out or kubeconfig_path(environment))
    _say(str(path))

"""`kfdeploy smoke ENV`: run the smoke checks against a deployed environment and report.

Exit 0 when every check passed or does not apply here, 1 when any failed or could not run; the
root presents errors that stop the run before any check (a bad kubeconfig: exit 2).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from kfdeploy.checks.framework import SmokeReport
    from kfdeploy.config.model import Environment


class Output(StrEnum):
    text = "text"
    json = "json"


def resolve_kubeconfig(env: Environment, explicit: Path | None = None) -> Path:
    """Where `env`'s cluster is (see workflows.up.known_kubeconfig). Smoke checks never
    provision or ask the cloud: without a known kubeconfig they refuse."""
    from kfdeploy.errors import ConfigError
    from kfdeploy.workflows.up import known_kubeconfig

    known = known_kubeconfig(env, explicit)
    if known is not None:
        return known
    raise ConfigError(
        f"no kubeconfig for environment {env.name} (provider {env.cluster.provider})",
        hint=f"run `kfdeploy up {env.name}` first, or pass --kubeconfig FILE",
    )


def run_smoke(
    env_name: str,
    *,
    kubeconfig: Path | None = None,
    context: str | None = None,
    manifests: Path | None = None,
    only: list[str] | None = None,
    timeout: float | None = None,
    resolve: Callable[[Environment, Path | None], Path] = resolve_kubeconfig,
) -> SmokeReport:
    """Load, render (usually a cache hit) and check; what the command does before reporting."""
    from kfdeploy.checks import run_checks
    from kfdeploy.config.load import load_environment
    from kfdeploy.render.engine import render

    env = load_environment(env_name).env
    path = resolve(env, kubeconfig)
    objects = render(env, manifests_dir=manifests).objects
    return run_checks(
        env, path, objects, context=context or env.cluster.context, only=only, timeout=timeout
    )


def smoke(
    env: Annotated[
        str,
        typer.Argument(
            help="Environment name (see `kfdeploy envs`) or path of an environment file."
        ),
    ],
    kubeconfig: Annotated[
        Path | None,
        typer.Option(
            "--kubeconfig",
            help="Cluster to check (default: the environment's own).",
            dir_okay=False,
        ),
    ] = None,
    context: Annotated[
        str | None,
        typer.Option("--context", help="kubeconfig context (default: the environment's)."),
    ] = None,
    output: Annotated[
        Output, typer.Option("--output", "-o", help="text for people, json for machines.")
    ] = Output.text,
    junit: Annotated[
        Path | None,
        typer.Option(
            "--junit", help="Also write a JUnit XML report here (for CI).", dir_okay=False
        ),
    ] = None,
    manifests: Annotated[
        Path | None,
        typer.Option(
            "--manifests",
            envvar="KFDEPLOY_MANIFESTS",
            help="Folder with one subfolder per Kubeflow release (as for `kfdeploy render`).",
            file_okay=False,
        ),
    ] = None,
    check: Annotated[
        list[str] | None,
        typer.Option(
            "--check", "-c", help="Run only this check (repeatable); default: the environment's."
        ),
    ] = None,
    timeout: Annotated[
        int | None,
        typer.Option("--timeout", min=1, help="Seconds per check (default: smoke.timeout)."),
    ] = None,
) -> None:
    """Check that ENV's deployed platform works: workloads, CRDs, webhooks, GPU, profiles."""
    from rich.console import Console

    from kfdeploy.checks import report as reports

    # Checks may wait minutes for a platform to settle: say so on stderr, keep stdout clean.
    waiting: contextlib.AbstractContextManager[object] = contextlib.nullcontext()
    if output == Output.text:
        waiting = Console(stderr=True).status("running smoke checks ...")
    with waiting:
        report = run_smoke(
            env,
            kubeconfig=kubeconfig,
            context=context,
            manifests=manifests,
            only=check,
            timeout=timeout,
        )
    if junit is not None:
        reports.write_junit(report, junit)
    if output == Output.json:
        typer.echo(reports.to_json(report))
    else:
        reports.print_table(report)
    if not report.ok:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("smoke")(smoke)

"""`kfdeploy up [ENV]` and `kfdeploy down ENV`: the main job, end to end."""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from kfdeploy.workflows.apply import ProgressEvent


class Output(StrEnum):
    text = "text"
    json = "json"


ManifestsOpt = Annotated[
    Path | None,
    typer.Option(
        "--manifests",
        envvar="KFDEPLOY_MANIFESTS",
        help="Folder with one subfolder per Kubeflow release (default: cache, else download).",
        file_okay=False,
    ),
]
KubeconfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--kubeconfig",
        help="Use this cluster instead of the provider's (the context guard still checks it).",
        dir_okay=False,
    ),
]


class _Console:
    """Draws the workflow's stages as lines; quiet for --output json (stdout stays machine-readable)."""

    def __init__(self, quiet: bool) -> None:
        from rich.console import Console

        self.console = Console(stderr=True, highlight=False)
        self.quiet = quiet
        self._last_phase = ""

    def stage(self, name: str, status: str, summary: str = "") -> None:
        if self.quiet:
            return
        from rich.markup import escape

        mark = {
            "start": "[cyan]…[/]",
            "done": "[green]✓[/]",
            "skipped": "[dim]↷[/]",
            "dry-run": "[yellow]~[/]",
            "failed": "[red]✗[/]",
        }.get(status, status)
        if status == "start":
            self.console.print(f"{mark} {name}")
        else:
            self.console.print(f"{mark} {name}: {escape(summary)}" if summary else f"{mark} {name}")

    def message(self, text: str) -> None:
        if not self.quiet:
            from rich.markup import escape

            self.console.print(f"  [dim]{escape(text)}[/]")

    def apply_event(self, event: ProgressEvent) -> None:
        if self.quiet:
            return
        if event.kind in ("step-start", "prune-start") and event.title != self._last_phase:
            self._last_phase = event.title
            self.console.print(f"  [dim]{event.title} ({event.total})[/]")
        elif (
            event.kind == "object"
            and event.outcome is not None
            and event.outcome.action in ("failed", "conflict")
        ):
            self.console.print(f"  [red]{event.outcome}[/]")


def up(
    env: Annotated[str, typer.Argument(help="Environment name or file.")] = "local",
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Print the whole plan (cloud changes, object changes, prunes); change nothing.",
        ),
    ] = False,
    kubeconfig: KubeconfigOpt = None,
    manifests: ManifestsOpt = None,
    prune: Annotated[
        bool,
        typer.Option("--prune/--no-prune", help="Delete what the new render no longer contains."),
    ] = True,
    force_conflicts: Annotated[
        bool, typer.Option("--force-conflicts", help="Take over fields another manager owns.")
    ] = False,
    keep_failed: Annotated[
        bool,
        typer.Option("--keep-failed", help="Keep a cluster whose creation failed (for debugging)."),
    ] = False,
    smoke: Annotated[
        bool, typer.Option("--smoke/--no-smoke", help="Run the smoke checks at the end.")
    ] = True,
    junit: Annotated[
        Path | None,
        typer.Option("--junit", help="Write the smoke checks as JUnit XML here.", dir_okay=False),
    ] = None,
    timeout: Annotated[
        float, typer.Option("--timeout", help="Seconds per wait (rollouts, CRDs, webhooks).")
    ] = 900.0,
    output: Annotated[Output, typer.Option("--output", "-o")] = Output.text,
) -> None:
    """Bring ENV (default: local) to a working, verified platform; safe to run again at any time."""
    from kfdeploy.config.load import errors_in, load_environment
    from kfdeploy.workflows.up import UpOptions
    from kfdeploy.workflows.up import up as run_up

    loaded = load_environment(env)
    ui = _Console(quiet=output == Output.json)
    with errors_in(loaded):
        result = run_up(
            loaded.env,
            UpOptions(
                manifests_dir=manifests,
                kubeconfig=kubeconfig,
                dry_run=dry_run,
                prune=prune,
                force_conflicts=force_conflicts,
                keep_failed=keep_failed,
                smoke=smoke,
                timeout=timeout,
                env_file=str(loaded.path),
            ),
            ui,  # type: ignore[arg-type]
        )
    if junit is not None and result.smoke is not None:
        from kfdeploy.checks.report import write_junit

        write_junit(result.smoke, junit)
    if output == Output.json:
        data = result.to_dict()
        if result.cluster_plan is not None:
            data["cluster_plan"] = result.cluster_plan.to_dict()
        if result.apply is not None:
            from kfdeploy.workflows.apply import as_dict

            data["apply"] = as_dict(result.apply)
        typer.echo(json.dumps(data, indent=2, default=str))
    else:
        _print_up(result, dry_run)
    if not result.ok:
        raise typer.Exit(1)


def _print_up(result: Any, dry_run: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    if result.smoke is not None:
        from kfdeploy.checks.report import print_table

        print_table(result.smoke, console)
    if dry_run and result.apply is not None:
        from kfdeploy.workflows.apply import summary_rows

        table = Table(
            "component", "would create", "would configure", "unchanged", title="object plan"
        )
        for comp, counts in summary_rows(result.apply):
            table.add_row(
                comp,
                str(counts.get("created", 0)),
                str(counts.get("configured", 0)),
                str(counts.get("unchanged", 0)),
            )
        console.print(table)
        if result.apply.prune:
            console.print("[yellow]would prune:[/]")
            for line in result.apply.prune.lines():
                console.print(f"  {line}")
    table = Table("stage", "status", "seconds", "summary", title=f"kfdeploy up {result.env}")
    for s in result.stages:
        table.add_row(s.name, s.status, f"{s.seconds:.1f}", s.summary[:120])
    table.add_row(
        "[bold]total[/]", "ok" if result.ok else "[red]failed[/]", f"{result.seconds:.1f}", ""
    )
    console.print(table)


def down(
    env: Annotated[str, typer.Argument(help="Environment name or file.")],
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Do not ask for the environment's name to confirm.")
    ] = False,
    delete_data: Annotated[
        bool,
        typer.Option(
            "--delete-data", help="Also delete user data: PVCs, Profiles, users' custom resources."
        ),
    ] = False,
    cluster: Annotated[
        bool, typer.Option("--cluster", help="Also delete the cloud cluster (provider magnum).")
    ] = False,
    kubeconfig: KubeconfigOpt = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Say what would be deleted; delete nothing.")
    ] = False,
    timeout: Annotated[
        float,
        typer.Option(
            "--timeout", help="Seconds to wait per deletion phase before reporting what is stuck."
        ),
    ] = 300.0,
    output: Annotated[Output, typer.Option("--output", "-o")] = Output.text,
) -> None:
    """Remove ENV's platform in reverse order; keeps user data unless --delete-data."""
    from kfdeploy.config.load import load_environment
    from kfdeploy.errors import GuardError
    from kfdeploy.workflows.down import DownOptions
    from kfdeploy.workflows.down import down as run_down

    loaded = load_environment(env)
    name = loaded.env.name
    if not yes and not dry_run:
        if not sys.stdin.isatty():
            raise GuardError(
                f"refusing to delete {name} without confirmation; pass --yes (no terminal to ask on)"
            )
        what = (
            "the platform"
            + (" and ALL USER DATA" if delete_data else "")
            + (" and the cluster" if cluster else "")
        )
        answer = typer.prompt(
            f"This deletes {what} of {name}. Type the environment's name to confirm"
        )
        if answer.strip() != name:
            raise GuardError(
                f"confirmation {answer.strip()!r} does not match {name!r}; nothing deleted"
            )
    ui = _Console(quiet=output == Output.json)
    result = run_down(
        loaded.env,
        DownOptions(
            kubeconfig=kubeconfig,
            delete_data=delete_data,
            cluster=cluster,
            dry_run=dry_run,
            timeout=timeout,
        ),
        ui.message,
    )
    if output == Output.json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
    else:
        from rich.console import Console
        from rich.markup import escape

        console = Console(highlight=False)
        verb = "would delete" if dry_run else "deleted"
        console.print(f"{verb} {len(result.deleted)} object(s) in {result.seconds:.1f}s")
        for obj, why in result.kept:
            console.print(f"[yellow]kept[/] {escape(obj)}: {escape(why)}")
        for obj, fins in result.stuck:
            console.print(f"[red]stuck[/] {escape(obj)}: finalizers {', '.join(fins) or 'none'}")
        for obj, err in result.failed:
            console.print(f"[red]failed[/] {escape(obj)}: {escape(err)}")
        if result.cluster_deleted:
            console.print(f"cluster {loaded.env.cluster_name} deleted")
    if not result.ok:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("up")(up)
    app.command("down")(down)

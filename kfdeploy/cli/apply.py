"""`kfdeploy diff ENV` and `kfdeploy apply ENV`: parse options, call the workflow, show progress.

The work happens in `kfdeploy.workflows.apply`; this module only turns its progress events into
a rich display and its summary into a table. `kubernetes` is imported by the workflow's adapter
only when a command runs, so `kfdeploy --help` stays fast.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from kfdeploy.cli.render import EnvArg, ManifestsOpt, Output, OutputOpt

if TYPE_CHECKING:
    from kfdeploy.plan.diff import DiffResult
    from kfdeploy.workflows.apply import ApplySummary, ProgressEvent

KubeconfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--kubeconfig",
        help="kubeconfig of the cluster (default: the environment's, provider kubeconfig).",
        dir_okay=False,
    ),
]
TimeoutOpt = Annotated[
    float, typer.Option("--timeout", min=1, help="Seconds each readiness wait may take.")
]
PruneNsOpt = Annotated[
    bool, typer.Option("--prune-namespaces", help="Also prune Namespaces the render dropped.")
]
PruneDataOpt = Annotated[
    bool, typer.Option("--prune-data", help="Also prune PVCs, PVs and Profiles (user data).")
]
PruneCrdsOpt = Annotated[
    bool, typer.Option("--prune-crds", help="Also prune CRDs that still have custom resources.")
]


def _console(stderr: bool = False) -> Any:
    from rich.console import Console

    return Console(highlight=False, stderr=stderr)


def diff(
    env: EnvArg,
    kubeconfig: KubeconfigOpt = None,
    manifests: ManifestsOpt = None,
    output: OutputOpt = Output.text,
    prune_namespaces: PruneNsOpt = False,
    prune_data: PruneDataOpt = False,
    prune_crds: PruneCrdsOpt = False,
) -> None:
    """Show what `apply` would change: server-side dry-run against the live cluster, plus the
    objects it would prune. Exit 0: no changes, 2: changes, 1: error."""
    from kfdeploy.config.load import load_environment
    from kfdeploy.errors import KfdeployError
    from kfdeploy.plan.prune import Protections
    from kfdeploy.workflows.apply import diff_environment

    try:
        loaded = load_environment(env)
        result = diff_environment(
            loaded.env,
            kubeconfig=kubeconfig,
            manifests_dir=manifests,
            protections=Protections(prune_namespaces, prune_data, prune_crds),
        )
    except KfdeployError as exc:
        exc.exit_code = 1  # diff's contract, like diff(1): 0 same, 2 different, 1 trouble
        raise
    if output == Output.json:
        typer.echo(json.dumps(_diff_dict(result), indent=2))
    else:
        _print_diff(result)
    if result.has_changes:
        raise typer.Exit(2)


def apply(
    env: EnvArg,
    kubeconfig: KubeconfigOpt = None,
    manifests: ManifestsOpt = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Server-side dry-run: validate, change nothing.")
    ] = False,
    prune: Annotated[
        bool,
        typer.Option("--prune/--no-prune", help="Delete objects the render no longer contains."),
    ] = True,
    force_conflicts: Annotated[
        bool,
        typer.Option(
            "--force-conflicts", help="Take over fields another field manager owns (never default)."
        ),
    ] = False,
    timeout: TimeoutOpt = 600,
    prune_namespaces: PruneNsOpt = False,
    prune_data: PruneDataOpt = False,
    prune_crds: PruneCrdsOpt = False,
    output: OutputOpt = Output.text,
) -> None:
    """Apply an environment in phases with server-side apply, prune, and wait for rollouts."""
    from kfdeploy.config.load import load_environment
    from kfdeploy.plan.prune import Protections
    from kfdeploy.workflows.apply import ApplyOptions, apply_environment, as_dict

    loaded = load_environment(env)
    options = ApplyOptions(
        dry_run=dry_run,
        prune=prune,
        force_conflicts=force_conflicts,
        timeout=timeout,
        protections=Protections(prune_namespaces, prune_data, prune_crds),
    )
    show = output == Output.text
    display = _ProgressDisplay() if show else None
    try:
        summary = apply_environment(
            loaded.env,
            kubeconfig=kubeconfig,
            manifests_dir=manifests,
            options=options,
            progress=display.event if display else None,
        )
    finally:
        if display:
            display.stop()
    if show:
        _print_summary(summary)
    else:
        typer.echo(json.dumps(as_dict(summary), indent=2))


class _ProgressDisplay:
    """One line per phase: objects applied (by action) and wait progress."""

    def __init__(self) -> None:
        from rich.live import Live

        self.console = _console(stderr=True)
        self.live = Live(console=self.console, transient=True, refresh_per_second=4)
        self.live.start()
        self.title = ""
        self.counts: dict[str, int] = {}
        self.total = 0
        self.wait = ""
        self.lock = threading.Lock()  # events arrive from the apply worker threads

    def event(self, e: ProgressEvent) -> None:
        with self.lock:
            self._event(e)

    def _event(self, e: ProgressEvent) -> None:
        from rich.text import Text

        if e.kind == "step-start":
            self.title, self.total, self.counts, self.wait = e.title, e.total, {}, ""
        elif e.kind == "object" and e.outcome is not None:
            self.counts[e.outcome.action] = self.counts.get(e.outcome.action, 0) + 1
        elif e.kind == "wait":
            self.wait = f"  waiting {e.title.split(': ', 1)[-1]} {e.done}/{e.total}"
        elif e.kind == "prune-start":
            self.title, self.total, self.counts, self.wait = "pruning", 0, {}, ""
        elif e.kind == "step-done":
            counts = e.counts if e.kind == "step-done" else self.counts
            done = ", ".join(f"{n} {a}" for a, n in sorted(counts.items())) or "done"
            self.console.print(f"[green]✓[/] {self.title}: {done}")
        n = sum(self.counts.values())
        self.live.update(Text(f"… {self.title} {n}/{self.total}{self.wait}"))

    def stop(self) -> None:
        self.live.stop()


def _print_summary(summary: ApplySummary) -> None:
    from rich.table import Table

    from kfdeploy.workflows.apply import summary_rows

    console = _console()
    cols = ("created", "configured", "unchanged", "pruned", "failed")
    table = Table(title="dry-run (nothing changed)" if summary.dry_run else "apply summary")
    table.add_column("component")
    for c in cols:
        table.add_column(c, justify="right")
    totals = dict.fromkeys(cols, 0)
    for comp, counts in summary_rows(summary):
        failed = counts["failed"] + counts["conflict"]
        vals = [counts[c] if c != "failed" else failed for c in cols]
        for c, v in zip(cols, vals, strict=True):
            totals[c] += v
        table.add_row(
            comp,
            *[
                (f"[red]{v}[/]" if c == "failed" and v else str(v))
                for c, v in zip(cols, vals, strict=True)
            ],
        )
    table.add_row("[bold]total[/]", *[f"[bold]{totals[c]}[/]" for c in cols])
    console.print(table)
    for ref, why in summary.prune.kept:
        console.print(f"[yellow]kept[/] {ref}: {why}")
    pending = [o for o in summary.outcomes if o.action == "pending"]
    if pending:
        console.print(
            f"[dim]{len(pending)} object(s) could not be dry-run before their CRDs exist[/]"
        )
    reqs = ", ".join(f"{n} {m}" for m, n in sorted(summary.requests.items()))
    console.print(f"[dim]{summary.seconds:.1f}s; requests: {reqs}; retries: {summary.retries}[/]")


def _diff_dict(result: DiffResult) -> dict[str, Any]:
    return {
        "changes": [
            {"object": str(d.key), "component": d.component, "action": d.action, "diff": d.text}
            for d in result.changed
        ],
        "prune": [str(r) for r in result.prune.delete],
        "kept": [f"{r}: {why}" for r, why in result.prune.kept],
        "pending": [f"{k}: {why}" for k, why in result.pending],
    }


def _print_diff(result: DiffResult) -> None:
    from rich.markup import escape

    console = _console()
    for d in result.changed:
        console.print(f"[bold]{d.action}[/] {escape(str(d.key))} [dim]({d.component})[/]")
        for line in d.text.splitlines():
            style = (
                "bold"
                if line.startswith(("+++", "---"))
                else "green"
                if line.startswith("+")
                else "red"
                if line.startswith("-")
                else "cyan"
                if line.startswith("@@")
                else ""
            )
            console.print(f"[{style}]{escape(line)}[/]" if style else escape(line))
    for k, why in result.pending:
        console.print(f"[yellow]pending[/] {escape(str(k))}: {escape(why)}")
    for ref in result.prune.delete:
        console.print(f"[red]prune[/] {escape(str(ref))}")
    for ref, why in result.prune.kept:
        console.print(f"[yellow]kept[/] {escape(str(ref))}: {escape(why)}")
    n = len(result.changed)
    console.print(
        f"{n} object(s) would change, {len(result.prune.delete)} would be pruned"
        if result.has_changes
        else "no changes"
    )


def register(app: typer.Typer) -> None:
    app.command("diff")(diff)
    app.command("apply")(apply)

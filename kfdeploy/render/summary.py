"""How `kfdeploy render` reports a render: shared by the full CLI and its warm fast path, which
must print the same thing (see kfdeploy.entry)."""

from __future__ import annotations

from typing import Any


def console() -> Any:
    from rich.console import Console

    return Console(highlight=False)


def finding_line(f: dict[str, str]) -> str:
    where = f"{f['component']}: {f['object']}: " if f.get("object") else ""
    return f"{f['severity']}: {where}{f['message']} [{f['rule']}]"


def print_summary(s: dict[str, Any]) -> None:
    from rich.table import Table

    out = console()
    table = Table("component", "objects", title=f"{s['environment']} — Kubeflow {s['release']}")
    for name, n in s["components"].items():
        table.add_row(name, str(n))
    table.add_row("[bold]total[/]", f"[bold]{s['objects']}[/]")
    out.print(table)
    for f in s["findings"]:
        if f["severity"] != "note":
            colour = "red" if f["severity"] == "error" else "yellow"
            out.print(f"[{colour}]{finding_line(f)}[/]")
    notes = sum(1 for f in s["findings"] if f["severity"] == "note")
    out.print(
        f"cache {s['cache']}, {s['seconds']}s, release from {s['source']}"
        + (f", {notes} note(s) (see --output json)" if notes else "")
        + (f"; wrote {len(s['files'])} files to {s['out']}" if s["out"] else "")
    )

"""Smoke reports: a rich table for people, JSON for scripts, JUnit XML for CI.

The JUnit file follows the shape CI systems read (Jenkins' junit schema, which GitLab and GitHub
test reporters also accept): `<testsuites>` holding one `<testsuite>` per run, one `<testcase>` per
check; a failed check carries `<failure>`, a check that could not run `<error>`, a check that does
not apply here `<skipped>` (so "not applicable" is never counted as a pass that tested something).
tests/data/junit.xsd is that schema; a unit test validates this output against it.
"""

from __future__ import annotations

import json
import re
import socket
import xml.etree.ElementTree as ET
from datetime import UTC
from pathlib import Path
from typing import Any

from kfdeploy.checks.framework import CheckResult, SmokeReport, Status

STYLE = {
    Status.passed: "green",
    Status.failed: "bold red",
    Status.not_applicable: "dim",
    Status.error: "bold magenta",
}
# Details printed under the table per check; the JSON and JUnit reports keep them all.
MAX_TEXT_DETAILS = 20


def to_json(report: SmokeReport) -> str:
    return json.dumps(report.to_dict(), indent=2)


def summary_line(report: SmokeReport) -> str:
    counts = report.counts()
    parts = [f"{n} {s.replace('-', ' ')}" for s, n in counts.items() if n]
    verdict = "OK" if report.ok else "FAILED"
    return (
        f"smoke {report.environment}: {verdict} - {len(report.results)} checks: "
        f"{', '.join(parts) or 'none run'} ({report.duration:.1f}s)"
    )


def print_table(report: SmokeReport, console: Any = None) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = console or Console(highlight=False)
    table = Table(title=f"smoke checks: {report.environment}", title_justify="left")
    table.add_column("check")
    table.add_column("status")
    table.add_column("time", justify="right")
    table.add_column("reason", overflow="fold")
    for r in report.results:
        style = STYLE[r.status]
        table.add_row(r.name, f"[{style}]{r.status}[/]", f"{r.duration:.1f}s", escape(r.reason))
    console.print(table)
    for r in report.results:
        if r.status in (Status.failed, Status.error) and r.details:
            console.print(f"[{STYLE[r.status]}]{r.name}[/]:")
            for line in r.details[:MAX_TEXT_DETAILS]:
                console.print(f"  {escape(line)}", soft_wrap=True)
            if len(r.details) > MAX_TEXT_DETAILS:
                console.print(f"  ... {len(r.details) - MAX_TEXT_DETAILS} more (see --output json)")
    style = "green" if report.ok else "bold red"
    console.print(f"[{style}]{escape(summary_line(report))}[/]")


# Characters XML 1.0 cannot carry at all (not even escaped); API messages may hold them (ANSI
# colours from a container's log, NULs), and one would make the whole file unreadable to CI.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _clean(text: str) -> str:
    return _NOT_XML.sub("?", text)


def _seconds(value: float) -> str:
    # Plain decimal: the schema's time pattern allows no exponent and no unit.
    return f"{max(value, 0.0):.3f}"


def to_junit(report: SmokeReport, hostname: str | None = None) -> str:
    """The report as JUnit XML (a string with an XML declaration)."""
    counts = report.counts()
    suite_name = f"kfdeploy.smoke.{report.environment}"
    # ISO 8601 without a zone, UTC: the form Ant/Jenkins write and the strictest schemas require.
    timestamp = report.started_at.astimezone(UTC)
    attrs = {
        "tests": str(len(report.results)),
        "failures": str(counts[Status.failed]),
        "errors": str(counts[Status.error]),
        "time": _seconds(report.duration),
    }
    # `skipped` only on the suite: Jenkins' schema does not allow it on <testsuites>.
    root = ET.Element("testsuites", {"name": "kfdeploy smoke", **attrs})
    suite = ET.SubElement(
        root,
        "testsuite",
        {
            "name": suite_name,
            **attrs,
            "skipped": str(counts[Status.not_applicable]),
            "timestamp": timestamp.strftime("%Y-%m-%dT%H:%M:%S"),
            "hostname": hostname or socket.gethostname() or "localhost",
            "id": "0",
            "package": "kfdeploy.smoke",
        },
    )
    props = ET.SubElement(suite, "properties")
    ET.SubElement(props, "property", {"name": "environment", "value": _clean(report.environment)})
    for r in report.results:
        _testcase(suite, suite_name, r)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _testcase(suite: ET.Element, classname: str, r: CheckResult) -> None:
    case = ET.SubElement(
        suite, "testcase", {"classname": classname, "name": r.name, "time": _seconds(r.duration)}
    )
    reason = _clean(r.reason)
    body = _clean("\n".join(r.details))
    if r.status == Status.failed:
        ET.SubElement(case, "failure", {"type": "failed", "message": reason}).text = body or reason
    elif r.status == Status.error:
        ET.SubElement(case, "error", {"type": "error", "message": reason}).text = body or reason
    elif r.status == Status.not_applicable:
        ET.SubElement(case, "skipped", {"message": f"not applicable: {reason}"})
    elif body or reason:
        ET.SubElement(case, "system-out").text = "\n".join(x for x in (reason, body) if x)


def write_junit(report: SmokeReport, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(to_junit(report), encoding="utf-8")

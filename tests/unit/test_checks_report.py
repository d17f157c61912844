"""Smoke reports: table, JSON, and JUnit XML that validates against the schema CI systems read."""

from __future__ import annotations

import io
import json
import os
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from pathlib import Path

import pytest
from rich.console import Console

from kfdeploy.checks.framework import CheckResult, SmokeReport, Status
from kfdeploy.checks.report import print_table, summary_line, to_json, to_junit, write_junit

XSD = Path(__file__).resolve().parents[1] / "data" / "junit.xsd"
STARTED = datetime(2026, 12, 4, 21, 30, 5, 123456, tzinfo=UTC)


def _result(
    name: str,
    status: Status,
    reason: str = "",
    details: tuple[str, ...] = (),
    duration: float = 1.25,
) -> CheckResult:
    return CheckResult(name, status, reason, duration, STARTED, details, f"{name} description")


def _report(*results: CheckResult) -> SmokeReport:
    return SmokeReport("cern-staging", list(results), STARTED, 12.5)


MIXED = _report(
    _result(
        "workloads-available",
        Status.failed,
        "1 of 49 workloads not ready: Deployment kubeflow/x",
        (
            "Deployment kubeflow/x (pipelines): 0/1 replicas available",
            "  pod x-1 Pending: Unschedulable: 0/3 nodes are available: 3 Insufficient cpu.",
        ),
    ),
    _result("crds-established", Status.passed, "74 CRDs established"),
    _result("webhooks-ready", Status.error, 'GET /apis/...: 403 forbidden <&> "quoted"'),
    _result("gpu-schedules", Status.not_applicable, "the environment declares no GPU nodegroup"),
    _result("profile-reconciles", Status.passed, "", duration=1234.5),
)


@pytest.fixture(scope="module")
def schema():  # type: ignore[no-untyped-def]
    try:
        import xmlschema
    except ImportError:
        # A schema check that silently skips would let CI pass without ever validating.
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("CI=true and xmlschema is not installed (dev extra)", pytrace=False)
        pytest.skip("xmlschema is not installed (pip install xmlschema)")
    return xmlschema.XMLSchema(str(XSD))


def test_junit_validates_against_the_schema(schema, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "out" / "smoke.xml"
    write_junit(MIXED, path)
    schema.validate(str(path))  # raises with the offending element if invalid


def test_junit_content() -> None:
    root = ET.fromstring(to_junit(MIXED, hostname="ci-runner"))
    assert root.tag == "testsuites"
    assert (root.get("tests"), root.get("failures"), root.get("errors")) == ("5", "1", "1")
    (suite,) = root.findall("testsuite")
    assert suite.attrib == {
        "name": "kfdeploy.smoke.cern-staging",
        "tests": "5",
        "failures": "1",
        "errors": "1",
        "skipped": "1",
        "time": "12.500",
        "timestamp": "2026-12-04T21:30:05",
        "hostname": "ci-runner",
        "id": "0",
        "package": "kfdeploy.smoke",
    }
    cases = {c.get("name"): c for c in suite.findall("testcase")}
    assert list(cases) == [r.name for r in MIXED.results]
    assert all(c.get("classname") == "kfdeploy.smoke.cern-staging" for c in cases.values())
    failure = cases["workloads-available"].find("failure")
    assert failure is not None
    assert failure.get("message") == "1 of 49 workloads not ready: Deployment kubeflow/x"
    assert "Insufficient cpu" in (failure.text or "")
    error = cases["webhooks-ready"].find("error")
    assert error is not None and error.get("message") == 'GET /apis/...: 403 forbidden <&> "quoted"'
    skipped = cases["gpu-schedules"].find("skipped")
    assert skipped is not None and skipped.get("message", "").startswith("not applicable: ")
    assert [e.tag for e in cases["crds-established"]] == ["system-out"]
    assert cases["profile-reconciles"].get("time") == "1234.500"
    assert list(cases["profile-reconciles"]) == []


def test_junit_survives_characters_xml_cannot_carry(schema) -> None:  # type: ignore[no-untyped-def]
    report = _report(
        _result(
            "workloads-available", Status.failed, "bad \x1b[31mred\x1b[0m \x00", ("log line \x07",)
        )
    )
    text = to_junit(report)
    schema.validate(io.StringIO(text))
    case = ET.fromstring(text).find("testsuite/testcase/failure")
    assert case is not None and case.get("message") == "bad ?[31mred?[0m ?"


def test_empty_report_is_valid_junit(schema) -> None:  # type: ignore[no-untyped-def]
    schema.validate(io.StringIO(to_junit(_report())))


def test_schema_rejects_what_ci_would_reject(schema) -> None:  # type: ignore[no-untyped-def]
    # The schema is a real constraint, not a rubber stamp: a suite without its counts fails.
    bad = '<testsuites><testsuite name="x" tests="1"><testcase name="a"/></testsuite></testsuites>'
    assert not schema.is_valid(io.StringIO(bad))
    bad_time = (
        '<testsuites><testsuite name="x" tests="1" failures="0" errors="0" time="1e3">'
        "</testsuite></testsuites>"
    )
    assert not schema.is_valid(io.StringIO(bad_time))


def test_json_report() -> None:
    data = json.loads(to_json(MIXED))
    assert data["environment"] == "cern-staging"
    assert data["ok"] is False
    assert data["counts"] == {"passed": 2, "failed": 1, "not-applicable": 1, "error": 1}
    assert data["checks"][0] == {
        "name": "workloads-available",
        "status": "failed",
        "reason": "1 of 49 workloads not ready: Deployment kubeflow/x",
        "duration": 1.25,
        "started_at": "2026-12-04T21:30:05.123456+00:00",
        "details": list(MIXED.results[0].details),
        "description": "workloads-available description",
    }


def test_table_and_summary() -> None:
    buf = io.StringIO()
    print_table(MIXED, Console(file=buf, width=200, color_system=None))
    text = buf.getvalue()
    for r in MIXED.results:
        assert r.name in text
    assert "Unschedulable: 0/3 nodes are available" in text  # details of failures are shown
    assert "74 CRDs established" in text
    assert summary_line(MIXED) == (
        "smoke cern-staging: FAILED - 5 checks: 2 passed, 1 failed, 1 not applicable, 1 error (12.5s)"
    )
    ok = _report(_result("crds-established", Status.passed))
    assert summary_line(ok).startswith("smoke cern-staging: OK")

"""The check runner: one result per check, in order, concurrent, bounded, never raising."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from checks_fakes import FakeKube, make_env

from kfdeploy.checks import run_checks
from kfdeploy.checks.framework import (
    CheckContext,
    Outcome,
    Status,
    failed,
    not_applicable,
    passed,
)
from kfdeploy.errors import ClusterError, ConfigError


@dataclass
class Fixed:
    name: str
    outcome: Outcome
    delay: float = 0.0
    timeout: float | None = None
    description: str = "fixed"
    ran_in: list[str] = field(default_factory=list)

    def run(self, ctx: CheckContext) -> Outcome:
        self.ran_in.append(threading.current_thread().name)
        ctx.sleep(self.delay)
        return self.outcome


@dataclass
class Raises:
    exc: BaseException
    name: str = "raises"
    timeout: float | None = None
    description: str = ""

    def run(self, ctx: CheckContext) -> Outcome:
        raise self.exc


@dataclass
class Polls:
    """Becomes ready after `ready_after` evaluations; counts them."""

    ready_after: int
    errors: list[ClusterError] = field(default_factory=list)
    name: str = "polls"
    timeout: float | None = None
    description: str = ""
    evaluations: int = 0

    def run(self, ctx: CheckContext) -> Outcome:
        def evaluate() -> Outcome:
            self.evaluations += 1
            if self.errors:
                raise self.errors.pop(0)
            if self.evaluations >= self.ready_after:
                return passed("ready")
            return failed("not ready", ["thing x: not ready"])

        return ctx.poll(evaluate, interval=0.05)


@dataclass
class IgnoresDeadline:
    name: str = "stubborn"
    timeout: float | None = 0.2
    description: str = ""
    released: threading.Event = field(default_factory=threading.Event)

    def run(self, ctx: CheckContext) -> Outcome:
        self.released.wait(30)  # a check that never looks at its deadline (a bug)
        return passed()


def _run(*checks: object, timeout: float = 5, grace: float = 1.0) -> list:  # type: ignore[type-arg]
    report = run_checks(
        make_env(),
        None,
        [],
        kube=FakeKube(),
        checks=list(checks),
        timeout=timeout,
        grace=grace,  # type: ignore[arg-type]
    )
    return report.results


def test_results_in_order_with_names_durations_and_details() -> None:
    results = _run(
        Fixed("a", passed("fine")),
        Fixed("b", failed("broken", ["x is down"])),
        Fixed("c", not_applicable("not here")),
    )
    assert [(r.name, r.status, r.reason) for r in results] == [
        ("a", Status.passed, "fine"),
        ("b", Status.failed, "broken"),
        ("c", Status.not_applicable, "not here"),
    ]
    assert results[1].details == ("x is down",)
    assert all(r.duration >= 0 and r.started_at.tzinfo is not None for r in results)
    assert [r.ok for r in results] == [True, False, True]


def test_checks_run_concurrently() -> None:
    checks = [Fixed(n, passed(), delay=0.5) for n in "abcd"]
    started = time.monotonic()
    results = _run(*checks)
    assert time.monotonic() - started < 1.5  # four 0.5 s checks, not 2 s in a row
    assert len({c.ran_in[0] for c in checks}) == 4
    assert all(r.status == Status.passed for r in results)


def test_exceptions_become_error_results_and_never_escape() -> None:
    results = _run(
        Raises(ClusterError("GET /api: 403 forbidden", status=403), name="refused"),
        Raises(ZeroDivisionError("boom"), name="bug"),
        Fixed("fine", passed()),
    )
    assert [r.status for r in results] == [Status.error, Status.error, Status.passed]
    assert results[0].reason == "GET /api: 403 forbidden"
    assert results[1].reason == "unexpected ZeroDivisionError: boom"


def test_poll_waits_until_ready() -> None:
    check = Polls(ready_after=3)
    (result,) = _run(check)
    assert result.status == Status.passed
    assert check.evaluations == 3


def test_poll_gives_up_at_the_deadline_with_the_last_reason() -> None:
    check = Polls(ready_after=10_000)
    started = time.monotonic()
    (result,) = _run(check, timeout=0.3)
    assert 0.25 < time.monotonic() - started < 1.0
    assert result.status == Status.failed
    assert result.reason == "not ready (after 0.3s)"
    assert result.details == ("thing x: not ready",)


def test_poll_retries_temporary_api_errors_only() -> None:
    temporary = Polls(ready_after=1, errors=[ClusterError("503", status=503), ClusterError("down")])
    (result,) = _run(temporary)
    assert result.status == Status.passed
    assert temporary.evaluations == 3

    permanent = Polls(ready_after=1, errors=[ClusterError("GET x: 403 forbidden", status=403)])
    (result,) = _run(permanent)
    assert result.status == Status.error
    assert "403" in result.reason


def test_check_that_ignores_its_deadline_is_abandoned_as_failed() -> None:
    stubborn = IgnoresDeadline()
    started = time.monotonic()
    (result, other) = _run(stubborn, Fixed("other", passed()), grace=0.2)
    elapsed = time.monotonic() - started
    stubborn.released.set()
    assert elapsed < 2
    assert result.status == Status.failed
    assert "did not finish within its timeout of 0.2s" in result.reason
    assert other.status == Status.passed


def test_per_check_timeout_overrides_the_default() -> None:
    check = Polls(ready_after=10_000, timeout=0.1)
    started = time.monotonic()
    (result,) = _run(check, timeout=60)
    assert time.monotonic() - started < 1
    assert result.reason.endswith("(after 0.1s)")


def test_on_result_sees_every_result() -> None:
    seen: list[str] = []
    run_checks(
        make_env(),
        None,
        [],
        kube=FakeKube(),
        checks=[Fixed("a", passed()), Fixed("b", failed("x"))],  # type: ignore[list-item]
        on_result=lambda r: seen.append(r.name),
    )
    assert seen == ["a", "b"]


def test_report_ok_and_counts() -> None:
    report = run_checks(
        make_env(),
        None,
        [],
        kube=FakeKube(),
        checks=[Fixed("a", passed()), Fixed("b", not_applicable("n/a"))],  # type: ignore[list-item]
    )
    assert report.ok
    assert report.counts() == {"passed": 1, "failed": 0, "not-applicable": 1, "error": 0}
    assert report.to_dict()["checks"][1]["status"] == "not-applicable"


def test_selection_follows_the_environment_and_only() -> None:
    env = make_env(smoke={"checks": ["crds-established", "workloads-available"]})
    report = run_checks(env, None, [], kube=FakeKube())
    # Environment order is kept; nothing rendered, so both do not apply.
    assert [r.name for r in report.results] == ["crds-established", "workloads-available"]
    assert all(r.status == Status.not_applicable for r in report.results)

    report = run_checks(env, None, [], kube=FakeKube(), only=["gpu-schedules"])
    assert [r.name for r in report.results] == ["gpu-schedules"]

    with pytest.raises(ConfigError, match="unknown check 'nope'"):
        run_checks(env, None, [], kube=FakeKube(), only=["nope"])


def test_no_kubeconfig_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="no kubeconfig"):
        run_checks(make_env(), None, [])


def test_missing_kubeconfig_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        run_checks(make_env(), "/nonexistent/kubeconfig", [])


def test_an_unreachable_api_server_is_one_error_before_any_check() -> None:
    kube = FakeKube()
    kube.errors["/version"] = [ClusterError("GET /version: cannot reach the API server: refused")]
    check = Fixed("a", passed())
    with pytest.raises(ClusterError, match="cannot use the cluster of environment unit: GET"):
        run_checks(make_env(), None, [], kube=kube, checks=[check])  # type: ignore[list-item]
    assert check.ran_in == []


def test_a_kubeconfig_pointing_nowhere_fails_fast(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "clusters: [{name: c, cluster: {server: 'https://127.0.0.1:9', insecure-skip-tls-verify: true}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
        "contexts: [{name: c, context: {cluster: c, user: u}}]\n"
    )
    started = time.monotonic()
    with pytest.raises(ClusterError, match="cannot reach the API server"):
        run_checks(make_env(), kubeconfig, [])
    assert time.monotonic() - started < 10

"""Smoke checks: small named probes of a deployed platform, each bounded by a timeout.

A check answers one question about the live cluster ("are the platform's Deployments Available?")
and returns an `Outcome`; the runner adds the name, the timing and turns anything a check raises
into a result, so one broken check (or an API server that stops answering) never hides the
others and never escapes as an exception: `up` and `kfdeploy smoke` always get one result per
selected check.

Checks run in threads (they spend their time waiting on the API server, so threads are enough;
see docs/style.md "stay synchronous"). Python cannot stop a thread, so a timeout is cooperative:
every check waits through `CheckContext.sleep`/`poll`, which return as soon as the check's deadline
passes or the runner cancels it. The runner still gives up on a check that ignores its deadline
(`timeout + grace`), reports it as failed, and leaves the thread behind as a daemon.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

from kfdeploy.errors import ClusterError, KfdeployError

if TYPE_CHECKING:
    from kfdeploy.checks.kube import Kube
    from kfdeploy.config.model import Environment
    from kfdeploy.render.objects import RenderedObject

log = logging.getLogger(__name__)

# Time a check gets after its deadline to report what it saw and clean up what it created (the
# GPU pod, the Profile) before the runner stops waiting for it.
DEFAULT_GRACE = 15.0


class Status(StrEnum):
    passed = "passed"
    failed = "failed"
    not_applicable = "not-applicable"
    error = "error"  # the check itself could not run: API refused or unreachable, or a bug


@dataclass(frozen=True)
class Outcome:
    """What a check concluded; `details` are short lines a person can act on."""

    status: Status
    reason: str = ""
    details: tuple[str, ...] = ()
    settled: bool = False  # a failure that waiting cannot fix (a pod bound to the wrong node)

    @property
    def final(self) -> bool:
        """Waiting longer cannot change it (a failure may still recover, unless settled)."""
        return self.settled or self.status in (Status.passed, Status.not_applicable, Status.error)


def passed(reason: str = "", details: Sequence[str] = ()) -> Outcome:
    return Outcome(Status.passed, reason, tuple(details))


def failed(reason: str, details: Sequence[str] = (), *, settled: bool = False) -> Outcome:
    return Outcome(Status.failed, reason, tuple(details), settled)


def not_applicable(reason: str, details: Sequence[str] = ()) -> Outcome:
    return Outcome(Status.not_applicable, reason, tuple(details))


@dataclass(frozen=True)
class CheckResult:
    name: str
    status: Status
    reason: str
    duration: float  # seconds
    started_at: datetime
    details: tuple[str, ...] = ()
    description: str = ""

    @property
    def ok(self) -> bool:
        return self.status in (Status.passed, Status.not_applicable)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": str(self.status),
            "reason": self.reason,
            "duration": round(self.duration, 3),
            "started_at": self.started_at.isoformat(),
            "details": list(self.details),
            "description": self.description,
        }


@dataclass
class SmokeReport:
    """One run of the smoke checks against one environment."""

    environment: str
    results: list[CheckResult]
    started_at: datetime
    duration: float

    @property
    def ok(self) -> bool:
        """True when every check passed or does not apply here: `kfdeploy smoke` exits 0."""
        return all(r.ok for r in self.results)

    def counts(self) -> dict[str, int]:
        out = {str(s): 0 for s in Status}
        for r in self.results:
            out[str(r.status)] += 1
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "environment": self.environment,
            "ok": self.ok,
            "started_at": self.started_at.isoformat(),
            "duration": round(self.duration, 3),
            "counts": self.counts(),
            "checks": [r.to_dict() for r in self.results],
        }


class CheckContext:
    """What a check may use: the environment, what should exist, the cluster, its deadline."""

    def __init__(
        self,
        env: Environment,
        objects: Sequence[RenderedObject],
        kube: Kube,
        timeout: float,
        cancelled: threading.Event | None = None,
    ) -> None:
        self.env = env
        self.objects = objects
        self.kube = kube
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout
        self.cancelled = cancelled or threading.Event()

    def remaining(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def expired(self) -> bool:
        return self.cancelled.is_set() or time.monotonic() >= self.deadline

    def sleep(self, seconds: float) -> bool:
        """Wait up to `seconds` (never past the deadline); False once the check must stop."""
        wait = min(seconds, self.remaining())
        if wait > 0 and self.cancelled.wait(wait):
            return False
        return not self.expired()

    def rendered(self, kind: str, group: str | None = None) -> list[RenderedObject]:
        return [o for o in self.objects if o.kind == kind and (group is None or o.group == group)]

    def poll(self, evaluate: Callable[[], Outcome], interval: float = 2.0) -> Outcome:
        """Evaluate until the outcome is final or the deadline passes; return the last one.

        Temporary API failures (5xx, 429, connection errors) are retried like a not-yet-ready
        answer; any other API error ends the check as an error, because waiting will not fix a
        403 or a 404 on a path kfdeploy built.
        """
        attempt = 0
        last: Outcome | None = None
        while True:
            attempt += 1
            try:
                last = evaluate()
            except ClusterError as exc:
                if not _temporary(exc):
                    raise
                log.info("attempt #%d failed temporarily (%s); will retry", attempt, exc)
                last = failed(f"the API server did not answer: {exc}")
            if last.final or not self.sleep(interval):
                break
        if last.status == Status.failed and self.expired():
            waited = "cancelled" if self.cancelled.is_set() else f"after {self.timeout:g}s"
            last = Outcome(last.status, f"{last.reason} ({waited})", last.details)
        return last


def _temporary(exc: ClusterError) -> bool:
    return exc.status is None or exc.status == 429 or exc.status >= 500


class Check(Protocol):
    """A smoke check. `timeout` None means the environment's `smoke.timeout`."""

    name: str
    description: str
    timeout: float | None

    def run(self, ctx: CheckContext) -> Outcome: ...


@dataclass
class _Slot:
    check: Check
    timeout: float
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    started: float = field(default_factory=time.monotonic)
    done: threading.Event = field(default_factory=threading.Event)
    cancel: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    result: CheckResult | None = None

    def settle(self, result: CheckResult) -> CheckResult:
        """Record `result` unless one is already recorded (the runner may have given up)."""
        with self.lock:
            if self.result is None:
                self.result = result
            return self.result


def run(
    checks: Sequence[Check],
    make_context: Callable[[Check, float, threading.Event], CheckContext],
    *,
    default_timeout: float,
    grace: float = DEFAULT_GRACE,
    on_result: Callable[[CheckResult], None] | None = None,
) -> list[CheckResult]:
    """Run `checks` concurrently, each bounded by its timeout; results in the order given.

    Never raises for a check's failure or exception. On KeyboardInterrupt the checks are
    cancelled and given `grace` seconds to clean up before the interrupt propagates.
    """
    slots = [
        _Slot(c, float(c.timeout if c.timeout is not None else default_timeout)) for c in checks
    ]
    for slot in slots:
        thread = threading.Thread(
            target=_run_one,
            args=(slot, make_context),
            name=f"check-{slot.check.name}",
            daemon=True,  # a check stuck past its grace must not keep the process alive
        )
        thread.start()
    try:
        for slot in slots:
            hard_deadline = slot.started + slot.timeout + grace
            if not slot.done.wait(max(0.0, hard_deadline - time.monotonic())):
                slot.cancel.set()
                slot.settle(
                    _result(
                        slot,
                        failed(
                            f"did not finish within its timeout of {slot.timeout:g}s "
                            f"(+{grace:g}s grace); abandoned"
                        ),
                    )
                )
                log.warning("check %s abandoned after %.1fs", slot.check.name, slot.timeout + grace)
            if on_result is not None and slot.result is not None:
                on_result(slot.result)
    except KeyboardInterrupt:
        for slot in slots:
            slot.cancel.set()
        deadline = time.monotonic() + grace
        for slot in slots:
            slot.done.wait(max(0.0, deadline - time.monotonic()))
        raise
    return [s.result for s in slots if s.result is not None]


def _run_one(
    slot: _Slot, make_context: Callable[[Check, float, threading.Event], CheckContext]
) -> None:
    check = slot.check
    try:
        ctx = make_context(check, slot.timeout, slot.cancel)
        outcome = check.run(ctx)
    except KfdeployError as exc:
        log.info("check %s could not run: %s", check.name, exc, exc_info=True)
        outcome = Outcome(Status.error, str(exc))
    except Exception as exc:  # one broken check must not hide the others
        log.exception("check %s raised", check.name)
        outcome = Outcome(Status.error, f"unexpected {type(exc).__name__}: {exc}")
    slot.settle(_result(slot, outcome))
    slot.done.set()


def _result(slot: _Slot, outcome: Outcome) -> CheckResult:
    return CheckResult(
        name=slot.check.name,
        status=outcome.status,
        reason=outcome.reason,
        duration=time.monotonic() - slot.started,
        started_at=slot.started_at,
        details=outcome.details,
        description=slot.check.description,
    )

"""Smoke checks of a deployed platform: `run_checks` is what `kfdeploy smoke` and `up` call.

    report = run_checks(env, kubeconfig, objects)      # SmokeReport; never raises for a failure
    report.ok                                          # all passed or not applicable

Checks live in `platform.py` (rendered vs live: workloads, CRDs, webhooks) and `probes.py`
(objects created to prove behaviour: a GPU pod, a Profile); only `kube.py` touches the
`kubernetes` package. Reports (table, JSON, JUnit XML) are in `report.py`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from kfdeploy.checks.framework import (
    DEFAULT_GRACE,
    Check,
    CheckContext,
    CheckResult,
    Outcome,
    SmokeReport,
    Status,
    run,
)

if TYPE_CHECKING:
    from kfdeploy.checks.kube import Kube
    from kfdeploy.config.model import Environment
    from kfdeploy.render.objects import RenderedObject

__all__ = [
    "Check",
    "CheckContext",
    "CheckResult",
    "Outcome",
    "SmokeReport",
    "Status",
    "all_checks",
    "run_checks",
]


def all_checks() -> dict[str, Check]:
    """Every known check by name, in the order of `CHECK_NAMES` (the environment's vocabulary)."""
    from kfdeploy.checks.platform import CrdsEstablished, WebhooksReady, WorkloadsAvailable
    from kfdeploy.checks.probes import GpuSchedules, ProfileReconciles
    from kfdeploy.config.model import CHECK_NAMES

    checks: list[Check] = [
        WorkloadsAvailable(),
        CrdsEstablished(),
        WebhooksReady(),
        GpuSchedules(),
        ProfileReconciles(),
    ]
    by_name = {c.name: c for c in checks}
    assert tuple(by_name) == CHECK_NAMES, "checks and config.model.CHECK_NAMES disagree"
    return by_name


def run_checks(
    env: Environment,
    kubeconfig: Path | str | None,
    objects: Sequence[RenderedObject],
    *,
    context: str | None = None,
    only: Sequence[str] | None = None,
    timeout: float | None = None,
    kube: Kube | None = None,
    checks: Sequence[Check] | None = None,
    grace: float = DEFAULT_GRACE,
    on_result: Callable[[CheckResult], None] | None = None,
) -> SmokeReport:
    """Run the environment's selected smoke checks (`env.smoke.checks`) concurrently.

    `objects` are the rendered platform (what should exist). `kubeconfig` (+ `context`) says
    where the cluster is; `kube` replaces it with a ready client (tests, or a caller that already
    has one). `only` narrows the selection, `timeout` overrides `env.smoke.timeout` (seconds per
    check), `checks` replaces the check implementations (tests). `on_result` sees each result as
    soon as the runner collects it, for live progress. Raises only when the cluster cannot even
    be configured (`ConfigError` for a bad kubeconfig) or does not answer at all (`ClusterError`);
    a failing check is a result, not an error.
    """
    from kfdeploy.errors import ClusterError, ConfigError

    if checks is None:
        known = all_checks()
        names = list(env.smoke.checks)
        if only:
            unknown = [n for n in only if n not in known]
            if unknown:
                raise ConfigError(
                    f"unknown check {unknown[0]!r}; expected one of {', '.join(known)}"
                )
            names = [n for n in known if n in only]
        checks = [known[n] for n in names]
    own_client = None
    if kube is None:
        if kubeconfig is None:
            raise ConfigError(
                f"no kubeconfig for environment {env.name}",
                hint="pass --kubeconfig, or set cluster.kubeconfig in the environment",
            )
        from kfdeploy.checks.kube import KubeClient

        kube = own_client = KubeClient.from_kubeconfig(kubeconfig, context)
    client = kube
    try:
        # One cheap call first: an unreachable or refusing API server is one clear error now,
        # instead of five checks each waiting out their timeout on it.
        client.get("/version")
    except ClusterError as exc:
        if own_client is not None:
            own_client.close()
        raise ClusterError(
            f"cannot use the cluster of environment {env.name}: {exc}",
            status=exc.status,
            hint="check the kubeconfig (and context) and that the API server is up",
        ) from exc
    started_at = datetime.now(UTC)
    started = time.monotonic()

    def make_context(check: Check, seconds: float, cancelled: threading.Event) -> CheckContext:
        return CheckContext(env, objects, client, seconds, cancelled)

    try:
        results = run(
            checks,
            make_context,
            default_timeout=float(timeout if timeout is not None else env.smoke.timeout),
            grace=grace,
            on_result=on_result,
        )
    finally:
        if own_client is not None:
            own_client.close()
    return SmokeReport(env.name, results, started_at, time.monotonic() - started)

"""Polling Magnum's state machines: every wait has a timeout, an interval and a failure set.

Intervals start at `poll` seconds per resource and grow by `backoff` up to `poll_max`, so a long
create costs a request every ~20 s, not every second. Tests shrink them with
`WaitSettings(poll=0.2, ...)` or `KFDEPLOY_MAGNUM_POLL`/`KFDEPLOY_MAGNUM_POLL_MAX`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kfdeploy.errors import WaitTimeout

Progress = Callable[[str], None]


@dataclass
class WaitSettings:
    poll: float = 3.0
    poll_max: float = 20.0
    backoff: float = 1.5
    nodegroup_timeout: float = 1800
    resize_timeout: float = 1800
    upgrade_timeout: float = 3600
    delete_timeout: float = 1800
    # how many times a 202 that changed nothing (busy cluster) is re-issued before giving up
    reissue: int = 3

    @classmethod
    def from_env(cls) -> WaitSettings:
        settings = cls()
        if value := os.environ.get("KFDEPLOY_MAGNUM_POLL"):
            settings.poll = float(value)
        if value := os.environ.get("KFDEPLOY_MAGNUM_POLL_MAX"):
            settings.poll_max = float(value)
        return settings


def poll_until(
    what: str,
    read: Callable[[], Any],
    done: Callable[[Any], bool],
    *,
    timeout: float,
    settings: WaitSettings,
    describe: Callable[[Any], str] = str,
    failed: Callable[[Any], str | None] = lambda _: None,
    progress: Progress = lambda _: None,
    sleep: Callable[[float], None] = time.sleep,
) -> Any:
    """Read until `done(value)`; raise the error `failed(value)` returns, or WaitTimeout."""
    start = time.monotonic()
    interval = settings.poll
    last_desc: str | None = None
    last_report = start
    while True:
        value = read()
        elapsed = time.monotonic() - start
        desc = describe(value)
        if desc != last_desc or time.monotonic() - last_report > 60:
            progress(f"{what}: {desc} ({elapsed:.0f}s)")
            last_desc, last_report = desc, time.monotonic()
        if done(value):
            return value
        failure = failed(value)
        if failure:
            from kfdeploy.errors import CloudError

            raise CloudError(failure)
        if elapsed + interval > timeout:
            raise WaitTimeout(f"timed out after {timeout:.0f}s waiting for {what}; last: {desc}")
        sleep(interval)
        interval = min(interval * settings.backoff, settings.poll_max)

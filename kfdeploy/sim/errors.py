"""Errors of the local control plane, placed in kfdeploy's one error tree.

They subclass the general classes of `kfdeploy.errors` so the CLI maps them to the usual exit codes
(4 for a missing or failing tool, 3 for a cluster that did not come up) while callers that care
(the test fixtures, the Magnum emulator) can still tell a simulator failure apart.
"""

from __future__ import annotations

from pathlib import Path

from kfdeploy.errors import ClusterError, KfdeployError, ToolError


class SimBuildError(ToolError):
    """The control-plane binaries are missing and could not be built (no `go`, a failed build)."""


class SimStartError(ClusterError):
    """A control-plane component did not start; `log_dir` holds every component's log."""

    def __init__(
        self, message: str, *, log_dir: Path | None = None, hint: str | None = None
    ) -> None:
        super().__init__(message, hint=hint)
        self.log_dir = log_dir


class SimNotRunning(KfdeployError):
    """An operation needs a running simulated cluster and there is none in the state directory."""

    exit_code = 3

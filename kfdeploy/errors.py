"""The one error tree of kfdeploy.

Every failure kfdeploy expects is a `KfdeployError`; the CLI prints its message on one line and
exits with its `exit_code`. Anything else is a bug: the CLI writes its traceback to the log file
and prints where that file is. Library exceptions (kubernetes, openstacksdk, subprocess) are
wrapped with ``raise ... from exc`` at the adapter that meets them, so the rest of kfdeploy never
needs to know which library failed, and the original stays attached for the log.

Exit codes (documented in the README):
  0 success, 1 an operation failed, 2 bad input (environment, overlay, flags), 3 a cluster or
  cloud refused or timed out, 4 a required tool is missing or too old, 130 interrupted.
"""

from __future__ import annotations


class KfdeployError(Exception):
    """Base of every error kfdeploy expects and explains."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class ConfigError(KfdeployError):
    """Bad input: an environment file, an overlay, a pin or a flag. Nothing was changed."""

    exit_code = 2

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        key: str | None = None,
        line: int | None = None,
        hint: str | None = None,
    ) -> None:
        self.file = file
        self.key = key
        self.line = line
        self.detail = message
        where = ""
        if file:
            where = file + (f":{line}" if line else "")
        if key:
            where = f"{where}: {key}" if where else key
        super().__init__(f"{where}: {message}" if where else message, hint=hint)


class ValidationFailed(KfdeployError):
    """Rendered objects broke a rule (see kfdeploy.render.validate); the findings are attached."""

    exit_code = 2

    def __init__(self, message: str, findings: list[object]) -> None:
        super().__init__(message)
        self.findings = findings


class ToolError(KfdeployError):
    """An external program (kubectl, kustomize, go, git) is missing, too old or failed."""

    exit_code = 4

    def __init__(
        self,
        message: str,
        *,
        command: list[str] | None = None,
        returncode: int | None = None,
        stderr: str = "",
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.command = command or []
        self.returncode = returncode
        self.stderr = stderr


class RenderError(ToolError):
    """kustomize could not build a component; carries its stderr."""

    exit_code = 1


class ManifestsError(KfdeployError):
    """A Kubeflow release could not be found, fetched or verified."""

    exit_code = 1


class ClusterError(KfdeployError):
    """The Kubernetes API refused a request or could not be reached."""

    exit_code = 3

    def __init__(self, message: str, *, status: int | None = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.status = status


class CloudError(KfdeployError):
    """The cloud (OpenStack Magnum, Keystone) refused a request or failed an operation."""

    exit_code = 3

    def __init__(self, message: str, *, status: int | None = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.status = status


class WaitTimeout(KfdeployError):
    """Something did not become ready in time; the message says what and why."""

    exit_code = 3


class GuardError(KfdeployError):
    """A safety check refused to go on (wrong cluster, confirmation not given)."""

    exit_code = 2

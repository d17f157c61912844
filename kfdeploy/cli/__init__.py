"""The `kfdeploy` command: the one place that presents errors and sets up logging.

Command groups live in their own modules and import the heavy libraries (kubernetes,
openstacksdk) inside their functions, so `kfdeploy render` does not pay for importing them.
Expected failures (`KfdeployError`) print one red line and exit with their code; anything else
writes its traceback to the log file and prints where that file is.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from datetime import UTC, datetime
from logging.handlers import RotatingFileHandler
from pathlib import Path
from typing import Annotated

import typer

from kfdeploy import __version__
from kfdeploy.cli import render as render_cmds
from kfdeploy.errors import KfdeployError
from kfdeploy.logs import SecretRedactor, log_dir

app = typer.Typer(
    name="kfdeploy",
    help=(
        "Deploy and keep the Kubeflow ML platform: render pinned upstream manifests with site "
        "overlays, provision Magnum clusters, apply server-side with ordering and pruning, and "
        "prove it works with smoke checks."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,  # tracebacks belong in the log file, not on the screen
    context_settings={"help_option_names": ["-h", "--help"]},
)

render_cmds.register(app)


def _add_groups() -> None:
    # Each group is optional while kfdeploy grows: a group whose module is absent is not offered.
    import importlib

    for module, name in (("sim", "sim"), ("cluster", "cluster"), ("tools", "tools")):
        try:
            mod = importlib.import_module(f"kfdeploy.cli.{module}")
        except ModuleNotFoundError as exc:
            if exc.name != f"kfdeploy.cli.{module}":
                raise
            continue
        app.add_typer(mod.app, name=name)
    for module in ("apply", "up", "smoke"):
        try:
            mod = importlib.import_module(f"kfdeploy.cli.{module}")
        except ModuleNotFoundError as exc:
            if exc.name != f"kfdeploy.cli.{module}":
                raise
            continue
        mod.register(app)


_add_groups()


def _version(value: bool) -> None:
    if value:
        typer.echo(f"kfdeploy {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Log debug detail to stderr too.")
    ] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    if verbose:
        handler = logging.StreamHandler(sys.stderr)
        handler.setLevel(logging.DEBUG)
        handler.addFilter(SecretRedactor())
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        logging.getLogger().addHandler(handler)


def _setup_file_log() -> Path | None:
    """Every run logs at debug level to the log file (secrets redacted)."""
    try:
        d = log_dir()
        d.mkdir(parents=True, exist_ok=True)
        path = d / "kfdeploy.log"
        root = logging.getLogger()
        if any(getattr(h, "baseFilename", None) == str(path) for h in root.handlers):
            return path  # main() called again in the same process (tests)
        handler = RotatingFileHandler(path, maxBytes=5_000_000, backupCount=3, encoding="utf-8")
        handler.setLevel(logging.DEBUG)
        handler.addFilter(SecretRedactor())
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s")
        )
        root.setLevel(logging.DEBUG)
        root.addHandler(handler)
        for noisy in (
            "urllib3",
            "keystoneauth",
            "stevedore",
            "openstack.config",
            "kubernetes.client.rest",
        ):
            logging.getLogger(noisy).setLevel(logging.INFO)
        return path
    except OSError:
        return None


def main() -> None:
    """Console-script entry point."""
    log_file = _setup_file_log()
    logging.getLogger("kfdeploy").debug("argv: %s", sys.argv)
    try:
        # Standalone mode: typer reports usage errors itself (exit 2) and turns Ctrl-C into an
        # abort; what reaches us is kfdeploy's own errors and genuine crashes.
        app()
    except KfdeployError as exc:
        logging.getLogger("kfdeploy").debug("error", exc_info=True)
        _print_error(exc.message, exc.hint)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        _print_error("interrupted", None)
        sys.exit(130)
    except Exception as exc:  # the one place unexpected errors are presented
        crash = _write_crash(exc, log_file)
        _print_error(
            f"unexpected error ({type(exc).__name__}); this is a bug in kfdeploy. Details: {crash}",
            None,
        )
        sys.exit(1)


def _print_error(message: str, hint: str | None) -> None:
    from rich.console import Console
    from rich.markup import escape

    console = Console(stderr=True, highlight=False, soft_wrap=True)
    console.print(f"[bold red]error:[/] {escape(message)}")
    if hint:
        console.print(f"[dim]hint: {escape(hint)}[/]")


def _write_crash(exc: BaseException, log_file: Path | None) -> Path:
    del log_file  # the crash gets a file of its own; the run log points at it
    d = log_dir()
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"crash-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}-{os.getpid()}.log"
    text = "".join(traceback.format_exception(exc))
    path.write_text(
        SecretRedactor.redact(f"kfdeploy {__version__}\nargv: {sys.argv}\n\n{text}"),
        encoding="utf-8",
    )
    logging.getLogger("kfdeploy").error("unexpected error, traceback in %s", path)
    return path

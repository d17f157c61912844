"""`kfdeploy envs | render | validate | images | schema`: everything that needs no cluster."""

from __future__ import annotations

import json
import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from kfdeploy.errors import ValidationFailed


class Output(StrEnum):
    text = "text"
    json = "json"


EnvArg = Annotated[
    str,
    typer.Argument(help="Environment name (see `kfdeploy envs`) or path of an environment file."),
]
ManifestsOpt = Annotated[
    Path | None,
    typer.Option(
        "--manifests",
        envvar="KFDEPLOY_MANIFESTS",
        help="Folder with one subfolder per Kubeflow release (e.g. ../shared/kubeflow-manifests). "
        "Default: the cache, else download the pinned revision.",
        file_okay=False,
    ),
]
OutputOpt = Annotated[
    Output, typer.Option("--output", "-o", help="text for people, json for machines.")
]


def _console() -> Any:
    from rich.console import Console

    return Console(highlight=False)


def envs(output: OutputOpt = Output.text) -> None:
    """List the environments (environments/*.yaml)."""
    from kfdeploy.config.load import list_environments, load_environment
    from kfdeploy.errors import ConfigError

    rows: list[dict[str, Any]] = []
    for path in list_environments():
        try:
            e = load_environment(str(path)).env
            rows.append(
                {
                    "name": e.name,
                    "release": e.kubeflow.release,
                    "provider": e.cluster.provider,
                    "overlays": e.overlays.enabled(),
                    "description": e.description,
                    "file": str(path),
                }
            )
        except ConfigError as exc:
            rows.append({"name": path.stem, "error": str(exc), "file": str(path)})
    if output == Output.json:
        typer.echo(json.dumps(rows, indent=2))
        return
    from rich.table import Table

    table = Table("environment", "release", "provider", "overlays", "description")
    for r in rows:
        if "error" in r:
            table.add_row(r["name"], "", "", "", f"[red]{r['error']}[/]")
        else:
            table.add_row(
                r["name"], r["release"], r["provider"], ", ".join(r["overlays"]), r["description"]
            )
    _console().print(table)


def render(
    env: EnvArg,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Write one YAML file per component and index.json here."),
    ] = None,
    manifests: ManifestsOpt = None,
    no_cache: Annotated[
        bool, typer.Option("--no-cache", help="Render even if the cache has this result.")
    ] = False,
    output: OutputOpt = Output.text,
) -> None:
    """Render ENV's platform with kustomize (cached; validated)."""
    from kfdeploy.config.load import errors_in, load_environment
    from kfdeploy.render.engine import render as do_render
    from kfdeploy.render.engine import write_out

    started = time.monotonic()
    loaded = load_environment(env)
    with errors_in(loaded):
        result = do_render(loaded.env, manifests_dir=manifests, use_cache=not no_cache)
    written = write_out(result, out) if out else []
    errors = [f for f in result.findings if f["severity"] == "error"]
    summary = {
        "environment": loaded.env.name,
        "release": result.release.pin.release,
        "source": result.release.origin,
        "cache": "hit" if result.cache_hit else "miss",
        "seconds": round(time.monotonic() - started, 3),
        "objects": sum(result.counts.values()),
        "components": result.counts,
        "findings": result.findings,
        "out": str(out) if out else None,
        "files": [str(p) for p in written],
    }
    if output == Output.json:
        typer.echo(json.dumps(summary, indent=2))
    else:
        _print_summary(summary)
    if not errors:
        _remember(env, manifests, loaded.files, result, summary)
    if errors:
        raise ValidationFailed(
            f"{len(errors)} validation error(s) in {loaded.env.name}; first: {_finding_line(errors[0])}",
            errors,
        )


def _remember(
    env_arg: str, manifests: Path | None, env_files: tuple[Path, ...], result: Any, summary: Any
) -> None:
    """Leave the memo a warm `kfdeploy render` with these arguments answers from."""
    from kfdeploy.render import memo, overlays
    from kfdeploy.render.release import default_pins_dir

    kz = result.kustomize
    if kz is None:
        return
    depends_on = [
        *env_files,
        result.release.root.resolve(),
        default_pins_dir(),
        overlays.overlays_dir(),
        *(Path(p) for p in (kz.build_cmd[0], kz.kubectl) if p),
    ]
    kept = {k: v for k, v in summary.items() if k not in ("cache", "seconds", "out", "files")}
    memo.record(
        memo.memo_key(env_arg, str(manifests) if manifests else None),
        depends_on,
        kept,
        result.cache_path,
    )


def validate(env: EnvArg, manifests: ManifestsOpt = None, output: OutputOpt = Output.text) -> None:
    """Check ENV's file and its rendered platform against kfdeploy's rules (exit 2 on errors)."""
    from kfdeploy.config.load import errors_in, load_environment
    from kfdeploy.render.engine import render as do_render

    loaded = load_environment(env)
    with errors_in(loaded):
        result = do_render(loaded.env, manifests_dir=manifests)
    errors = [f for f in result.findings if f["severity"] == "error"]
    if output == Output.json:
        typer.echo(
            json.dumps(
                {"environment": loaded.env.name, "valid": not errors, "findings": result.findings},
                indent=2,
            )
        )
    else:
        console = _console()
        for f in result.findings:
            colour = {"error": "red", "warning": "yellow"}.get(f["severity"], "dim")
            console.print(f"[{colour}]{_finding_line(f)}[/]")
        console.print(
            f"{loaded.env.name}: {sum(result.counts.values())} objects, "
            f"{len(errors)} error(s), {len(result.findings) - len(errors)} other finding(s)"
        )
    if errors:
        raise ValidationFailed(
            f"{loaded.env.name} is not valid: {_finding_line(errors[0])}", errors
        )


def images(env: EnvArg, manifests: ManifestsOpt = None, output: OutputOpt = Output.text) -> None:
    """List every image ENV's platform pulls (after the registry mirror), for mirroring."""
    from kfdeploy.config.load import errors_in, load_environment
    from kfdeploy.render.engine import render as do_render
    from kfdeploy.render.images import collect_images

    loaded = load_environment(env)
    with errors_in(loaded):
        result = do_render(loaded.env, manifests_dir=manifests)
    refs = collect_images(result.objects)
    if output == Output.json:
        typer.echo(json.dumps([r.to_dict() for r in refs], indent=2))
    else:
        for r in refs:
            typer.echo(r.image)


def schema() -> None:
    """Print the JSON Schema of environment files (for editors)."""
    from kfdeploy.config.schema import environment_schema

    typer.echo(json.dumps(environment_schema(), indent=2))


def _finding_line(f: dict[str, str]) -> str:
    from kfdeploy.render.summary import finding_line

    return finding_line(f)


def _print_summary(s: dict[str, Any]) -> None:
    from kfdeploy.render.summary import print_summary

    print_summary(s)


def register(app: typer.Typer) -> None:
    app.command("envs")(envs)
    app.command("render")(render)
    app.command("validate")(validate)
    app.command("images")(images)
    app.command("schema")(schema)

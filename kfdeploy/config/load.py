"""Load environment files: YAML with line numbers, `extends:`, and one-line errors.

Errors name the file (and line), the dotted key and what was expected, because the person
reading them is fixing a YAML file, not debugging Python.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from kfdeploy.config.model import NAME_RE, Environment
from kfdeploy.errors import ConfigError

Position = tuple[str, int]  # (file, line)


@dataclass(frozen=True)
class LoadedEnvironment:
    env: Environment
    path: Path
    files: tuple[Path, ...]  # the file and every base it extends, most derived first


@contextmanager
def errors_in(loaded: LoadedEnvironment) -> Iterator[None]:
    """Errors about the environment found later (while rendering, resolving secrets) name its file."""
    try:
        yield
    except ConfigError as exc:
        if exc.file is not None:
            raise
        raise ConfigError(exc.detail, file=str(loaded.path), key=exc.key, hint=exc.hint) from exc


def default_environments_dir() -> Path:
    """`KFDEPLOY_ENVIRONMENTS`, else `environments/` of the checkout kfdeploy runs from."""
    if env_dir := os.environ.get("KFDEPLOY_ENVIRONMENTS"):
        return Path(env_dir)
    return Path(__file__).resolve().parents[2] / "environments"


def list_environments(env_dir: Path | None = None) -> list[Path]:
    """Environment files; names starting with `_` are bases for `extends:` only."""
    env_dir = env_dir or default_environments_dir()
    return sorted(p for p in env_dir.glob("*.yaml") if not p.name.startswith("_"))


def resolve_environment(name_or_path: str, env_dir: Path | None = None) -> Path:
    """An environment's name (`cern-prod`) or the path of an environment file."""
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") or os.sep in name_or_path:
        if not candidate.is_file():
            raise ConfigError("no such environment file", file=name_or_path)
        return candidate
    env_dir = env_dir or default_environments_dir()
    path = env_dir / f"{name_or_path}.yaml"
    if not path.is_file():
        known = ", ".join(p.stem for p in list_environments(env_dir)) or "none"
        raise ConfigError(
            f"unknown environment {name_or_path!r}; expected one of: {known} (or a file path)"
        )
    return path


# ---- YAML with positions ---------------------------------------------------------------------


class _PositionLoader(yaml.SafeLoader):
    """SafeLoader that remembers the line of every mapping key and sequence item."""


def _load_with_positions(path: Path) -> tuple[Any, dict[tuple[str | int, ...], int]]:
    text = _read(path)
    try:
        node = yaml.compose(text, Loader=_PositionLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"invalid YAML: {problem}", file=str(path), line=line) from exc
    positions: dict[tuple[str | int, ...], int] = {}
    if node is None:
        return None, positions

    def walk(n: yaml.Node, at: tuple[str | int, ...]) -> None:
        positions.setdefault(at, n.start_mark.line + 1)
        if isinstance(n, yaml.MappingNode):
            for k, v in n.value:
                key = k.value if isinstance(k, yaml.ScalarNode) else str(k.start_mark)
                positions[(*at, key)] = k.start_mark.line + 1
                walk(v, (*at, key))
        elif isinstance(n, yaml.SequenceNode):
            for i, item in enumerate(n.value):
                walk(item, (*at, i))

    walk(node, ())
    try:
        data = yaml.load(text, Loader=_PositionLoader)
    except yaml.YAMLError as exc:  # e.g. duplicate anchors: compose passed, construct failed
        raise ConfigError(f"invalid YAML: {exc}", file=str(path)) from exc
    return data, positions


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError("file not found", file=str(path)) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read: {exc}", file=str(path)) from exc


# ---- extends -------------------------------------------------------------------------------------


def _merge(base: Any, override: Any) -> Any:
    """Mappings merge key by key; everything else (lists too) is replaced by the override."""
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for k, v in override.items():
            merged[k] = _merge(base[k], v) if k in base else v
        return merged
    return override


def _load_chain(
    path: Path, seen: tuple[Path, ...]
) -> tuple[dict[str, Any], dict[tuple[str | int, ...], Position], tuple[Path, ...]]:
    data, lines = _load_with_positions(path)
    if data is None:
        raise ConfigError(
            "empty file; expected a mapping with kubeflow: and cluster:", file=str(path)
        )
    if not isinstance(data, dict):
        raise ConfigError("expected a mapping at the top level", file=str(path), line=1)
    positions: dict[tuple[str | int, ...], Position] = {k: (str(path), v) for k, v in lines.items()}
    files: tuple[Path, ...] = (path,)
    parent = data.pop("extends", None)
    if parent is None:
        return data, positions, files
    if not isinstance(parent, str):
        raise ConfigError(
            "expected the name or relative path of a base environment file",
            file=str(path),
            key="extends",
            line=lines.get(("extends",)),
        )
    base_path = (
        (path.parent / parent)
        if parent.endswith((".yaml", ".yml"))
        else path.parent / f"{parent}.yaml"
    )
    base_path = base_path.resolve()
    if base_path in seen or base_path == path.resolve():
        raise ConfigError(
            f"extends {parent!r} forms a cycle",
            file=str(path),
            key="extends",
            line=lines.get(("extends",)),
        )
    if not base_path.is_file():
        raise ConfigError(
            f"base environment {parent!r} not found (looked for {base_path.name} beside this file)",
            file=str(path),
            key="extends",
            line=lines.get(("extends",)),
        )
    base, base_positions, base_files = _load_chain(base_path, (*seen, path.resolve()))
    merged = _merge(base, data)
    # Positions: a key set in the derived file points there, otherwise at the base that set it.
    return merged, {**base_positions, **positions}, files + base_files


# ---- the entry point ---------------------------------------------------------------------------


def load_environment(name_or_path: str, env_dir: Path | None = None) -> LoadedEnvironment:
    path = resolve_environment(name_or_path, env_dir)
    data, positions, files = _load_chain(path, ())
    data.setdefault("name", path.stem)
    try:
        env = Environment.model_validate(data)
    except ValidationError as exc:
        raise _config_error(exc, path, positions) from None
    _check_against_pin(env, path, positions)
    return LoadedEnvironment(env=env, path=path, files=files)


def _check_against_pin(
    env: Environment, path: Path, positions: dict[tuple[str | int, ...], Position]
) -> None:
    """The release must be pinned and the components must be the release's (caught at load time,
    so the error points into the environment file rather than surfacing mid-render)."""
    from kfdeploy.render.release import load_pin  # the pin is a small YAML file; no render here

    def where(*key: str | int) -> dict[str, Any]:
        for depth in range(len(key), -1, -1):
            if key[:depth] in positions:
                f, line = positions[key[:depth]]
                return {"file": f, "line": line}
        return {"file": str(path)}

    try:
        pin = load_pin(env.kubeflow.release)
    except ConfigError as exc:
        if exc.key != "kubeflow.release":
            raise
        raise ConfigError(
            exc.message, key="kubeflow.release", **where("kubeflow", "release")
        ) from None
    names = [c.name for c in pin.components]
    wanted = [] if env.kubeflow.components == "all" else env.kubeflow.components
    for field, values in (("components", wanted), ("exclude", env.kubeflow.exclude)):
        for i, comp in enumerate(values):
            if comp not in names:
                raise ConfigError(
                    f"unknown component {comp!r} in release {pin.release}; expected one of {', '.join(names)}",
                    key=f"kubeflow.{field}",
                    **where("kubeflow", field, i),
                )


def _config_error(
    exc: ValidationError, path: Path, positions: dict[tuple[str | int, ...], Position]
) -> ConfigError:
    """The first validation error as one line: file:line: key: what was expected."""
    # A misspelled key usually explains the "missing" error beside it, so it is reported first.
    errs = sorted(exc.errors(), key=lambda e: 0 if e["type"] == "extra_forbidden" else 1)
    err = errs[0]
    loc = tuple(
        p
        for p in err["loc"]
        if not (isinstance(p, str) and p.startswith(("function-", "str", "list[")))
    )
    # pydantic adds the union member name (e.g. 'literal['all']') to locations of union fields
    loc = tuple(p for p in loc if not (isinstance(p, str) and "[" in p))
    file, line = str(path), None
    for depth in range(len(loc), -1, -1):
        if loc[:depth] in positions:
            file, line = positions[loc[:depth]]
            break
    key = ".".join(str(p) for p in loc) or "(top level)"
    msg = str(err["msg"])
    kind = err["type"]
    if kind == "extra_forbidden":
        msg = "unknown key; check its spelling (`kfdeploy schema` lists every key)"
    elif kind == "missing":
        msg = "required key is missing"
    elif kind == "string_pattern_mismatch" and err.get("ctx", {}).get("pattern") == NAME_RE:
        msg = f"expected a name of lowercase letters, digits and '-' (got {err['input']!r})"
    elif msg.startswith("Value error, "):
        msg = msg.removeprefix("Value error, ")
    else:
        msg = (
            f"expected {msg[0].lower()}{msg[1:]}" if not msg.lower().startswith("expected") else msg
        )
        if "input" in err and kind not in ("missing",):
            shown = repr(err["input"])
            if len(shown) <= 60:
                msg = f"{msg} (got {shown})"
    return ConfigError(msg, file=file, key=key, line=line)

"""Secrets: upstream's default credentials out of the render, real values in only at apply time.

Upstream ships working credentials in its manifests (Dex/oauth2-proxy OIDC client secret,
oauth2-proxy cookie secret, KFP object-store keys, KFP MySQL's empty password, Katib's MySQL
root password). A rendered platform is a file people copy, diff and attach to tickets, so real
values must never be in it. Render therefore replaces each default that the environment names in
`secrets:` with a placeholder string

    kfdeploy-secret:<name>            e.g. kfdeploy-secret:oidc-client-secret

in the Secret's `stringData` (readable in a diff: which key comes from which source). At apply
time `resolve_secrets` swaps placeholders for values from the environment's source:

- `env: VAR`     read from the environment variable when kfdeploy applies,
- `file: PATH`   read from the file (relative paths are relative to the environment file),
- `generate: true`  created once, then kept in the cluster: the apply stage passes a
                 `GeneratedSecrets` callback that reads the value from the Secret
                 `kfdeploy-secrets` or creates and stores a new one, so re-applying never rotates
                 a password a database already uses.

Every value read is registered with `SecretRedactor` before anything else happens to it. In
`simulated` environments upstream's defaults are allowed (validation skips the rule), so only the
secrets the environment names are replaced.
"""

from __future__ import annotations

import base64
import copy
import os
import re
import secrets as _random
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from kfdeploy.config.model import Environment, SecretSource
from kfdeploy.errors import ConfigError
from kfdeploy.logs import SecretRedactor

Obj = dict[str, Any]

PLACEHOLDER_PREFIX = "kfdeploy-secret:"
PLACEHOLDER_RE = re.compile(r"kfdeploy-secret:([a-z0-9][a-z0-9-]*)")
# The Secret the apply stage keeps generated values in (namespace: kubeflow's system namespace
# is the apply stage's choice; the name is the contract).
GENERATED_SECRET_NAME = "kfdeploy-secrets"


def placeholder(name: str) -> str:
    return f"{PLACEHOLDER_PREFIX}{name}"


@dataclass(frozen=True)
class Target:
    """One upstream credential: a key of a Secret, and the environment secret that replaces it."""

    component: str
    name_prefix: str  # generator hash suffixes (oauth2-proxy-h675gf55ht) vary by release
    key: str
    secret: str
    namespace: str | None = None

    def matches(self, component: str, o: Obj) -> bool:
        meta = o.get("metadata", {})
        name = str(meta.get("name", ""))
        return (
            o.get("kind") == "Secret"
            and component == self.component
            and (name == self.name_prefix or name.startswith(self.name_prefix + "-"))
            and (self.namespace is None or meta.get("namespace") == self.namespace)
        )


TARGETS: tuple[Target, ...] = (
    Target("oauth2-proxy", "oauth2-proxy", "client-secret", "oidc-client-secret", "oauth2-proxy"),
    Target(
        "oauth2-proxy",
        "oauth2-proxy",
        "cookie-secret",
        "oauth2-proxy-cookie-secret",
        "oauth2-proxy",
    ),
    Target("dex", "dex-oidc-client", "OIDC_CLIENT_SECRET", "oidc-client-secret", "auth"),
    # KFP's object store (MinIO in v1.11.0, SeaweedFS in 26.03) reads the same Secret.
    Target("pipelines", "mlpipeline-minio-artifact", "accesskey", "kfp-object-store-access-key"),
    Target("pipelines", "mlpipeline-minio-artifact", "secretkey", "kfp-object-store-secret-key"),
    Target("pipelines", "mysql-secret", "password", "kfp-db-password"),
    Target("katib", "katib-mysql-secrets", "MYSQL_ROOT_PASSWORD", "katib-db-password"),
)


def placeholder_secrets(env: Environment, component: str, objs: list[Obj]) -> list[Obj]:
    """Render-time: replace upstream defaults with placeholders for every secret env names."""
    named = set(env.secrets)
    if not named:
        return objs
    for o in objs:
        for t in TARGETS:
            if t.secret in named and t.matches(component, o):
                _set_placeholder(o, t.key, placeholder(t.secret))
    if "kfp-db-password" in named and component == "pipelines":
        for o in objs:
            _kfp_mysql_root_password(o)
    if "katib-db-password" in named and component == "katib":
        for o in objs:
            if o.get("kind") == "Deployment" and o.get("metadata", {}).get("name") == "katib-mysql":
                _drop_env(o, "MYSQL_ALLOW_EMPTY_PASSWORD")
    return objs


def _set_placeholder(o: Obj, key: str, value: str) -> None:
    data = o.get("data") or {}
    string_data = o.get("stringData") or {}
    if key not in data and key not in string_data:
        return
    data.pop(key, None)
    if not data:
        o.pop("data", None)
    string_data[key] = value
    o["stringData"] = string_data


def _kfp_mysql_root_password(o: Obj) -> None:
    """Upstream's KFP MySQL runs with an empty root password (MYSQL_ALLOW_EMPTY_PASSWORD) and
    KFP logs in with mysql-secret's empty password. With a real password, MySQL must get it too.
    MySQL applies it only when it initialises its data directory: an existing volume keeps the
    old (empty) password until changed by hand."""
    if o.get("kind") != "Deployment" or o.get("metadata", {}).get("name") != "mysql":
        return
    _drop_env(o, "MYSQL_ALLOW_EMPTY_PASSWORD")
    for c in o["spec"]["template"]["spec"].get("containers") or []:
        env = c.setdefault("env", [])
        if not any(e.get("name") == "MYSQL_ROOT_PASSWORD" for e in env):
            env.append(
                {
                    "name": "MYSQL_ROOT_PASSWORD",
                    "valueFrom": {"secretKeyRef": {"name": "mysql-secret", "key": "password"}},
                }
            )


def _drop_env(o: Obj, name: str) -> None:
    for c in o.get("spec", {}).get("template", {}).get("spec", {}).get("containers") or []:
        if c.get("env"):
            c["env"] = [e for e in c["env"] if e.get("name") != name]


# ---- apply time ----------------------------------------------------------------------------------


class GeneratedSecrets(Protocol):
    """The apply stage's store for `generate: true` secrets (the cluster Secret kfdeploy-secrets).

    Return the value stored under `name`; if there is none, create one with `generate_value(length)`,
    store it, and return it. Called once per secret name per apply.
    """

    def __call__(self, name: str, length: int) -> str: ...


_ALPHABET = string.ascii_letters + string.digits


def generate_value(length: int) -> str:
    """A random value of exactly `length` characters, safe in URLs, YAML, shells and MySQL.

    Exact length matters: oauth2-proxy's cookie secret must be 16, 24 or 32 bytes.
    """
    return "".join(_random.choice(_ALPHABET) for _ in range(length))


class MemoryGeneratedSecrets:
    """A `GeneratedSecrets` backed by a dict (tests; the apply stage wraps the cluster Secret)."""

    def __init__(self, values: dict[str, str] | None = None) -> None:
        self.values = dict(values or {})
        self.created: list[str] = []

    def __call__(self, name: str, length: int) -> str:
        if name not in self.values:
            self.values[name] = generate_value(length)
            self.created.append(name)
        return self.values[name]


def read_source(
    name: str,
    source: SecretSource,
    generated: GeneratedSecrets | None,
    *,
    env_file: str | None = None,
    environ: Callable[[str], str | None] = os.environ.get,
) -> str:
    """One secret's value from its source; a missing source is a ConfigError naming the key."""
    if source.env:
        value = environ(source.env)
        if value is None or value == "":
            raise ConfigError(
                f"environment variable {source.env} is not set; expected the value of secret {name} "
                f"(export {source.env}=... before applying)",
                file=env_file,
                key=f"secrets.{name}.env",
            )
    elif source.file:
        path = Path(source.file).expanduser()
        if not path.is_absolute() and env_file:
            path = Path(env_file).resolve().parent / path
        try:
            value = path.read_text(encoding="utf-8")
        except FileNotFoundError as exc:
            raise ConfigError(
                f"file {path} not found; expected a file holding the value of secret {name}",
                file=env_file,
                key=f"secrets.{name}.file",
            ) from exc
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(
                f"cannot read {path}: {exc.__class__.__name__}; expected a readable UTF-8 file "
                f"holding the value of secret {name}",
                file=env_file,
                key=f"secrets.{name}.file",
            ) from exc
        value = value[:-1] if value.endswith("\n") else value
        value = value[:-1] if value.endswith("\r") else value
        if not value:
            raise ConfigError(
                f"file {path} is empty; expected the value of secret {name}",
                file=env_file,
                key=f"secrets.{name}.file",
            )
    else:
        if generated is None:
            raise ConfigError(
                f"secret {name} is generated in the cluster, but no cluster store was given",
                file=env_file,
                key=f"secrets.{name}.generate",
            )
        value = generated(name, source.length)
    SecretRedactor.register(value)
    _check(name, value, env_file, source)
    return value


def _check(name: str, value: str, env_file: str | None, source: SecretSource) -> None:
    if name == "oauth2-proxy-cookie-secret" and len(value.encode()) not in (16, 24, 32):
        try:
            raw = len(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))
        except ValueError:
            raw = 0
        if raw not in (16, 24, 32):
            which = "env" if source.env else "file" if source.file else "generate"
            raise ConfigError(
                f"oauth2-proxy needs a cookie secret of 16, 24 or 32 bytes (or their base64); got "
                f"{len(value.encode())} bytes",
                file=env_file,
                key=f"secrets.{name}.{which}",
            )


def resolve_secrets(
    objects: Sequence[Obj],
    env: Environment,
    generated_lookup: GeneratedSecrets | None,
    *,
    env_file: str | None = None,
) -> list[Obj]:
    """Apply-time: copies of `objects` with every `kfdeploy-secret:<name>` placeholder replaced
    by the value from the environment's source, moved into the Secret's base64 `data` (so
    server-side apply owns one field, not a write-only stringData). Objects without placeholders
    are returned as they are. Never log the result.
    """
    values: dict[str, str] = {}

    def value_of(name: str) -> str:
        if name not in values:
            source = env.secrets.get(name)
            if source is None:
                raise ConfigError(
                    f"the render holds a placeholder for secret {name}, but the environment names no "
                    f"source for it; expected secrets.{name} with env, file or generate",
                    file=env_file,
                    key=f"secrets.{name}",
                )
            values[name] = read_source(name, source, generated_lookup, env_file=env_file)
        return values[name]

    out: list[Obj] = []
    for o in objects:
        if o.get("kind") != "Secret" or not _has_placeholder(o):
            out.append(o)
            continue
        o = copy.deepcopy(o)
        string_data: dict[str, Any] = o.pop("stringData", None) or {}
        data: dict[str, Any] = o.setdefault("data", {})
        for k, v in string_data.items():
            text = PLACEHOLDER_RE.sub(lambda m: value_of(m.group(1)), str(v))
            data[k] = base64.b64encode(text.encode()).decode()
        for k, v in list(data.items()):
            try:
                decoded = base64.b64decode(v).decode()
            except (ValueError, UnicodeDecodeError):
                continue
            if PLACEHOLDER_RE.search(decoded):
                text = PLACEHOLDER_RE.sub(lambda m: value_of(m.group(1)), decoded)
                data[k] = base64.b64encode(text.encode()).decode()
        out.append(o)
    return out


def _has_placeholder(o: Obj) -> bool:
    for v in (o.get("stringData") or {}).values():
        if PLACEHOLDER_PREFIX in str(v):
            return True
    for v in (o.get("data") or {}).values():
        try:
            if PLACEHOLDER_PREFIX in base64.b64decode(v).decode(errors="replace"):
                return True
        except ValueError:
            continue
    return False


def placeholders_in(objects: Sequence[Obj]) -> set[str]:
    """Names of the secrets a render refers to (the apply stage checks sources up front)."""
    found: set[str] = set()
    for o in objects:
        if o.get("kind") != "Secret":
            continue
        for v in (o.get("stringData") or {}).values():
            found.update(PLACEHOLDER_RE.findall(str(v)))
    return found

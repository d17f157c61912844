"""Secrets: placeholders at render time, values only at apply time, never in logs."""

from __future__ import annotations

import base64
import copy
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from kfdeploy.config.model import SECRET_NAMES, Environment
from kfdeploy.errors import ConfigError
from kfdeploy.logs import SecretRedactor
from kfdeploy.render import secrets
from kfdeploy.render.objects import RenderedObject
from kfdeploy.render.secrets import (
    MemoryGeneratedSecrets,
    placeholder,
    placeholder_secrets,
    placeholders_in,
    resolve_secrets,
)
from kfdeploy.render.validate import validate


def _b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def _env(secret_sources: dict[str, Any], simulated: bool = False) -> Environment:
    return Environment.model_validate(
        {
            "name": "t",
            "simulated": simulated,
            "kubeflow": {"release": "26.03"},
            "secrets": secret_sources,
            "cluster": {"provider": "kubeconfig", "kubeconfig": "/dev/null"},
        }
    )


def _secret(
    name: str,
    ns: str,
    *,
    data: dict[str, str] | None = None,
    string_data: dict[str, str] | None = None,
) -> dict[str, Any]:
    o: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": ns},
    }
    if data is not None:
        o["data"] = data
    if string_data is not None:
        o["stringData"] = string_data
    return o


def upstream() -> dict[str, list[dict[str, Any]]]:
    """The upstream defaults as 26.03 renders them, per component."""
    return {
        "oauth2-proxy": [
            _secret(
                "oauth2-proxy-h675gf55ht",
                "oauth2-proxy",
                data={
                    "client-id": _b64("kubeflow-oidc-authservice"),
                    "client-secret": _b64("pUBnBOY80SnXgjibTYM9ZWNzY2xreNGQok"),
                    "cookie-secret": _b64("7d16fee92f8d11b8940b081b3f8b8acb"),
                },
            )
        ],
        "dex": [
            _secret(
                "dex-oidc-client",
                "auth",
                data={
                    "OIDC_CLIENT_ID": _b64("kubeflow-oidc-authservice"),
                    "OIDC_CLIENT_SECRET": _b64("pUBnBOY80SnXgjibTYM9ZWNzY2xreNGQok"),
                },
            )
        ],
        "pipelines": [
            _secret(
                "mlpipeline-minio-artifact",
                "kubeflow",
                string_data={"accesskey": "minio", "secretkey": "minio123"},
            ),
            _secret("mysql-secret", "kubeflow", string_data={"password": "", "username": "root"}),
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "mysql", "namespace": "kubeflow"},
                "spec": {
                    "template": {
                        "spec": {
                            "containers": [
                                {
                                    "name": "mysql",
                                    "image": "mysql:8.4",
                                    "env": [
                                        {"name": "MYSQL_ALLOW_EMPTY_PASSWORD", "value": "true"}
                                    ],
                                }
                            ]
                        }
                    }
                },
            },
        ],
        "katib": [
            _secret("katib-mysql-secrets", "kubeflow", data={"MYSQL_ROOT_PASSWORD": _b64("test")}),
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "katib-mysql", "namespace": "kubeflow"},
                "spec": {
                    "template": {
                        "spec": {
                            "containers": [
                                {
                                    "name": "katib-mysql",
                                    "image": "mysql:8.0",
                                    "env": [
                                        {
                                            "name": "MYSQL_ROOT_PASSWORD",
                                            "valueFrom": {
                                                "secretKeyRef": {
                                                    "name": "katib-mysql-secrets",
                                                    "key": "MYSQL_ROOT_PASSWORD",
                                                }
                                            },
                                        },
                                        {"name": "MYSQL_ALLOW_EMPTY_PASSWORD", "value": "true"},
                                    ],
                                }
                            ]
                        }
                    }
                },
            },
        ],
    }


ALL_FROM_ENV = {name: {"env": f"T_{name.upper().replace('-', '_')}"} for name in SECRET_NAMES}


def _render(env: Environment) -> list[RenderedObject]:
    out = []
    for component, objs in upstream().items():
        out += [
            RenderedObject(component, o)
            for o in placeholder_secrets(env, component, copy.deepcopy(objs))
        ]
    return out


def test_upstream_defaults_are_refused_outside_simulated() -> None:
    env = _env({})
    objs = [RenderedObject(c, o) for c, os_ in upstream().items() for o in os_]
    rules = [f for f in validate(env, objs) if f.rule == "default-credentials"]
    assert {f.object.split()[-1] for f in rules} >= {
        "oauth2-proxy/oauth2-proxy-h675gf55ht",
        "auth/dex-oidc-client",
        "kubeflow/mlpipeline-minio-artifact",
        "kubeflow/mysql-secret",
        "kubeflow/katib-mysql-secrets",
    }
    # simulated: allowed
    assert not [
        f for f in validate(_env({}, simulated=True), objs) if f.rule == "default-credentials"
    ]


def test_placeholders_replace_every_default() -> None:
    env = _env(ALL_FROM_ENV)
    rendered = _render(env)
    assert not [f for f in validate(env, rendered) if f.rule == "default-credentials"]
    text = json.dumps([r.obj for r in rendered])
    for default in (
        "pUBnBOY80SnXgjibTYM9ZWNzY2xreNGQok",
        "7d16fee92f8d11b8940b081b3f8b8acb",
        "minio123",
    ):
        assert default not in text
        assert _b64(default) not in text
    assert placeholders_in([r.obj for r in rendered]) == set(SECRET_NAMES)
    o2p = next(r.obj for r in rendered if r.name.startswith("oauth2-proxy"))
    # the client id is not a secret and stays where it was
    assert o2p["data"] == {"client-id": _b64("kubeflow-oidc-authservice")}
    assert o2p["stringData"] == {
        "client-secret": placeholder("oidc-client-secret"),
        "cookie-secret": placeholder("oauth2-proxy-cookie-secret"),
    }


def test_kfp_mysql_gets_the_root_password_and_loses_empty_password() -> None:
    rendered = _render(_env(ALL_FROM_ENV))
    mysql = next(r.obj for r in rendered if r.kind == "Deployment" and r.name == "mysql")
    env = mysql["spec"]["template"]["spec"]["containers"][0]["env"]
    assert env == [
        {
            "name": "MYSQL_ROOT_PASSWORD",
            "valueFrom": {"secretKeyRef": {"name": "mysql-secret", "key": "password"}},
        }
    ]
    katib = next(r.obj for r in rendered if r.kind == "Deployment" and r.name == "katib-mysql")
    assert [e["name"] for e in katib["spec"]["template"]["spec"]["containers"][0]["env"]] == [
        "MYSQL_ROOT_PASSWORD"
    ]


def test_only_named_secrets_are_replaced() -> None:
    rendered = _render(_env({"katib-db-password": {"generate": True}}))
    assert placeholders_in([r.obj for r in rendered]) == {"katib-db-password"}
    mysql = next(r.obj for r in rendered if r.kind == "Deployment" and r.name == "mysql")
    assert (
        mysql["spec"]["template"]["spec"]["containers"][0]["env"][0]["name"]
        == "MYSQL_ALLOW_EMPTY_PASSWORD"
    )


def test_resolve_from_env_file_and_generate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "client-secret").write_text("file-client-secret-value\n")
    env_file = tmp_path / "envs" / "e.yaml"
    env_file.parent.mkdir()
    env = _env(
        {
            "oidc-client-secret": {"file": "../client-secret"},
            "oauth2-proxy-cookie-secret": {"generate": True, "length": 32},
            "kfp-object-store-access-key": {"env": "T_ACCESS"},
            "kfp-object-store-secret-key": {"env": "T_SECRET"},
            "kfp-db-password": {"generate": True},
            "katib-db-password": {"env": "T_KATIB"},
        }
    )
    monkeypatch.setenv("T_ACCESS", "access-value-1")
    monkeypatch.setenv("T_SECRET", "secret-value-22")
    monkeypatch.setenv("T_KATIB", "katib-value-333")
    store = MemoryGeneratedSecrets({"kfp-db-password": "kept-in-cluster-db"})
    rendered = [r.obj for r in _render(env)]
    before = copy.deepcopy(rendered)
    out = resolve_secrets(rendered, env, store, env_file=str(env_file))
    assert rendered == before, "resolve must not modify the render"
    assert placeholders_in(out) == set()

    def value(name: str, key: str) -> str:
        o = next(x for x in out if x["kind"] == "Secret" and x["metadata"]["name"].startswith(name))
        assert "stringData" not in o
        return base64.b64decode(o["data"][key]).decode()

    assert value("oauth2-proxy", "client-secret") == "file-client-secret-value"
    assert value("oauth2-proxy", "client-id") == "kubeflow-oidc-authservice"
    assert value("dex-oidc-client", "OIDC_CLIENT_SECRET") == "file-client-secret-value"
    assert value("mlpipeline-minio-artifact", "accesskey") == "access-value-1"
    assert value("mlpipeline-minio-artifact", "secretkey") == "secret-value-22"
    assert value("mysql-secret", "password") == "kept-in-cluster-db"
    assert value("mysql-secret", "username") == "root"
    assert value("katib-mysql-secrets", "MYSQL_ROOT_PASSWORD") == "katib-value-333"
    cookie = value("oauth2-proxy", "cookie-secret")
    assert len(cookie) == 32 and store.created == ["oauth2-proxy-cookie-secret"]
    # generated once: a second apply reads the stored value
    again = resolve_secrets(rendered, env, store, env_file=str(env_file))
    assert again == out and store.created == ["oauth2-proxy-cookie-secret"]
    # every value is registered for redaction
    for v in ("file-client-secret-value", "access-value-1", "kept-in-cluster-db", cookie):
        assert v not in SecretRedactor.redact(f"applying {v}")


def test_resolved_values_never_reach_a_log(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("T_KATIB", "katib-root-pw-xyz")
    env = _env({"katib-db-password": {"env": "T_KATIB"}})
    out = resolve_secrets([r.obj for r in _render(env)], env, None)
    logger = logging.getLogger("kfdeploy.test")
    logger.addFilter(SecretRedactor())
    with caplog.at_level(logging.INFO, logger="kfdeploy.test"):
        logger.info("applied %s", json.dumps(out) + " katib-root-pw-xyz")
    assert "katib-root-pw-xyz" not in caplog.text


def test_missing_env_var_names_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("T_MISSING", raising=False)
    env = _env({"katib-db-password": {"env": "T_MISSING"}})
    with pytest.raises(ConfigError) as exc:
        resolve_secrets([r.obj for r in _render(env)], env, None, env_file="environments/e.yaml")
    msg = str(exc.value)
    assert msg.startswith("environments/e.yaml: secrets.katib-db-password.env: ")
    assert "T_MISSING is not set" in msg and "\n" not in msg
    assert exc.value.exit_code == 2


def test_missing_file_names_the_key(tmp_path: Path) -> None:
    env = _env({"kfp-db-password": {"file": str(tmp_path / "nope")}})
    with pytest.raises(ConfigError, match=r"secrets\.kfp-db-password\.file: file .*nope not found"):
        resolve_secrets([r.obj for r in _render(env)], env, None)


def test_empty_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("\n")
    env = _env({"kfp-db-password": {"file": str(tmp_path / "pw")}})
    with pytest.raises(ConfigError, match=r"secrets\.kfp-db-password\.file: .* is empty"):
        resolve_secrets([r.obj for r in _render(env)], env, None)


def test_generate_without_a_store_is_refused() -> None:
    env = _env({"kfp-db-password": {"generate": True}})
    with pytest.raises(ConfigError, match=r"secrets\.kfp-db-password\.generate"):
        resolve_secrets([r.obj for r in _render(env)], env, None)


def test_placeholder_without_a_source_is_refused() -> None:
    rendered = [r.obj for r in _render(_env({"kfp-db-password": {"generate": True}}))]
    with pytest.raises(ConfigError, match=r"secrets\.kfp-db-password: .*names no source"):
        resolve_secrets(rendered, _env({}), MemoryGeneratedSecrets())


@pytest.mark.parametrize("value", ["short", "x" * 33])
def test_cookie_secret_length_is_checked(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("T_COOKIE", value)
    env = _env({"oauth2-proxy-cookie-secret": {"env": "T_COOKIE"}})
    with pytest.raises(
        ConfigError, match=r"secrets\.oauth2-proxy-cookie-secret\.env: .*16, 24 or 32 bytes"
    ):
        resolve_secrets([r.obj for r in _render(env)], env, None)


def test_cookie_secret_base64_of_32_bytes_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("T_COOKIE", base64.urlsafe_b64encode(b"k" * 32).decode())
    env = _env({"oauth2-proxy-cookie-secret": {"env": "T_COOKIE"}})
    resolve_secrets([r.obj for r in _render(env)], env, None)


def test_generate_value_is_exact_length_and_random() -> None:
    a, b = secrets.generate_value(32), secrets.generate_value(32)
    assert len(a) == 32 and a != b and a.isalnum()

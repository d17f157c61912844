"""Small pure parts of the cloud layer: error text, waits, CSR, kubeconfig file, label parsing."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from kfdeploy.cloud.magnum.client import magnum_detail
from kfdeploy.cloud.magnum.kubeconfig import kubeconfig_document, make_admin_csr, write_private_yaml
from kfdeploy.cloud.magnum.waits import WaitSettings, poll_until
from kfdeploy.errors import CloudError, WaitTimeout
from kfdeploy.logs import SecretRedactor
from kfdeploy.sim.magnum.backend import parse_kubelet_options


class FakeResponse:
    def __init__(self, body: Any) -> None:
        self._body = body
        self.text = str(body)

    def json(self) -> Any:
        return self._body


def test_magnum_error_body_is_parsed() -> None:
    body = {
        "errors": [
            {
                "request_id": "",
                "code": "client",
                "status": 400,
                "title": "Bad Request",
                "detail": "Resizing gpu outside the allowed range",
                "links": [],
            }
        ]
    }
    assert magnum_detail(FakeResponse(body)) == "Resizing gpu outside the allowed range"
    keystone = {"error": {"code": 401, "title": "Unauthorized", "message": "requires auth"}}
    assert magnum_detail(FakeResponse(keystone)) == "requires auth"
    assert magnum_detail(None) is None


def test_poll_until_backs_off_and_times_out() -> None:
    sleeps: list[float] = []
    settings = WaitSettings(poll=2, poll_max=5, backoff=2)
    with pytest.raises(WaitTimeout, match="timed out after 20s waiting for thing"):
        poll_until(
            "thing",
            lambda: "CREATE_IN_PROGRESS",
            lambda _: False,
            timeout=20,
            settings=settings,
            sleep=sleeps.append,
        )
    assert sleeps[:4] == [2, 4, 5, 5]  # never more often than `poll`, capped at `poll_max`


def test_poll_until_reports_failure_and_progress() -> None:
    seen: list[str] = []
    values = iter(["CREATE_IN_PROGRESS", "CREATE_FAILED"])
    with pytest.raises(CloudError, match="boom"):
        poll_until(
            "cluster",
            lambda: next(values),
            lambda v: v == "CREATE_COMPLETE",
            timeout=60,
            settings=WaitSettings(poll=0),
            progress=seen.append,
            failed=lambda v: "boom" if v.endswith("FAILED") else None,
            sleep=lambda _: None,
        )
    assert [s.split(" (")[0] for s in seen] == [
        "cluster: CREATE_IN_PROGRESS",
        "cluster: CREATE_FAILED",
    ]


def test_admin_csr_subject_and_key_registered_as_secret() -> None:
    key_pem, csr_pem = make_admin_csr()
    csr = x509.load_pem_x509_csr(csr_pem)
    assert csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "admin"
    assert csr.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == (
        "system:masters"
    )
    assert csr.public_key().key_size == 2048  # type: ignore[union-attr]
    assert "PRIVATE KEY" not in SecretRedactor.redact(key_pem.decode())


def test_kubeconfig_is_written_owner_only(tmp_path: Path) -> None:
    doc = kubeconfig_document("c", "https://127.0.0.1:6443", "CA", "CERT", b"KEY")
    assert doc["contexts"][0]["context"] == {"cluster": "c", "user": "admin"}
    target = tmp_path / "sub" / "kubeconfig"
    target.parent.mkdir()
    target.write_text("old")
    target.chmod(0o644)
    write_private_yaml(target, doc)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert "client-key-data" in target.read_text()


def test_emulator_reads_labels_and_taints_from_kubelet_options() -> None:
    labels, taints = parse_kubelet_options(
        "--max-pods=50 --node-labels=a=1,b=2 --register-with-taints=nvidia.com/gpu=present:NoSchedule,x:NoExecute"
    )
    assert labels == {"a": "1", "b": "2"}
    assert taints == [
        {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"},
        {"key": "x", "value": "", "effect": "NoExecute"},
    ]

"""The simulated cluster's PKI: what kube-apiserver and clients rely on."""

from __future__ import annotations

import ipaddress
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from kfdeploy.errors import KfdeployError
from kfdeploy.sim.pki import ClusterPKI, make_csr


@pytest.fixture
def pki(tmp_path: Path) -> ClusterPKI:
    p = ClusterPKI(tmp_path / "pki")
    p.ensure()
    return p


def _load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_serving_certificate_covers_loopback(pki: ClusterPKI) -> None:
    cert = _load(pki.serving.cert_path)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("127.0.0.1") in san.get_values_for_type(x509.IPAddress)
    assert "localhost" in san.get_values_for_type(x509.DNSName)
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in eku
    assert cert.issuer == _load(pki.ca.cert_path).subject


def test_private_keys_are_owner_only(pki: ClusterPKI) -> None:
    for key in (pki.ca.key_path, pki.serving.key_path, pki.sa_key):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600


def test_ensure_never_replaces_material(pki: ClusterPKI) -> None:
    before = pki.ca_cert_pem, pki.serving.cert_path.read_bytes(), pki.sa_key.read_bytes()
    pki.ensure()
    assert (pki.ca_cert_pem, pki.serving.cert_path.read_bytes(), pki.sa_key.read_bytes()) == before


def test_admin_client_certificate_is_in_system_masters(pki: ClusterPKI) -> None:
    pair = pki.client("admin", "admin", ("system:masters",))
    cert = _load(pair.cert_path)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "admin"
    assert (
        cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "system:masters"
    )
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.CLIENT_AUTH in eku


def test_sign_csr_keeps_subject_and_lifetime(pki: ClusterPKI) -> None:
    _key, csr = make_csr("alice", ("team-a", "team-b"))
    cert = x509.load_pem_x509_certificate(pki.sign_csr(csr, days=10))
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "alice"
    orgs = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
    assert orgs == ["team-a", "team-b"]
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert 10 <= lifetime.days <= 11
    assert cert.issuer == _load(pki.ca.cert_path).subject


def test_sign_csr_rejects_garbage(pki: ClusterPKI) -> None:
    with pytest.raises(KfdeployError, match="not a PEM certificate signing request"):
        pki.sign_csr(b"not a csr")
    _key, csr = make_csr("bob")
    with pytest.raises(KfdeployError, match="positive"):
        pki.sign_csr(csr, days=0)

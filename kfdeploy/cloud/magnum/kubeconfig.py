"""Admin kubeconfig the way `openstack coe cluster config` builds it.

RSA-2048 key and a CSR with CN=admin, O=system:masters; Magnum signs it with the cluster CA
(`POST /v1/certificates`); the CA comes from `GET /v1/certificates/{uuid}`. The key never leaves
this process except into the kubeconfig file, which is written with mode 0600 from the start.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from kfdeploy.files import write_atomic
from kfdeploy.logs import SecretRedactor


def make_admin_csr() -> tuple[bytes, bytes]:
    """(key PEM, CSR PEM) for CN=admin, O=system:masters."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    SecretRedactor.register(key_pem.decode())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.COMMON_NAME, "admin"),
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:masters"),
                ]
            )
        )
        .sign(key, hashes.SHA256())
    )
    return key_pem, csr.public_bytes(serialization.Encoding.PEM)


def kubeconfig_document(
    cluster_name: str, server: str, ca_pem: str | None, cert_pem: str | None, key_pem: bytes | None
) -> dict[str, Any]:
    def b64(data: str | bytes) -> str:
        raw = data.encode() if isinstance(data, str) else data
        return base64.b64encode(raw).decode()

    cluster: dict[str, Any] = {"server": server}
    user: dict[str, Any] = {}
    if ca_pem:
        cluster["certificate-authority-data"] = b64(ca_pem)
    if cert_pem and key_pem:
        user = {"client-certificate-data": b64(cert_pem), "client-key-data": b64(key_pem)}
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": cluster_name, "cluster": cluster}],
        "users": [{"name": "admin", "user": user}],
        "contexts": [{"name": "default", "context": {"cluster": cluster_name, "user": "admin"}}],
        "current-context": "default",
        "preferences": {},
    }


def write_private_yaml(path: Path, document: dict[str, Any]) -> Path:
    """Write YAML readable by the owner only, never briefly world-readable."""
    return write_atomic(path.expanduser(), yaml.safe_dump(document, sort_keys=False), private=True)

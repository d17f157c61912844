"""The simulated cluster's PKI: one CA, a serving certificate, client certificates, SA keys.

One CA signs both the API server's serving certificate and every client certificate, like a Magnum
cluster whose CA (`GET /certificates/<cluster>`) both verifies the API server and signs the client
CSRs users send (`POST /certificates`). Keys are ECDSA P-256: generation is instant, which keeps a
first `sim start` fast, and every Kubernetes component accepts them (ES256 for service accounts).

Files are written once and reused, so a restart on the same state directory keeps every
credential and kubeconfig valid.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from kfdeploy.errors import KfdeployError
from kfdeploy.files import write_atomic

_CA_DAYS = 3650
_LEAF_DAYS = 3650
# Backdated so a client whose clock is a little behind still accepts fresh certificates.
_BACKDATE = dt.timedelta(hours=1)


@dataclass(frozen=True)
class KeyPair:
    cert_path: Path
    key_path: Path


def _write_private(path: Path, data: bytes) -> None:
    """Write `data` readable by the owner only, even for the instant the file exists."""
    write_atomic(path, data, private=True)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _name(common_name: str, organizations: tuple[str, ...] = ()) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attrs)


class ClusterPKI:
    """Certificates and keys of one simulated cluster, stored under `directory`."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.ca = KeyPair(directory / "ca.crt", directory / "ca.key")
        # A separate CA for the aggregation layer's front proxy: a user whose CSR the cluster CA
        # signs (any CN, as Magnum does) must not be able to pose as the front proxy and set
        # X-Remote-User headers.
        self.front_proxy_ca = KeyPair(
            directory / "front-proxy-ca.crt", directory / "front-proxy-ca.key"
        )
        self.serving = KeyPair(directory / "apiserver.crt", directory / "apiserver.key")
        self.sa_key = directory / "sa.key"
        self.sa_pub = directory / "sa.pub"

    # -- CA -----------------------------------------------------------------------------------

    def ensure(self) -> None:
        """Create whatever is missing; never replaces existing material."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self.directory.chmod(0o700)
        for ca, cn in (
            (self.ca, "kfdeploy-sim-ca"),
            (self.front_proxy_ca, "kfdeploy-sim-front-proxy-ca"),
        ):
            if not (ca.cert_path.exists() and ca.key_path.exists()):
                self._create_ca(ca, cn)
        if not (self.serving.cert_path.exists() and self.serving.key_path.exists()):
            self._create_serving()
        if not (self.sa_key.exists() and self.sa_pub.exists()):
            key = _new_key()
            _write_private(self.sa_key, _key_pem(key))
            self.sa_pub.write_bytes(
                key.public_key().public_bytes(
                    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
                )
            )

    def _create_ca(self, pair: KeyPair, common_name: str) -> None:
        key = _new_key()
        now = dt.datetime.now(dt.UTC)
        name = _name(common_name)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(now + dt.timedelta(days=_CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .sign(key, hashes.SHA256())
        )
        _write_private(pair.key_path, _key_pem(key))
        pair.cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    def _load_ca(
        self, pair: KeyPair | None = None
    ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        pair = pair or self.ca
        cert = x509.load_pem_x509_certificate(pair.cert_path.read_bytes())
        key = serialization.load_pem_private_key(pair.key_path.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise KfdeployError(f"{pair.key_path}: not an ECDSA key")
        return cert, key

    @property
    def ca_cert_pem(self) -> bytes:
        return self.ca.cert_path.read_bytes()

    # -- leaves -------------------------------------------------------------------------------

    def _sign(
        self,
        subject: x509.Name,
        public_key: ec.EllipticCurvePublicKey | object,
        *,
        server: bool,
        days: int,
        sans: list[x509.GeneralName] | None = None,
        ca: KeyPair | None = None,
    ) -> x509.Certificate:
        ca_cert, ca_key = self._load_ca(ca)
        now = dt.datetime.now(dt.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(ca_cert.subject)
            .public_key(public_key)  # type: ignore[arg-type]
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=True,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                critical=False,
            )
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return builder.sign(ca_key, hashes.SHA256())

    def _create_serving(self) -> None:
        key = _new_key()
        # 127.0.0.1 matters most: every client, inside or outside the network namespace, dials it
        # (through the forwarder TLS passes untouched). The in-cluster names and the first
        # service IP are there so in-cluster clients verifying the `kubernetes` Service also work.
        sans: list[x509.GeneralName] = [
            x509.DNSName("localhost"),
            x509.DNSName("kubernetes"),
            x509.DNSName("kubernetes.default"),
            x509.DNSName("kubernetes.default.svc"),
            x509.DNSName("kubernetes.default.svc.cluster.local"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.IPAddress(ipaddress.ip_address("::1")),
            x509.IPAddress(ipaddress.ip_address("10.96.0.1")),
        ]
        cert = self._sign(
            _name("kube-apiserver"), key.public_key(), server=True, days=_LEAF_DAYS, sans=sans
        )
        _write_private(self.serving.key_path, _key_pem(key))
        self.serving.cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    def client(
        self,
        stem: str,
        common_name: str,
        organizations: tuple[str, ...] = (),
        *,
        front_proxy: bool = False,
    ) -> KeyPair:
        """Return (creating once) a client certificate `stem.crt`/`stem.key` for a user."""
        pair = KeyPair(self.directory / f"{stem}.crt", self.directory / f"{stem}.key")
        if pair.cert_path.exists() and pair.key_path.exists():
            return pair
        key = _new_key()
        cert = self._sign(
            _name(common_name, organizations),
            key.public_key(),
            server=False,
            days=_LEAF_DAYS,
            ca=self.front_proxy_ca if front_proxy else None,
        )
        _write_private(pair.key_path, _key_pem(key))
        pair.cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return pair

    def sign_csr(self, csr_pem: bytes, days: int = 365) -> bytes:
        """Sign a client CSR with the cluster CA; subject (CN=user, O=groups) is kept as sent.

        This is what Magnum's certificate API does, so a kubeconfig built from the result
        authenticates as the CSR's CN with its O values as groups.
        """
        try:
            csr = x509.load_pem_x509_csr(csr_pem)
        except ValueError as exc:
            raise KfdeployError(f"not a PEM certificate signing request: {exc}") from exc
        if not csr.is_signature_valid:
            raise KfdeployError("certificate signing request has an invalid signature")
        if days <= 0:
            raise KfdeployError(f"certificate lifetime must be positive, got {days} days")
        cert = self._sign(csr.subject, csr.public_key(), server=False, days=days)
        return cert.public_bytes(serialization.Encoding.PEM)


def make_csr(common_name: str, organizations: tuple[str, ...] = ()) -> tuple[bytes, bytes]:
    """Return (key_pem, csr_pem) for a client; used by tests and by callers emulating users."""
    key = _new_key()
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(_name(common_name, organizations))
        .sign(key, hashes.SHA256())
    )
    return _key_pem(key), csr.public_bytes(serialization.Encoding.PEM)

"""The enclave's keys: generated in enclave memory at start, never written to disk.

- TLS: ECDSA P-256 key and a self-signed certificate (clients pin it after verifying
  evidence whose REPORT_DATA binds the digest of all three public keys);
- receipt: Ed25519, signs the receipt;
- X25519: lets parties seal data to the enclave (reserved for key release, wave 2).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, x25519
from cryptography.x509.oid import NameOID

from sealroom.protocol.enclave import EnclavePublicKeys

_RAW = serialization.Encoding.Raw
_RAW_PUB = serialization.PublicFormat.Raw


def spki_der(cert_or_key: x509.Certificate | ec.EllipticCurvePublicKey) -> bytes:
    key = cert_or_key.public_key() if isinstance(cert_or_key, x509.Certificate) else cert_or_key
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


class EnclaveKeys:
    def __init__(self, common_name: str, now: datetime | None = None) -> None:
        now = now or datetime.now(UTC)
        self.tls_key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64])])
        self.tls_cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.tls_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=30))
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(_loopback())]
                ),
                critical=False,
            )
            .sign(self.tls_key, hashes.SHA256())
        )
        self.receipt_key = ed25519.Ed25519PrivateKey.generate()
        self.x25519_key = x25519.X25519PrivateKey.generate()
        self.public = EnclavePublicKeys(
            tls_spki=spki_der(self.tls_cert),
            ed25519=self.receipt_key.public_key().public_bytes(_RAW, _RAW_PUB),
            x25519=self.x25519_key.public_key().public_bytes(_RAW, _RAW_PUB),
        )

    def tls_pem(self) -> tuple[bytes, bytes]:
        cert = self.tls_cert.public_bytes(serialization.Encoding.PEM)
        key = self.tls_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return cert, key


def _loopback() -> Any:
    import ipaddress

    return ipaddress.ip_address("127.0.0.1")

"""The enclave's keys: generated in enclave memory at start, never written to disk.

- TLS: ECDSA P-256 key and a self-signed certificate (clients pin it after verifying
  evidence whose REPORT_DATA binds the digest of all three public keys);
- receipt: Ed25519, signs the receipt;
- X25519: lets parties seal data to the enclave (reserved for key release, wave 2).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, x25519
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.x509.oid import NameOID

from sealroom.crypto.signing import keys_digest

_RAW = serialization.Encoding.Raw
_RAW_PUB = serialization.PublicFormat.Raw


def spki_der(cert_or_key: x509.Certificate | ec.EllipticCurvePublicKey) -> bytes:
    key = cert_or_key.public_key() if isinstance(cert_or_key, x509.Certificate) else cert_or_key
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@dataclass(frozen=True)
class EnclavePublicKeys:
    tls_spki: bytes
    ed25519: bytes
    x25519: bytes

    @property
    def digest(self) -> bytes:
        return keys_digest(self.tls_spki, self.ed25519, self.x25519)

    def to_json_obj(self) -> dict[str, str]:
        return {
            "tls_spki": self.tls_spki.hex(),
            "ed25519": self.ed25519.hex(),
            "x25519": self.x25519.hex(),
        }

    @staticmethod
    def from_json_obj(obj: Any) -> EnclavePublicKeys:
        from sealroom.errors import MalformedEvidenceError

        try:
            keys = EnclavePublicKeys(
                bytes.fromhex(obj["tls_spki"]),
                bytes.fromhex(obj["ed25519"]),
                bytes.fromhex(obj["x25519"]),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise MalformedEvidenceError(f"enclave public keys are malformed: {e}") from e
        if len(keys.ed25519) != 32 or len(keys.x25519) != 32:
            raise MalformedEvidenceError("enclave Ed25519/X25519 keys must be 32 bytes")
        return keys

    def ed25519_key(self) -> Ed25519PublicKey:
        return Ed25519PublicKey.from_public_bytes(self.ed25519)


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

"""The host's vTPM CA (ADR 0035): certifies the attestation key of each VM's swtpm.

A manifest is written before any VM exists, so it cannot name a VM's AK; it can name the
CA of the host that provisions them. At provisioning the host creates the AK inside the
swtpm and issues an X.509 certificate for exactly that key; the guest's evidence carries
it (attachment ``ak_cert``), and a verifier that trusts this CA's root (``--root``) gets
``ak_trust: certified``. The CA is as trustworthy as the host: without SNP/TDX the host
runs the vTPM anyway (ADR 0035, "What the vTPM is worth here"). Its key is a 0600 file.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from sealroom import paths
from sealroom.attestation.tpm.formats import load_ak
from sealroom.errors import InvalidInputError
from sealroom.files import write_private

CA_VALIDITY = dt.timedelta(days=3650)
AK_CERT_VALIDITY = dt.timedelta(days=30)


def default_dir() -> Path:
    return paths.home() / "vtpm-ca"


@dataclass(frozen=True)
class VtpmCa:
    key: ec.EllipticCurvePrivateKey
    root: x509.Certificate

    @classmethod
    def load_or_create(cls, directory: Path | None = None) -> VtpmCa:
        d = directory or default_dir()
        key_file, cert_file = d / "ca.key", d / "ca.pem"
        if key_file.exists() and cert_file.exists():
            try:
                key = serialization.load_pem_private_key(key_file.read_bytes(), None)
                root = x509.load_pem_x509_certificate(cert_file.read_bytes())
            except ValueError as e:
                raise InvalidInputError(f"{d}: unreadable vTPM CA: {e}") from e
            if not isinstance(key, ec.EllipticCurvePrivateKey):
                raise InvalidInputError(f"{key_file}: not an EC key")
            return cls(key, root)
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = ec.generate_private_key(ec.SECP256R1())
        # the key's fingerprint in the name: two hosts (or two CAs on one host) never share
        # a subject, so a chain is matched to its own root, not to a namesake
        spki = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        tag = hashlib.sha256(spki).hexdigest()[:16]
        cn = f"sealroom vTPM CA {tag} ({socket.gethostname()})"[:64]
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "sealroom"),
                x509.NameAttribute(NameOID.COMMON_NAME, cn),
            ]
        )
        now = dt.datetime.now(dt.UTC)
        root = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + CA_VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                critical=True,
            )
            .sign(key, hashes.SHA256())
        )
        pem_key = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        write_private(key_file, pem_key, overwrite=False, what="vTPM CA key")
        cert_file.write_bytes(root.public_bytes(serialization.Encoding.PEM))
        os.chmod(cert_file, 0o644)  # public: parties pass it to --root
        return cls(key, root)

    def root_pem(self) -> bytes:
        return self.root.public_bytes(serialization.Encoding.PEM)

    def certify_ak(self, ak_pub: bytes, vm_name: str) -> bytes:
        """A DER certificate for the AK (TPMT_PUBLIC) of the VM ``vm_name``."""
        ak = load_ak(ak_pub, "AK to certify")
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(
                x509.Name(
                    [
                        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "sealroom"),
                        x509.NameAttribute(NameOID.COMMON_NAME, f"vTPM AK of VM {vm_name}"[:64]),
                    ]
                )
            )
            .issuer_name(self.root.subject)
            .public_key(ak.key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + AK_CERT_VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(True, False, False, False, False, False, False, False, False),
                critical=True,
            )
            .sign(self.key, hashes.SHA256())
        )
        return cert.public_bytes(serialization.Encoding.DER)

"""A fake NVIDIA-shaped PKI and SPDM evidence signed by it (tests only).

The production parser and verifier run unchanged on these bytes: the chain has the real
shape (root -> provisioner ICA -> device leaf with tcg-dice-TcbInfo FWID), the evidence
the real SPDM 1.1 layout built with ``abi.SpdmEvidence.build``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from sealroom.attestation.evidence import EvidenceItem
from sealroom.attestation.nvidia import abi
from sealroom.attestation.nvidia.abi import OpaqueField, OpaqueFieldId

NOT_BEFORE = datetime(2024, 1, 1, tzinfo=UTC)
NOW = datetime(2026, 6, 1, tzinfo=UTC)
NONCE = bytes(range(32))
FWID = hashlib.sha384(b"fake firmware").digest()
SHA384_OID_DER = bytes.fromhex("0609608648016503040202")


def _der(tag: int, body: bytes) -> bytes:
    n = len(body)
    if n < 0x80:
        return bytes([tag, n]) + body
    size = (n.bit_length() + 7) // 8
    return bytes([tag, 0x80 | size]) + n.to_bytes(size, "big") + body


def tcb_info_extension(fwid: bytes) -> x509.UnrecognizedExtension:
    """NVIDIA's layout: SEQUENCE { INTEGER 1, FWID SEQUENCE { sha384, OCTET STRING } }."""
    fwid_seq = _der(0x30, SHA384_OID_DER + _der(0x04, fwid))
    return x509.UnrecognizedExtension(
        x509.ObjectIdentifier("2.23.133.5.4.1"), _der(0x30, b"\x02\x01\x01" + fwid_seq)
    )


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Fake NVIDIA for tests"),
        ]
    )


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: str,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool,
    not_before: datetime = NOT_BEFORE,
    not_after: datetime = NOT_BEFORE + timedelta(days=3650),
    extensions: tuple[x509.ExtensionType, ...] = (),
) -> x509.Certificate:
    b = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=not ca,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=ca,
                crl_sign=ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )
    for ext in extensions:
        b = b.add_extension(ext, critical=False)
    return b.sign(issuer_key, hashes.SHA384())


@dataclass
class FakeDevice:
    """Root -> "NVIDIA GH100 Provisioner ICA 1" -> "GH100 A01 GSP BROM" -> FMC leaf (P-384)."""

    leaf_cn: str = "GH100 A01 GSP FMC LF"
    leaf_not_after: datetime = NOT_BEFORE + timedelta(days=3650)
    fwid_in_cert: bytes | None = FWID
    leaf_curve: ec.EllipticCurve = field(default_factory=ec.SECP384R1)
    ica_is_ca: bool = True

    def __post_init__(self) -> None:
        self.root_key = ec.generate_private_key(ec.SECP384R1())
        self.ica_key = ec.generate_private_key(ec.SECP384R1())
        self.brom_key = ec.generate_private_key(ec.SECP384R1())
        self.leaf_key = ec.generate_private_key(self.leaf_curve)
        self.root = _cert(
            "Fake Device Identity CA",
            self.root_key,
            "Fake Device Identity CA",
            self.root_key,
            ca=True,
        )
        self.ica = _cert(
            "NVIDIA GH100 Provisioner ICA 1",
            self.ica_key,
            "Fake Device Identity CA",
            self.root_key,
            ca=self.ica_is_ca,
        )
        self.brom = _cert(
            "GH100 A01 GSP BROM",
            self.brom_key,
            "NVIDIA GH100 Provisioner ICA 1",
            self.ica_key,
            ca=True,
        )
        exts: tuple[x509.ExtensionType, ...] = ()
        if self.fwid_in_cert is not None:
            exts = (tcb_info_extension(self.fwid_in_cert),)
        self.leaf = _cert(
            self.leaf_cn,
            self.leaf_key,
            "GH100 A01 GSP BROM",
            self.brom_key,
            ca=False,
            not_after=self.leaf_not_after,
            extensions=exts,
        )

    def chain_pem(self, *, with_root: bool = True) -> bytes:
        certs = [self.leaf, self.brom, self.ica] + ([self.root] if with_root else [])
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)

    def evidence(
        self,
        *,
        nonce: bytes = NONCE,
        opaque: tuple[OpaqueField, ...] | None = None,
        measurements: dict[int, bytes] | None = None,
        signed: bool = True,
        trailing: bytes = b"",
    ) -> bytes:
        values = measurements or {i: hashlib.sha384(bytes([i])).digest() for i in range(1, 5)}
        blocks = tuple(
            abi.MeasurementBlock(i, abi.MEASUREMENT_SPEC_DMTF, 0x01, v)
            for i, v in sorted(values.items())
        )
        if opaque is None:
            opaque = (
                OpaqueField(OpaqueFieldId.VBIOS_VERSION, bytes.fromhex("009f009601000000")),
                OpaqueField(OpaqueFieldId.PROJECT, b"1010\x00"),
                OpaqueField(OpaqueFieldId.CHIP_SKU, b"882\x00"),
                OpaqueField(OpaqueFieldId.DRIVER_VERSION, b"550.90.07\x00"),
                OpaqueField(OpaqueFieldId.FWID, FWID),
                OpaqueField(OpaqueFieldId.FEATURE_FLAG, b"\x00\x00"),
            )
        request = abi.MeasurementRequest(
            0x11, 0x01 if signed else 0x00, 0xFF, nonce if signed else None, 0 if signed else None
        )
        response = abi.MeasurementsResponse(0x11, 0, 0, blocks, bytes(32), opaque)
        unsigned = abi.SpdmEvidence.build(request, response)
        if not signed:
            return unsigned.to_bytes()
        der = self.leaf_key.sign(unsigned.signed_bytes, ec.ECDSA(hashes.SHA384()))
        r, s = decode_dss_signature(der)
        size = (self.leaf_curve.key_size + 7) // 8
        sig = r.to_bytes(size, "big") + s.to_bytes(size, "big")
        return abi.SpdmEvidence.build(request, response, sig, trailing).to_bytes()

    def item(self, data: bytes | None = None, **kw: object) -> EvidenceItem:
        return EvidenceItem(
            "nvidia",
            data if data is not None else self.evidence(**kw),  # type: ignore[arg-type]
            {"cert_chain": self.chain_pem()},
            name="gpu0",
        )

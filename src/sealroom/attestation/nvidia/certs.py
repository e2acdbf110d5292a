"""NVIDIA device certificates: embedded root, chain from attachments, leaf extensions.

A Hopper GPU or LS10 switch presents five certificates, leaf first::

    <chip> A01 <GSP|FSP> FMC LF      device attestation key (signs the SPDM response)
    <chip> A01 <GSP|FSP> BROM        device identity, issued at provisioning
    NVIDIA <chip> Provisioner ICA 1
    NVIDIA GH100 Identity
    NVIDIA Device Identity CA        the root, embedded in roots/

The leaf carries the TCG DICE TcbInfo extension (tcg-dice-TcbInfo, OID 2.23.133.5.4.1)
with a firmware id (FWID: hash algorithm + digest), and a subjectAltName otherName
(NVIDIA OID 1.3.6.1.4.1.412.274.1) naming the device ("NVIDIA:GH100:48B02D92494BADF4").
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources

from cryptography import x509

from sealroom.attestation import der
from sealroom.attestation.nvidia.formats import ATT_CERT, ATT_CERT_CHAIN
from sealroom.attestation.x509util import load_certificates, subject_cn
from sealroom.errors import MalformedEvidenceError

OID_TCG_DICE_TCBINFO = x509.ObjectIdentifier("2.23.133.5.4.1")
OID_NVIDIA_DEVICE_NAME = x509.ObjectIdentifier("1.3.6.1.4.1.412.274.1")

# DER contents of the hash-algorithm OIDs a FWID may name (NIST hash algorithms arc).
_HASH_OIDS = {
    bytes.fromhex("608648016503040201"): "sha256",
    bytes.fromhex("608648016503040202"): "sha384",
    bytes.fromhex("608648016503040203"): "sha512",
}

# Chip name (first word of the device certificates' CN) -> (arch, device kind).
CHIPS: Mapping[str, tuple[str, str]] = {
    "GH100": ("HOPPER", "gpu"),
    "LS_10": ("LS10", "nvswitch"),
}


@cache
def embedded_roots() -> tuple[x509.Certificate, ...]:
    """NVIDIA Device Identity CA (provenance and fingerprint in roots/README.md)."""
    folder = resources.files("sealroom.attestation.nvidia").joinpath("roots")
    out: list[x509.Certificate] = []
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".pem"):
            out.extend(load_certificates(entry.read_bytes(), entry.name))
    return tuple(out)


def chain_from_attachments(attachments: Mapping[str, bytes]) -> list[x509.Certificate] | None:
    """The device chain, leaf first: ``cert_chain`` (PEM bundle) or ``cert``, ``cert.1``...

    None when the item carries no chain; both forms at once is ambiguous and an error.
    """
    parts = [attachments[ATT_CERT]] if ATT_CERT in attachments else []
    n = 1
    while f"{ATT_CERT}.{n}" in attachments:
        parts.append(attachments[f"{ATT_CERT}.{n}"])
        n += 1
    if ATT_CERT_CHAIN in attachments:
        if parts:
            raise MalformedEvidenceError(
                "evidence carries both a cert_chain attachment and --certs; pass one chain"
            )
        parts = [attachments[ATT_CERT_CHAIN]]
    if not parts:
        return None
    certs: list[x509.Certificate] = []
    for i, part in enumerate(parts):
        certs.extend(load_certificates(part, f"device certificate chain part {i}"))
    return certs


def _fwids(data: bytes, what: str, depth: int = 0) -> Iterator[tuple[str, bytes]]:
    """Every FWID ::= SEQUENCE { hashAlg OID, digest OCTET STRING } at any depth.

    Covers both the TCG layout (fwids [6] IMPLICIT SEQUENCE OF FWID) and NVIDIA's, which
    places one FWID SEQUENCE directly in the extension's outer SEQUENCE.
    """
    if depth > 8:
        raise MalformedEvidenceError(f"{what}: DER nested too deeply")
    for tag, value in der.read_tlvs(data, what):
        if not tag & 0x20:  # primitive
            continue
        children = der.read_tlvs(value, what)
        if (
            tag == der.SEQUENCE
            and len(children) == 2
            and children[0].tag == der.OID
            and children[1].tag == der.OCTET_STRING
            and children[0].value in _HASH_OIDS
        ):
            yield _HASH_OIDS[children[0][1]], children[1][1]
        else:
            yield from _fwids(value, what, depth + 1)


@dataclass(frozen=True)
class LeafInfo:
    fwid: bytes | None
    fwid_alg: str | None
    device_name: str | None


def leaf_info(cert: x509.Certificate) -> LeafInfo:
    fwid: bytes | None = None
    fwid_alg: str | None = None
    try:
        ext = cert.extensions.get_extension_for_oid(OID_TCG_DICE_TCBINFO)
    except x509.ExtensionNotFound:
        pass
    else:
        if not isinstance(ext.value, x509.UnrecognizedExtension):
            raise MalformedEvidenceError("tcg-dice-TcbInfo extension has an unexpected type")
        found = list(_fwids(ext.value.value, "leaf tcg-dice-TcbInfo"))
        if found:
            fwid_alg, fwid = found[0]
    name: str | None = None
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        pass
    else:
        for other in san.value.get_values_for_type(x509.OtherName):
            if other.type_id == OID_NVIDIA_DEVICE_NAME:
                for tag, value in der.read_tlvs(other.value, "leaf device name"):
                    if tag == der.UTF8_STRING:
                        try:
                            name = value.decode("utf-8")
                        except UnicodeDecodeError as e:
                            raise MalformedEvidenceError("leaf device name is not UTF-8") from e
    return LeafInfo(fwid, fwid_alg, name)


def _first_word(cert: x509.Certificate) -> str:
    words = subject_cn(cert).split()
    return words[0] if words else ""


def _device_certs(chain: list[x509.Certificate]) -> list[x509.Certificate]:
    """The per-device certificates at the head of the chain (FMC leaf, BROM); NVIDIA's
    own CAs are named "NVIDIA ..." and end the device part."""
    out = []
    for cert in chain:
        if subject_cn(cert).startswith("NVIDIA "):
            break
        out.append(cert)
    return out or chain[:1]


def chip_of(chain: list[x509.Certificate]) -> str:
    """Chip name from the device certificates' CN ("GH100 A01 GSP BROM" -> "GH100").

    Taken from the last device certificate (the BROM identity, which NVIDIA's provisioning
    CA issued) rather than the leaf (which the device issues itself).
    """
    return _first_word(_device_certs(chain)[-1])


def leaf_chip_mismatch(chain: list[x509.Certificate]) -> str | None:
    """A device certificate naming another chip than :func:`chip_of`, else None."""
    chip = chip_of(chain)
    for cert in _device_certs(chain):
        if _first_word(cert) != chip:
            return _first_word(cert)
    return None

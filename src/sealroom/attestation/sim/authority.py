"""The sim authority: a local, clearly-named stand-in for AMD's key hierarchy.

It lets sealroom run end to end on machines without TEE hardware, and proves nothing
about confidentiality: the authority's keys live on the host. It generates an ARK/ASK
(RSA, RSASSA-PSS SHA-384 as AMD uses) and a VCEK (ECDSA P-384) whose names all say
SIMULATED and whose productName is "Simulated", then signs reports in the real SEV-SNP
layout. Verifiers check them with the production SNP code; a report is accepted only
by a verifier that added this authority's ARK to its roots, and the claims are then
flagged ``simulated`` (the ARK is not AMD's), which every policy rejects unless it says
``allow_simulated: true``.
"""

from __future__ import annotations

import fcntl
import hashlib
import secrets
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from sealroom.attestation import der
from sealroom.attestation.evidence import EvidenceItem
from sealroom.attestation.snp import certs as snp_certs
from sealroom.attestation.snp.abi import (
    REPORT_SIZE,
    SIG_ALGO_ECDSA_P384_SHA384,
    SIGNATURE_OFFSET,
    GuestPolicy,
    PlatformInfo,
    Report,
    SigningKey,
    TcbVersion,
)
from sealroom.attestation.x509util import load_certificate
from sealroom.errors import InvalidInputError, UnavailableError
from sealroom.files import write_private

SIM_ORG = "sealroom SIMULATED TEE - NOT AMD - proves nothing about confidentiality"
SIM_PRODUCT = "Simulated"
SIM_TCB = TcbVersion.build(bootloader=1, tee=1, snp=1, microcode=1)
SIM_FIRMWARE = (1, 55, 0)
_PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)
_VALIDITY = timedelta(days=3650)


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, SIM_ORG),
        ]
    )


def _private_pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@dataclass(frozen=True)
class SimKeys:
    ark: x509.Certificate
    ask: x509.Certificate
    vcek: x509.Certificate
    vcek_key: ec.EllipticCurvePrivateKey
    chip_id: bytes


@dataclass(frozen=True)
class IssuedChain:
    """A freshly issued chain; the ARK/ASK private keys exist only in this object."""

    keys: SimKeys
    ark_key: rsa.RSAPrivateKey
    ask_key: rsa.RSAPrivateKey


def issue_chain(
    now: datetime,
    *,
    product_name: str = SIM_PRODUCT,
    chip_id: bytes | None = None,
    hwid: bytes | None = None,
    tcb: TcbVersion = SIM_TCB,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
    rsa_bits: int = 3072,
) -> IssuedChain:
    """Issue ARK -> ASK -> VCEK. The keyword arguments exist so tests can build
    certificates that are wrong in exactly one way (hwID of another chip, other TCB,
    expired); the sim authority itself uses the defaults."""
    ark_key = rsa.generate_private_key(public_exponent=65537, key_size=rsa_bits)
    ask_key = rsa.generate_private_key(public_exponent=65537, key_size=rsa_bits)
    vcek_key = ec.generate_private_key(ec.SECP384R1())
    chip_id = chip_id if chip_id is not None else secrets.token_bytes(64)
    start = not_before or now - timedelta(days=1)
    end = not_after or now + _VALIDITY
    ark_name = _name("SIMULATED-ARK sealroom sim authority")
    ask_name = _name("SIMULATED-ASK sealroom sim authority")
    ca = x509.BasicConstraints(ca=True, path_length=None)
    ark = (
        x509.CertificateBuilder()
        .subject_name(ark_name)
        .issuer_name(ark_name)
        .public_key(ark_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(ca, critical=True)
        .sign(ark_key, hashes.SHA384(), rsa_padding=_PSS)
    )
    ask = (
        x509.CertificateBuilder()
        .subject_name(ask_name)
        .issuer_name(ark_name)
        .public_key(ask_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(ca, critical=True)
        .sign(ark_key, hashes.SHA384(), rsa_padding=_PSS)
    )
    exts = [
        (snp_certs.OID_STRUCT_VERSION, der.encode_int(0)),
        (snp_certs.OID_PRODUCT_NAME, der.encode_ia5(product_name)),
        (snp_certs.OID_BL_SPL, der.encode_int(tcb.bootloader)),
        (snp_certs.OID_TEE_SPL, der.encode_int(tcb.tee)),
        (snp_certs.OID_SNP_SPL, der.encode_int(tcb.snp)),
        (snp_certs.OID_UCODE_SPL, der.encode_int(tcb.microcode)),
        (snp_certs.OID_HWID, hwid if hwid is not None else chip_id),
    ]
    if tcb.fmc is not None:
        exts.append((snp_certs.OID_FMC_SPL, der.encode_int(tcb.fmc)))
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name("SEV-VCEK SIMULATED"))
        .issuer_name(ask_name)
        .public_key(vcek_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
    )
    for oid, value in exts:
        builder = builder.add_extension(x509.UnrecognizedExtension(oid, value), critical=False)
    vcek = builder.sign(ask_key, hashes.SHA384(), rsa_padding=_PSS)
    return IssuedChain(SimKeys(ark, ask, vcek, vcek_key, chip_id), ark_key, ask_key)


class SimAuthority:
    """Loads (or creates, once) the authority's state in ``home`` and signs reports."""

    def __init__(self, keys: SimKeys, home: Path | None = None) -> None:
        self.keys = keys
        self.home = home

    @classmethod
    def load_or_create(cls, home: Path, now: datetime | None = None) -> SimAuthority:
        """The authority in ``home``, created once. Several processes (host agents, the
        CLI) may ask at the same moment: an exclusive lock makes exactly one create it, and
        the others read that one's complete key set."""
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
        files = {n: home / f"{n}.pem" for n in ("ark", "ask", "vcek", "vcek-key")}
        if not all(p.exists() for p in files.values()):
            with open(home / ".lock", "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                if not all(p.exists() for p in files.values()):
                    keys = issue_chain(now or datetime.now(UTC)).keys
                    for name, cert in (("ark", keys.ark), ("ask", keys.ask), ("vcek", keys.vcek)):
                        pem = cert.public_bytes(serialization.Encoding.PEM)
                        write_private(files[name], pem, overwrite=True, what=f"sim {name}")
                    # Only the VCEK key is kept: ARK/ASK keys are not needed after issuance.
                    # It is written last, so its presence means the set is complete.
                    write_private(
                        files["vcek-key"],
                        _private_pem(keys.vcek_key),
                        overwrite=True,
                        what="sim VCEK key",
                    )
                    return cls(keys, home)
        try:
            ark = load_certificate(files["ark"].read_bytes(), "sim ARK")
            ask = load_certificate(files["ask"].read_bytes(), "sim ASK")
            vcek = load_certificate(files["vcek"].read_bytes(), "sim VCEK")
            key = serialization.load_pem_private_key(files["vcek-key"].read_bytes(), None)
        except (OSError, ValueError) as e:
            raise UnavailableError(f"sim authority state in {home} is unreadable: {e}") from e
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise InvalidInputError(f"{files['vcek-key']} is not an EC private key")
        hwid = snp_certs.vek_info(vcek).hwid
        if hwid is None:
            raise InvalidInputError(f"{files['vcek']} has no hwID")
        return cls(SimKeys(ark, ask, vcek, key, hwid), home)

    @classmethod
    def ephemeral(cls, now: datetime | None = None) -> SimAuthority:
        keys = issue_chain(now or datetime.now(UTC)).keys
        return cls(keys)

    @property
    def root(self) -> x509.Certificate:
        return self.keys.ark

    def root_pem(self) -> bytes:
        return self.keys.ark.public_bytes(serialization.Encoding.PEM)

    def sign(self, report: Report) -> Report:
        """Sign a report (its signature field is replaced) with the sim VCEK."""
        unsigned = replace(report, signature=bytes(REPORT_SIZE - SIGNATURE_OFFSET), raw=b"")
        der = self.keys.vcek_key.sign(
            unsigned.to_bytes()[:SIGNATURE_OFFSET], ec.ECDSA(hashes.SHA384())
        )
        r, s = decode_dss_signature(der)
        return unsigned.with_signature(r, s)

    def report(
        self,
        *,
        measurement: bytes,
        report_data: bytes = bytes(64),
        host_data: bytes = bytes(32),
        policy: GuestPolicy | None = None,
        vmpl: int = 0,
        guest_svn: int = 0,
        tcb: TcbVersion = SIM_TCB,
        cpuid: tuple[int, int, int] = (0, 0, 0),
    ) -> Report:
        if len(measurement) != 48:
            raise InvalidInputError(f"measurement must be 48 bytes, got {len(measurement)}")
        if len(report_data) != 64:
            raise InvalidInputError(f"report_data must be 64 bytes, got {len(report_data)}")
        if len(host_data) != 32:
            raise InvalidInputError(f"host_data must be 32 bytes, got {len(host_data)}")
        tcb_raw = tcb.raw
        major, minor, build = SIM_FIRMWARE
        unsigned = Report(
            version=3,
            guest_svn=guest_svn,
            policy=policy or GuestPolicy.build(abi_major=1, abi_minor=55),
            family_id=bytes(16),
            image_id=bytes(16),
            vmpl=vmpl,
            signature_algo=SIG_ALGO_ECDSA_P384_SHA384,
            current_tcb_raw=tcb_raw,
            platform_info=PlatformInfo(0),
            author_key_en=False,
            mask_chip_key=False,
            signing_key=SigningKey.VCEK,
            report_data=report_data,
            measurement=measurement,
            host_data=host_data,
            id_key_digest=bytes(48),
            author_key_digest=bytes(48),
            report_id=hashlib.sha256(report_data + measurement).digest(),
            report_id_ma=b"\xff" * 32,
            reported_tcb_raw=tcb_raw,
            cpuid_fam_id=cpuid[0],
            cpuid_mod_id=cpuid[1],
            cpuid_step=cpuid[2],
            chip_id=self.keys.chip_id,
            committed_tcb_raw=tcb_raw,
            current_build=build,
            current_minor=minor,
            current_major=major,
            committed_build=build,
            committed_minor=minor,
            committed_major=major,
            launch_tcb_raw=tcb_raw,
            launch_mit_vector=None,
            current_mit_vector=None,
            signature=bytes(REPORT_SIZE - SIGNATURE_OFFSET),
        )
        return self.sign(unsigned)

    def evidence(self, report: Report, collected_at: datetime | None = None) -> EvidenceItem:
        """An evidence item carrying the VCEK and ASK (never the ARK: trust is the
        verifier's choice)."""
        der = serialization.Encoding.DER
        return EvidenceItem(
            kind="snp",
            data=report.raw or report.to_bytes(),
            attachments={
                "vcek": self.keys.vcek.public_bytes(der),
                "ask": self.keys.ask.public_bytes(der),
            },
            collected_at=collected_at,
        )


def measure_tree(root: Path) -> bytes:
    """SHA-384 over a code tree: the sim 'launch measurement'.

    Deterministic: files in sorted relative-path order, each framed as
    (path length, path, content length, content); ``__pycache__`` and ``*.pyc`` skipped.
    A changed runtime file changes the measurement, and policy catches it.
    """
    h = hashlib.sha384(b"sealroom/sim-measurement/v1\0")
    if root.is_file():
        files = [root]
        base = root.parent
    else:
        base = root
        files = sorted(
            (
                p
                for p in root.rglob("*")
                if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
            ),
            key=lambda p: p.relative_to(root).as_posix(),
        )
    for p in files:
        rel = p.relative_to(base).as_posix().encode()
        content = p.read_bytes()
        h.update(len(rel).to_bytes(8, "big") + rel + len(content).to_bytes(8, "big") + content)
    return h.digest()

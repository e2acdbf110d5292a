"""A fake Intel DCAP PKI for negative tests: root, PCK Platform/Processor CA, PCK leaf with
the SGX extension, TCB Signing certificate, CRLs, signed TCB info / QE identity, and
real-layout quotes (TDX v4/v5, SGX v3) signed by keys it holds.

Everything it makes goes through the production parser and verifier unchanged; the fake
root is trusted only where a test passes it as ``VerifyContext.extra_roots``. Production
code never imports this module.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from sealroom.attestation import der
from sealroom.attestation.tdx.abi import (
    ATT_KEY_ECDSA_P256,
    CERT_DATA_PCK_CHAIN,
    INTEL_QE_VENDOR_ID,
    BodyType,
    CertificationData,
    EnclaveReport,
    QeReportCertData,
    Quote,
    QuoteHeader,
    SignatureData,
    TdReportBody,
    TeeType,
)

_PEM = serialization.Encoding.PEM
_DER = serialization.Encoding.DER

QE_MRSIGNER = bytes.fromhex("dc9e2a7c6f948f17474e34a7fc43ed030f7c1563f1babddf6340c82e0e54a8c5")
QE_ATTRIBUTES = bytes.fromhex("11000000000000000000000000000000")
QE_ATTRIBUTES_MASK = bytes.fromhex("fbffffffffffffff0000000000000000")


# --- a few DER forms for the SGX extension -------------------------------------------------


def _pair(oid: str, value: bytes) -> bytes:
    return der.encode_sequence(der.encode_oid(oid), value)


SGX_OID = "1.2.840.113741.1.13.1"


def sgx_extension_der(
    *,
    ppid: bytes,
    components: tuple[int, ...],
    pce_svn: int,
    cpu_svn: bytes,
    pce_id: bytes,
    fmspc: bytes,
    sgx_type: int = 0,
) -> bytes:
    tcb = b"".join(
        _pair(f"{SGX_OID}.2.{i + 1}", der.encode_int(c)) for i, c in enumerate(components)
    )
    tcb += _pair(f"{SGX_OID}.2.17", der.encode_int(pce_svn))
    tcb += _pair(f"{SGX_OID}.2.18", der.encode_tlv(der.OCTET_STRING, cpu_svn))
    body = (
        _pair(f"{SGX_OID}.1", der.encode_tlv(der.OCTET_STRING, ppid))
        + _pair(f"{SGX_OID}.2", der.encode_tlv(der.SEQUENCE, tcb))
        + _pair(f"{SGX_OID}.3", der.encode_tlv(der.OCTET_STRING, pce_id))
        + _pair(f"{SGX_OID}.4", der.encode_tlv(der.OCTET_STRING, fmspc))
        + _pair(f"{SGX_OID}.5", der.encode_int(sgx_type, der.ENUMERATED))
    )
    return der.encode_tlv(der.SEQUENCE, body)


# --- keys, certificates, signatures ----------------------------------------------------------


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(cn: str) -> x509.Name:
    # Intel's attribute order, so a fake root can carry the real root's exact name.
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Intel Corporation"),
            x509.NameAttribute(NameOID.LOCALITY_NAME, "Santa Clara"),
            x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, "CA"),
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
        ]
    )


def raw_sign(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    """ECDSA P-256 SHA-256 as Intel encodes it: r || s, 32 bytes each, big-endian."""
    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def raw_public(key: ec.EllipticCurvePrivateKey) -> bytes:
    point = key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return point[1:]


@dataclass
class Issued:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(_PEM)

    @property
    def der(self) -> bytes:
        return self.cert.public_bytes(_DER)


def _issue(
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    issuer: Issued | None,
    now: datetime,
    *,
    ca: bool,
    extensions: list[x509.ExtensionType] | None = None,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
) -> Issued:
    signer_key = issuer.key if issuer else key
    issuer_name = issuer.cert.subject if issuer else subject
    b = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or now - timedelta(days=1))
        .not_valid_after(not_after or now + timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    b = b.add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
    b = b.add_extension(
        x509.AuthorityKeyIdentifier.from_issuer_public_key(signer_key.public_key()), False
    )
    usage = dict.fromkeys(
        (
            "digital_signature",
            "content_commitment",
            "key_encipherment",
            "data_encipherment",
            "key_agreement",
            "key_cert_sign",
            "crl_sign",
            "encipher_only",
            "decipher_only",
        ),
        False,
    )
    if ca:
        usage.update(key_cert_sign=True, crl_sign=True)
    else:
        usage.update(digital_signature=True, content_commitment=True)
    b = b.add_extension(x509.KeyUsage(**usage), critical=True)
    for ext in extensions or []:
        b = b.add_extension(ext, critical=False)
    return Issued(key, b.sign(signer_key, hashes.SHA256()))


# --- the PKI ---------------------------------------------------------------------------------


@dataclass
class Platform:
    """What the PCK certificate says about the platform."""

    fmspc: bytes = bytes.fromhex("00aabb000000")
    components: tuple[int, ...] = (4, 4, 2, 2, 3, 1, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0)
    pce_svn: int = 13
    pce_id: bytes = b"\x00\x00"
    ppid: bytes = bytes(range(16))
    sgx_type: int = 1

    @property
    def cpu_svn(self) -> bytes:
        return bytes(self.components)


@dataclass
class FakeIntelPki:
    """``FakeIntelPki(now)`` issues a full fake Intel PKI valid around ``now``.

    ``processor=True`` makes the PCK CA a "Processor CA" (SGX-style) instead of
    "Platform CA". ``root_cn`` lets a test impersonate the real root's name.
    """

    now: datetime
    platform: Platform = field(default_factory=Platform)
    processor: bool = False
    root_cn: str = "Intel SGX Root CA"
    pck_not_after: datetime | None = None

    def __post_init__(self) -> None:
        self.root = _issue(_name(self.root_cn), _key(), None, self.now, ca=True)
        ca_cn = "Intel SGX PCK Processor CA" if self.processor else "Intel SGX PCK Platform CA"
        self.pck_ca = _issue(_name(ca_cn), _key(), self.root, self.now, ca=True)
        p = self.platform
        ext = x509.UnrecognizedExtension(
            x509.ObjectIdentifier(SGX_OID),
            sgx_extension_der(
                ppid=p.ppid,
                components=p.components,
                pce_svn=p.pce_svn,
                cpu_svn=p.cpu_svn,
                pce_id=p.pce_id,
                fmspc=p.fmspc,
                sgx_type=p.sgx_type,
            ),
        )
        self.pck = _issue(
            _name("Intel SGX PCK Certificate"),
            _key(),
            self.pck_ca,
            self.now,
            ca=False,
            extensions=[ext],
            not_after=self.pck_not_after,
        )
        self.tcb_signing = _issue(
            _name("Intel SGX TCB Signing"), _key(), self.root, self.now, ca=False
        )

    # -- chains and CRLs --

    @property
    def pck_chain_pem(self) -> bytes:
        return self.pck.pem + self.pck_ca.pem + self.root.pem

    @property
    def signing_chain_pem(self) -> bytes:
        return self.tcb_signing.pem + self.root.pem

    def crl(
        self,
        issuer: Issued,
        revoked: list[x509.Certificate] = [],  # noqa: B006 - read only
        *,
        next_update: datetime | None = None,
        signer: ec.EllipticCurvePrivateKey | None = None,
        this_update: datetime | None = None,
    ) -> bytes:
        b = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(issuer.cert.subject)
            .last_update(this_update or self.now - timedelta(hours=1))
            .next_update(next_update or self.now + timedelta(days=30))
            .add_extension(x509.CRLNumber(1), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()),
                critical=False,
            )
        )
        for cert in revoked:
            b = b.add_revoked_certificate(
                x509.RevokedCertificateBuilder()
                .serial_number(cert.serial_number)
                .revocation_date(self.now - timedelta(minutes=5))
                .build()
            )
        return b.sign(signer or issuer.key, hashes.SHA256()).public_bytes(_DER)

    def root_crl(self, revoked: list[x509.Certificate] = []) -> bytes:  # noqa: B006
        return self.crl(self.root, revoked)

    def pck_crl(self, revoked: list[x509.Certificate] = []) -> bytes:  # noqa: B006
        return self.crl(self.pck_ca, revoked)

    # -- TCB info and QE identity --

    def tcb_level(
        self,
        status: str = "UpToDate",
        *,
        components: tuple[int, ...] | None = None,
        pce_svn: int | None = None,
        tdx_components: tuple[int, ...] | None = (5, 1, 2) + (0,) * 13,
        advisories: tuple[str, ...] = (),
        date: str = "2024-03-13T00:00:00Z",
    ) -> dict[str, Any]:
        tcb: dict[str, Any] = {
            "sgxtcbcomponents": [{"svn": c} for c in (components or self.platform.components)],
            "pcesvn": self.platform.pce_svn if pce_svn is None else pce_svn,
        }
        if tdx_components is not None:
            tcb["tdxtcbcomponents"] = [{"svn": c} for c in tdx_components]
        level: dict[str, Any] = {"tcb": tcb, "tcbDate": date, "tcbStatus": status}
        if advisories:
            level["advisoryIDs"] = list(advisories)
        return level

    def tcb_info(
        self,
        *,
        tdx: bool = True,
        levels: list[dict[str, Any]] | None = None,
        fmspc: bytes | None = None,
        module_identities: list[dict[str, Any]] | None = None,
        module_mrsigner: bytes = bytes(48),
        issue: datetime | None = None,
        next_update: datetime | None = None,
    ) -> dict[str, Any]:
        info: dict[str, Any] = {
            "id": "TDX" if tdx else "SGX",
            "version": 3,
            "issueDate": _iso(issue or self.now - timedelta(days=1)),
            "nextUpdate": _iso(next_update or self.now + timedelta(days=29)),
            "fmspc": (fmspc or self.platform.fmspc).hex().upper(),
            "pceId": self.platform.pce_id.hex(),
            "tcbType": 0,
            "tcbEvaluationDataNumber": 17,
        }
        if tdx:
            info["tdxModule"] = {
                "mrsigner": module_mrsigner.hex(),
                "attributes": "0000000000000000",
                "attributesMask": "FFFFFFFFFFFFFFFF",
            }
            if module_identities is None:  # the module of td_body(): TDX_01, SVN 5
                module_identities = [
                    {
                        "id": "TDX_01",
                        "mrsigner": module_mrsigner.hex(),
                        "attributes": "0000000000000000",
                        "attributesMask": "FFFFFFFFFFFFFFFF",
                        "tcbLevels": [
                            {
                                "tcb": {"isvsvn": 4},
                                "tcbDate": "2024-03-13T00:00:00Z",
                                "tcbStatus": "UpToDate",
                            },
                        ],
                    }
                ]
            info["tdxModuleIdentities"] = module_identities
        if levels is None:
            levels = [
                self.tcb_level("UpToDate", tdx_components=(5, 1, 2) + (0,) * 13 if tdx else None)
            ]
        info["tcbLevels"] = levels
        return info

    def qe_identity(
        self,
        *,
        tdx: bool = True,
        isvsvn_levels: list[tuple[int, str]] | None = None,
        mrsigner: bytes = QE_MRSIGNER,
        next_update: datetime | None = None,
    ) -> dict[str, Any]:
        return {
            "id": "TD_QE" if tdx else "QE",
            "version": 2,
            "issueDate": _iso(self.now - timedelta(days=1)),
            "nextUpdate": _iso(next_update or self.now + timedelta(days=29)),
            "tcbEvaluationDataNumber": 17,
            "miscselect": "00000000",
            "miscselectMask": "FFFFFFFF",
            "attributes": QE_ATTRIBUTES.hex(),
            "attributesMask": QE_ATTRIBUTES_MASK.hex(),
            "mrsigner": mrsigner.hex().upper(),
            "isvprodid": 2 if tdx else 1,
            "tcbLevels": [
                {"tcb": {"isvsvn": svn}, "tcbDate": "2024-03-13T00:00:00Z", "tcbStatus": st}
                for svn, st in (isvsvn_levels or [(4, "UpToDate")])
            ],
        }

    def sign_json(
        self, obj: dict[str, Any], key: ec.EllipticCurvePrivateKey | None = None
    ) -> tuple[str, str]:
        body = json.dumps(obj, separators=(",", ":"))
        return body, raw_sign(key or self.tcb_signing.key, body.encode()).hex()

    def collateral(
        self,
        *,
        tcb_info: dict[str, Any] | None = None,
        qe_identity: dict[str, Any] | None = None,
        tdx: bool = True,
        root_crl: bytes | None = None,
        pck_crl: bytes | None = None,
        signer: ec.EllipticCurvePrivateKey | None = None,
        omit: tuple[str, ...] = (),
    ) -> bytes:
        """dcap-qvl single-file collateral JSON (the CLI's ``--collateral FILE``)."""
        tcb_body, tcb_sig = self.sign_json(tcb_info or self.tcb_info(tdx=tdx), signer)
        qe_body, qe_sig = self.sign_json(qe_identity or self.qe_identity(tdx=tdx), signer)
        obj = {
            "pck_crl_issuer_chain": (self.pck_ca.pem + self.root.pem).decode(),
            "root_ca_crl": (root_crl or self.root_crl()).hex(),
            "pck_crl": (pck_crl or self.pck_crl()).hex(),
            "tcb_info_issuer_chain": self.signing_chain_pem.decode(),
            "tcb_info": tcb_body,
            "tcb_info_signature": tcb_sig,
            "qe_identity_issuer_chain": self.signing_chain_pem.decode(),
            "qe_identity": qe_body,
            "qe_identity_signature": qe_sig,
        }
        for key in omit:
            obj.pop(key, None)
        return json.dumps(obj).encode()

    # -- quotes --

    def td_body(self, **overrides: Any) -> TdReportBody:
        fields: dict[str, Any] = {
            "tee_tcb_svn": bytes([5, 1, 2]) + bytes(13),
            "mr_seam": b"\x5e" * 48,
            "mr_signer_seam": bytes(48),
            "seam_attributes": bytes(8),
            "td_attributes": (1 << 28).to_bytes(8, "little"),  # SEPT_VE_DISABLE
            "xfam": bytes.fromhex("e702060000000000"),
            "mr_td": b"\x11" * 48,
            "mr_config_id": bytes(48),
            "mr_owner": bytes(48),
            "mr_owner_config": bytes(48),
            "rtmr0": b"\x20" * 48,
            "rtmr1": b"\x21" * 48,
            "rtmr2": b"\x22" * 48,
            "rtmr3": bytes(48),
            "report_data": bytes(64),
        }
        fields.update(overrides)
        return TdReportBody(**fields)

    def enclave_body(self, **overrides: Any) -> EnclaveReport:
        fields: dict[str, Any] = {
            "cpu_svn": self.platform.cpu_svn,
            "misc_select": 0,
            "isv_ext_prod_id": bytes(16),
            "attributes": (0x05).to_bytes(8, "little") + (0xE7).to_bytes(8, "little"),
            "mr_enclave": b"\xe1" * 32,
            "mr_signer": b"\x51" * 32,
            "config_id": bytes(64),
            "isv_prod_id": 0,
            "isv_svn": 0,
            "config_svn": 0,
            "isv_family_id": bytes(16),
            "report_data": bytes(64),
        }
        fields.update(overrides)
        return EnclaveReport(**fields)

    def quote(
        self,
        body: TdReportBody | EnclaveReport | None = None,
        *,
        version: int = 4,
        qe_isv_svn: int = 4,
        qe_mrsigner: bytes = QE_MRSIGNER,
        attestation_key: ec.EllipticCurvePrivateKey | None = None,
        quote_signer: ec.EllipticCurvePrivateKey | None = None,
        qe_report_signer: ec.EllipticCurvePrivateKey | None = None,
        qe_report_data: bytes | None = None,
        pck_chain: bytes | None = None,
        trailing: bytes = b"",
    ) -> bytes:
        """A real-layout quote. Defaults sign everything correctly; each keyword breaks one
        link on purpose (another signer, a wrong binding, another chain)."""
        if body is None:
            body = self.enclave_body() if version == 3 else self.td_body()
        sgx = isinstance(body, EnclaveReport)
        ak = attestation_key or _key()
        auth = bytes(range(32))
        binding = hashlib.sha256(raw_public(ak) + auth).digest() + bytes(32)
        qe_report = EnclaveReport(
            cpu_svn=self.platform.cpu_svn,
            misc_select=0,
            isv_ext_prod_id=bytes(16),
            attributes=QE_ATTRIBUTES,
            mr_enclave=b"\x9e" * 32,
            mr_signer=qe_mrsigner,
            config_id=bytes(64),
            isv_prod_id=1 if sgx else 2,
            isv_svn=qe_isv_svn,
            config_svn=0,
            isv_family_id=bytes(16),
            report_data=binding if qe_report_data is None else qe_report_data,
        )
        qe_raw = qe_report.to_bytes()
        chain = pck_chain if pck_chain is not None else self.pck_chain_pem + b"\x00"
        qe_cert = QeReportCertData(
            qe_report_raw=qe_raw,
            qe_report=qe_report,
            qe_report_signature=raw_sign(qe_report_signer or self.pck.key, qe_raw),
            qe_auth_data=auth,
            pck_cert_data=CertificationData(CERT_DATA_PCK_CHAIN, chain),
        )
        if isinstance(body, TdReportBody):
            body_type = BodyType.TD15 if body.is_td15 else BodyType.TD10
            if version == 4 and body.is_td15:
                raise ValueError("a TD 1.5 body needs quote version 5")
        else:
            body_type = BodyType.SGX
        header = QuoteHeader(
            version=version,
            att_key_type=ATT_KEY_ECDSA_P256,
            tee_type=TeeType.SGX if sgx else TeeType.TDX,
            qe_svn=qe_isv_svn,
            pce_svn=self.platform.pce_svn,
            qe_vendor_id=INTEL_QE_VENDOR_ID,
            user_data=bytes(20),
        )
        draft = Quote(
            header,
            body,
            body_type,
            SignatureData(bytes(64), raw_public(ak), qe_cert),
            b"",
            trailing,
        )
        region = draft.signed_region()
        sig = raw_sign(quote_signer or ak, region)
        final = replace(
            draft, signature_data=replace(draft.signature_data, signature=sig), signed_bytes=region
        )
        return final.to_bytes()


def _iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def other_key() -> ec.EllipticCurvePrivateKey:
    """A P-256 key no part of the PKI holds (for "signed by someone else" cases)."""
    return _key()

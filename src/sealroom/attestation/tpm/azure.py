"""Azure confidential VM vTPM evidence: the HCL report and the formats carrying it.

An Azure CVM's paravisor (HCL) writes an *HCL report* into a vTPM NV index::

    0x000  header: "HCLA", version u32, report_size u32, request_type u32, status u32,
           12 reserved bytes                                      (little-endian)
    0x020  hardware report area, 1184 bytes: an SEV-SNP ATTESTATION_REPORT, or a TDX
           TDREPORT (1024 bytes, then zeros)
    0x4C0  IGVM request data: data_size u32, version u32, report_type u32 (2 SNP, 4 TDX),
           report_data_hash_type u32 (1 SHA-256, 2 SHA-384, 3 SHA-512),
           variable_data_size u32
    0x4D4  variable data: the runtime JSON (``keys`` with the HCLAkPub JWK,
           ``vm-configuration``, ``user-data``)

The hardware report's REPORT_DATA starts with H(runtime JSON), which binds the AK to the
hardware; the TPM quote is then verified with that AK (see ``azure_verify.py``).
Sizes follow the length fields; the NV index's zero padding after ``report_size`` is
ignored.

Evidence formats accepted (Trustee's az-snp-vtpm / az-tdx-vtpm verifiers, ``compat.rs``):
SNP v0 ``{quote: {message, pcrs, signature}, report, vcek (PEM)}`` and TDX v0
``{tpm_quote: {message, pcrs, signature}, hcl_report, td_quote}``, no ``version``, every
byte string a JSON list of byte values (serde's default for ``Vec<u8>``; ``pcrs`` a list of
such lists); v1/v2 ``{version, tpm_quote: {message, pcrs, signature} (hex), hcl_report
(base64url), vcek (base64url DER) | td_quote (base64url)}``. ``load`` turns each into
the canonical item: ``data`` = HCL report, attachments ``tpm_quote`` (TPMS_ATTEST),
``tpm_signature`` (TPMT_SIGNATURE), ``pcrs`` (JSON), ``vcek`` or ``td_quote``.
"""

from __future__ import annotations

import base64
import binascii
import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, rsa

from sealroom.attestation.evidence import EvidenceItem
from sealroom.attestation.tpm.abi import (
    Alg,
    Attest,
    Signature,
    parse_attest,
    parse_signature,
)
from sealroom.attestation.tpm.formats import (
    AkKey,
    PcrBanks,
    parse_pcrs_json,
    pcrs_from_list,
    pcrs_json,
)
from sealroom.errors import MalformedEvidenceError

HCL_MAGIC = b"HCLA"
HCL_HEADER_SIZE = 0x20
HW_REPORT_SIZE = 0x4A0
IGVM_OFFSET = HCL_HEADER_SIZE + HW_REPORT_SIZE  # 0x4C0
IGVM_HEADER_SIZE = 20
RUNTIME_OFFSET = IGVM_OFFSET + IGVM_HEADER_SIZE  # 0x4D4
SUPPORTED_HCL_VERSIONS = (1, 2)
MAX_RUNTIME_DATA = 1 << 16
TDREPORT_SIZE = 1024
TDREPORT_REPORT_DATA = slice(128, 192)  # REPORTMACSTRUCT.report_data
SNP_REPORT_DATA = slice(0x50, 0x90)

REPORT_TYPES = {2: "snp", 4: "tdx"}
HASH_TYPES = {1: Alg.SHA256, 2: Alg.SHA384, 3: Alg.SHA512}
AK_KID = "HCLAkPub"

# Canonical attachment names of an Azure item (everything else goes to the hardware kind).
ATT_QUOTE, ATT_SIGNATURE, ATT_PCRS, ATT_TD_QUOTE = "tpm_quote", "tpm_signature", "pcrs", "td_quote"
OWN_ATTACHMENTS = frozenset({ATT_QUOTE, ATT_SIGNATURE, ATT_PCRS, ATT_TD_QUOTE, "ak"})


def _bad(msg: str) -> MalformedEvidenceError:
    return MalformedEvidenceError(f"HCL report: {msg}", code="azure-hcl-invalid")


@dataclass(frozen=True)
class HclReport:
    version: int
    report_size: int
    request_type: int
    status: int
    hw_report: bytes  # the whole 1184-byte area
    igvm_version: int
    report_type: int
    hash_type: int
    runtime_data: bytes
    reserved: bytes = bytes(12)
    raw: bytes = b""

    @property
    def hardware(self) -> str:
        return REPORT_TYPES[self.report_type]

    @property
    def hash_alg(self) -> int:
        return HASH_TYPES[self.hash_type]

    @property
    def snp_report(self) -> bytes:
        return self.hw_report

    @property
    def tdreport(self) -> bytes:
        return self.hw_report[:TDREPORT_SIZE]

    @property
    def hw_report_data(self) -> bytes:
        """REPORT_DATA of the hardware report (64 bytes), as the HCL says it is."""
        if self.hardware == "snp":
            return self.hw_report[SNP_REPORT_DATA]
        return self.hw_report[TDREPORT_REPORT_DATA]

    def to_bytes(self) -> bytes:
        igvm = struct.pack(
            "<5I",
            IGVM_HEADER_SIZE + len(self.runtime_data),
            self.igvm_version,
            self.report_type,
            self.hash_type,
            len(self.runtime_data),
        )
        head = HCL_MAGIC + struct.pack(
            "<4I", self.version, self.report_size, self.request_type, self.status
        )
        return head + self.reserved + self.hw_report + igvm + self.runtime_data


def parse_hcl_report(data: bytes) -> HclReport:
    if len(data) < RUNTIME_OFFSET:
        raise _bad(f"{len(data)} bytes, at least {RUNTIME_OFFSET} needed")
    if data[:4] != HCL_MAGIC:
        raise _bad(f"magic is {data[:4]!r}, expected {HCL_MAGIC!r}")
    version, report_size, request_type, status = struct.unpack_from("<4I", data, 4)
    if version not in SUPPORTED_HCL_VERSIONS:
        raise _bad(f"version is {version}, sealroom reads {SUPPORTED_HCL_VERSIONS}")
    data_size, igvm_version, report_type, hash_type, var_size = struct.unpack_from(
        "<5I", data, IGVM_OFFSET
    )
    if report_type not in REPORT_TYPES:
        raise _bad(f"report_type is {report_type}, expected 2 (SNP) or 4 (TDX)")
    if hash_type not in HASH_TYPES:
        raise _bad(f"report_data_hash_type is {hash_type}, expected 1, 2 or 3")
    if var_size > MAX_RUNTIME_DATA:
        raise _bad(f"variable_data_size is {var_size}, at most {MAX_RUNTIME_DATA} allowed")
    if data_size != IGVM_HEADER_SIZE + var_size:
        raise _bad(f"data_size is {data_size}, expected {IGVM_HEADER_SIZE} + {var_size}")
    if report_size != IGVM_OFFSET + data_size:
        raise _bad(f"report_size is {report_size}, expected {IGVM_OFFSET + data_size}")
    if report_size > len(data):
        raise _bad(f"report_size is {report_size}, only {len(data)} bytes present")
    return HclReport(
        version=version,
        report_size=report_size,
        request_type=request_type,
        status=status,
        hw_report=bytes(data[HCL_HEADER_SIZE:IGVM_OFFSET]),
        igvm_version=igvm_version,
        report_type=report_type,
        hash_type=hash_type,
        runtime_data=bytes(data[RUNTIME_OFFSET : RUNTIME_OFFSET + var_size]),
        reserved=bytes(data[20:HCL_HEADER_SIZE]),
        raw=bytes(data),
    )


# ----------------------------------------------------------------------------- runtime JSON


@dataclass(frozen=True)
class RuntimeData:
    keys: tuple[str, ...]  # kids, in order
    ak: AkKey
    vm_configuration: Mapping[str, Any]
    user_data: bytes | None


def _b64url_int(v: object, where: str) -> int:
    if not isinstance(v, str) or not v:
        raise MalformedEvidenceError(f"runtime data: {where} must be a base64url string")
    try:
        raw = base64.urlsafe_b64decode(v + "=" * (-len(v) % 4))
    except (binascii.Error, ValueError) as e:
        raise MalformedEvidenceError(f"runtime data: {where} is not base64url") from e
    return int.from_bytes(raw, "big")


_JWK_CURVES: dict[str, ec.EllipticCurve] = {
    "P-256": ec.SECP256R1(),
    "P-384": ec.SECP384R1(),
    "P-521": ec.SECP521R1(),
}


def jwk_public_key(
    jwk: Mapping[str, Any], where: str
) -> rsa.RSAPublicKey | ec.EllipticCurvePublicKey:
    kty = jwk.get("kty")
    try:
        if kty == "RSA":
            n = _b64url_int(jwk.get("n"), f"{where}.n")
            e = _b64url_int(jwk.get("e"), f"{where}.e")
            return rsa.RSAPublicNumbers(e, n).public_key()
        if kty == "EC":
            curve = _JWK_CURVES.get(str(jwk.get("crv")))
            if curve is None:
                raise MalformedEvidenceError(
                    f"runtime data: {where}.crv {jwk.get('crv')!r} unknown"
                )
            x = _b64url_int(jwk.get("x"), f"{where}.x")
            y = _b64url_int(jwk.get("y"), f"{where}.y")
            return ec.EllipticCurvePublicNumbers(x, y, curve).public_key()
    except ValueError as e:
        raise MalformedEvidenceError(f"runtime data: {where} is not a valid key: {e}") from e
    raise MalformedEvidenceError(f"runtime data: {where}.kty is {kty!r}, expected RSA or EC")


def parse_runtime_data(raw: bytes) -> RuntimeData:
    try:
        obj = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise MalformedEvidenceError(
            f"HCL runtime data is not JSON: {e}", code="azure-runtime-invalid"
        ) from e
    if not isinstance(obj, dict):
        raise MalformedEvidenceError("HCL runtime data must be a JSON object")
    keys = obj.get("keys")
    if not isinstance(keys, list) or not all(isinstance(k, dict) for k in keys):
        raise MalformedEvidenceError("HCL runtime data: 'keys' must be a list of JWKs")
    kids = tuple(str(k.get("kid")) for k in keys)
    aks = [k for k in keys if k.get("kid") == AK_KID]
    if len(aks) != 1:
        raise MalformedEvidenceError(
            f"HCL runtime data: expected one {AK_KID} key, found {len(aks)} (kids: {list(kids)})",
            code="azure-runtime-invalid",
        )
    ak = AkKey(jwk_public_key(aks[0], f"keys[{AK_KID}]"))
    vmc = obj.get("vm-configuration", {})
    if not isinstance(vmc, dict):
        raise MalformedEvidenceError("HCL runtime data: 'vm-configuration' must be an object")
    user_data = None
    if "user-data" in obj:
        ud = obj["user-data"]
        if not isinstance(ud, str):
            raise MalformedEvidenceError("HCL runtime data: 'user-data' must be a hex string")
        try:
            user_data = bytes.fromhex(ud)
        except ValueError as e:
            raise MalformedEvidenceError("HCL runtime data: 'user-data' is not hex") from e
    return RuntimeData(kids, ak, MappingProxyType(dict(vmc)), user_data)


# ----------------------------------------------------------------------------- formats


@dataclass(frozen=True)
class AzureEvidence:
    hcl: HclReport
    runtime: RuntimeData
    attest: Attest
    signature: Signature
    pcrs: PcrBanks
    td_quote: bytes | None
    hardware_attachments: Mapping[str, bytes]


def _json(data: bytes) -> dict[str, Any] | None:
    if not data.lstrip().startswith(b"{"):
        return None
    try:
        obj = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return None
    return obj if isinstance(obj, dict) else None


def _bytes_list(v: object, where: str) -> bytes:
    if not isinstance(v, list) or not all(isinstance(b, int) and 0 <= b <= 255 for b in v):
        raise MalformedEvidenceError(f"{where} must be a list of byte values")
    return bytes(v)


def _hexs(v: object, where: str) -> bytes:
    if not isinstance(v, str):
        raise MalformedEvidenceError(f"{where} must be a hex string")
    try:
        return bytes.fromhex(v)
    except ValueError as e:
        raise MalformedEvidenceError(f"{where} is not hex") from e


def _b64url(v: object, where: str) -> bytes:
    if not isinstance(v, str):
        raise MalformedEvidenceError(f"{where} must be a base64 string")
    try:
        return base64.urlsafe_b64decode(v.replace("+", "-").replace("/", "_") + "=" * (-len(v) % 4))
    except (binascii.Error, ValueError) as e:
        raise MalformedEvidenceError(f"{where} is not base64: {e}") from e


def tpm_signature(raw: bytes) -> Signature:
    """A TPMT_SIGNATURE, or the bare RSASSA-SHA256 signature Azure's attesters ship."""
    try:
        return parse_signature(raw)
    except MalformedEvidenceError:
        return Signature(Alg.RSASSA, Alg.SHA256, sig=bytes(raw))


def _quote_attachments(q: object, where: str, *, hex_fields: bool) -> dict[str, bytes]:
    if not isinstance(q, dict):
        raise MalformedEvidenceError(f"{where} must be an object {{message, signature, pcrs}}")
    conv = _hexs if hex_fields else _bytes_list
    message = conv(q.get("message"), f"{where}.message")
    signature = conv(q.get("signature"), f"{where}.signature")
    raw_pcrs = q.get("pcrs")
    if not isinstance(raw_pcrs, list):
        raise MalformedEvidenceError(f"{where}.pcrs must be a list")
    attest = parse_attest(message)
    values = [conv(v, f"{where}.pcrs[{i}]") for i, v in enumerate(raw_pcrs)]
    pcrs = pcrs_from_list(values, attest, f"{where}.pcrs")
    return {
        ATT_QUOTE: message,
        ATT_SIGNATURE: tpm_signature(signature).to_bytes(),
        ATT_PCRS: pcrs_json(pcrs),
    }


def looks_like_azure(data: bytes) -> str | None:
    """ "snp" / "tdx" for Azure vTPM evidence (HCL report or Trustee JSON), else None."""
    if data[:4] == HCL_MAGIC:
        if len(data) < RUNTIME_OFFSET:
            return None
        return REPORT_TYPES.get(struct.unpack_from("<I", data, IGVM_OFFSET + 8)[0])
    obj = _json(data)
    if obj is None:
        return None
    if "hcl_report" in obj and "tpm_quote" in obj:
        return "tdx" if "td_quote" in obj else "snp"
    if "report" in obj and isinstance(obj.get("quote"), dict):
        return "snp"
    return None


def load_azure(data: bytes) -> EvidenceItem:
    """Any accepted Azure format -> the canonical item (kind az-snp-vtpm or az-tdx-vtpm)."""
    if data[:4] == HCL_MAGIC:
        hcl = parse_hcl_report(data)
        return EvidenceItem(f"az-{hcl.hardware}-vtpm", data)
    obj = _json(data)
    if obj is None:
        raise MalformedEvidenceError("not Azure vTPM evidence (HCL report or Trustee JSON)")
    att: dict[str, bytes]
    if "hcl_report" in obj and "version" not in obj:
        # TDX v0: Trustee tries v2, v1, then v0; only v0 carries byte-value lists.
        extra = sorted(set(obj) - {"tpm_quote", "hcl_report", "td_quote"})
        if extra or "td_quote" not in obj:
            raise MalformedEvidenceError(
                "Azure TDX evidence without 'version' must be Trustee's v0 "
                f"{{tpm_quote, hcl_report, td_quote}}; got keys {sorted(obj)}",
                code="azure-evidence-invalid",
            )
        hcl_raw = _bytes_list(obj.get("hcl_report"), "hcl_report")
        att = _quote_attachments(obj.get("tpm_quote"), "tpm_quote", hex_fields=False)
        att[ATT_TD_QUOTE] = _bytes_list(obj.get("td_quote"), "td_quote")
    elif "hcl_report" in obj:
        version = obj.get("version")
        if version not in (1, 2):
            raise MalformedEvidenceError(f"Azure evidence version is {version!r}, expected 1 or 2")
        hcl_raw = _b64url(obj.get("hcl_report"), "hcl_report")
        att = _quote_attachments(obj.get("tpm_quote"), "tpm_quote", hex_fields=True)
        if "td_quote" in obj:
            att[ATT_TD_QUOTE] = _b64url(obj["td_quote"], "td_quote")
        if "vcek" in obj:
            att["vcek"] = _b64url(obj["vcek"], "vcek")
    elif "report" in obj:
        hcl_raw = _bytes_list(obj.get("report"), "report")
        att = _quote_attachments(obj.get("quote"), "quote", hex_fields=False)
        vcek = obj.get("vcek")
        if isinstance(vcek, str):
            att["vcek"] = vcek.encode()
    else:
        raise MalformedEvidenceError("Azure evidence JSON has neither hcl_report nor report")
    hcl = parse_hcl_report(hcl_raw)
    return EvidenceItem(f"az-{hcl.hardware}-vtpm", hcl_raw, att)


def decode_azure_item(item: EvidenceItem) -> AzureEvidence:
    if item.data[:4] != HCL_MAGIC:
        inner = load_azure(item.data)
        item = EvidenceItem(
            inner.kind, inner.data, {**inner.attachments, **item.attachments}, item.name,
            item.collected_at,
        )  # fmt: skip
    hcl = parse_hcl_report(item.data)
    runtime = parse_runtime_data(hcl.runtime_data)
    att = dict(item.attachments)
    # A Trustee tpm_quote.json {message, signature, pcrs} may come as the quote or as --pcrs.
    for name in (ATT_QUOTE, ATT_PCRS):
        obj = _json(att.get(name, b""))
        if obj is not None and "message" in obj:
            att.pop(name)
            att.update(_quote_attachments(obj, name, hex_fields=True))
    if ATT_QUOTE not in att or ATT_SIGNATURE not in att:
        raise MalformedEvidenceError(
            "Azure evidence has no TPM quote (attachments tpm_quote + tpm_signature, or a "
            "Trustee tpm_quote JSON)",
            code="azure-quote-missing",
        )
    attest = parse_attest(att[ATT_QUOTE])
    sig = tpm_signature(att[ATT_SIGNATURE])
    pcrs = parse_pcrs_json(att[ATT_PCRS]) if ATT_PCRS in att else {}
    hw_att = {k: v for k, v in att.items() if k not in OWN_ATTACHMENTS}
    return AzureEvidence(
        hcl, runtime, attest, sig, pcrs, att.get(ATT_TD_QUOTE), MappingProxyType(hw_att)
    )

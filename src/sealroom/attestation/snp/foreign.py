"""Other tools' SNP evidence formats, converted to the real report bytes.

- virtee/sev JSON (serde of ``AttestationReport``), used by Trustee's SNP evidence
  (``{"attestation_report": {...}, "cert_chain": [{"cert_type": "VCEK", "data": [...]}]}``)
  and by older virtee releases (``current_tcb._reserved``, ``plat_info``, ``_author_key_en``).
- the report as text: ASCII hex or base64 of the 1184 report bytes (and any trailing);
- certificate containers: Azure's THIM JSON and snpguest's certificates directory.

The result is re-serialised with ``Report.to_bytes()``; the signature then proves the
conversion exact (a single wrong field fails verification).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from pathlib import Path
from typing import Any

from sealroom.attestation.snp.abi import (
    REPORT_SIZE,
    SUPPORTED_VERSIONS,
    GuestPolicy,
    PlatformInfo,
    Report,
    SigningKey,
    TcbVersion,
)
from sealroom.errors import InvalidInputError, MalformedEvidenceError


def _bytes(obj: dict[str, Any], key: str, size: int) -> bytes:
    value = obj.get(key)
    if not isinstance(value, list) or len(value) != size:
        raise MalformedEvidenceError(f"virtee report field {key!r} must be a list of {size} bytes")
    try:
        return bytes(value)
    except (TypeError, ValueError) as e:
        raise MalformedEvidenceError(f"virtee report field {key!r}: {e}") from e


def _int(obj: dict[str, Any], key: str, default: int | None = None) -> int:
    value = obj.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise MalformedEvidenceError(f"virtee report field {key!r} must be a non-negative integer")
    return value


def _tcb(obj: dict[str, Any], key: str) -> int:
    t = obj.get(key)
    if not isinstance(t, dict):
        raise MalformedEvidenceError(f"virtee report field {key!r} must be an object")
    try:
        fmc = t.get("fmc")
        return TcbVersion.build(
            bootloader=_int(t, "bootloader"),
            tee=_int(t, "tee"),
            snp=_int(t, "snp"),
            microcode=_int(t, "microcode"),
            fmc=fmc if isinstance(fmc, int) else None,
        ).raw
    except (ValueError, OverflowError) as e:
        raise MalformedEvidenceError(f"virtee report field {key!r}: {e}") from e


def _version(obj: dict[str, Any], key: str, legacy: tuple[str, str, str]) -> tuple[int, int, int]:
    v = obj.get(key)
    if isinstance(v, dict):
        return _int(v, "major"), _int(v, "minor"), _int(v, "build")
    return _int(obj, legacy[0]), _int(obj, legacy[1]), _int(obj, legacy[2])


def report_from_virtee(r: dict[str, Any]) -> bytes:
    try:
        version = _int(r, "version")
        key_info = _int(r, "key_info", _int(r, "_author_key_en", 0))
        sig = r.get("signature")
        if not isinstance(sig, dict):
            raise MalformedEvidenceError("virtee report 'signature' must be an object")
        cur = _version(r, "current", ("current_major", "current_minor", "current_build"))
        com = _version(r, "committed", ("committed_major", "committed_minor", "committed_build"))
        sig_bytes = _bytes(sig, "r", 72) + _bytes(sig, "s", 72)
        report = Report(
            version=version,
            guest_svn=_int(r, "guest_svn"),
            policy=GuestPolicy(_int(r, "policy")),
            family_id=_bytes(r, "family_id", 16),
            image_id=_bytes(r, "image_id", 16),
            vmpl=_int(r, "vmpl"),
            signature_algo=_int(r, "sig_algo"),
            current_tcb_raw=_tcb(r, "current_tcb"),
            platform_info=PlatformInfo(_int(r, "plat_info")),
            author_key_en=bool(key_info & 1),
            mask_chip_key=bool(key_info >> 1 & 1),
            signing_key=SigningKey(key_info >> 2 & 7),
            report_data=_bytes(r, "report_data", 64),
            measurement=_bytes(r, "measurement", 48),
            host_data=_bytes(r, "host_data", 32),
            id_key_digest=_bytes(r, "id_key_digest", 48),
            author_key_digest=_bytes(r, "author_key_digest", 48),
            report_id=_bytes(r, "report_id", 32),
            report_id_ma=_bytes(r, "report_id_ma", 32),
            reported_tcb_raw=_tcb(r, "reported_tcb"),
            cpuid_fam_id=r.get("cpuid_fam_id"),
            cpuid_mod_id=r.get("cpuid_mod_id"),
            cpuid_step=r.get("cpuid_step"),
            chip_id=_bytes(r, "chip_id", 64),
            committed_tcb_raw=_tcb(r, "committed_tcb"),
            current_major=cur[0],
            current_minor=cur[1],
            current_build=cur[2],
            committed_major=com[0],
            committed_minor=com[1],
            committed_build=com[2],
            launch_tcb_raw=_tcb(r, "launch_tcb"),
            launch_mit_vector=r.get("launch_mit_vector"),
            current_mit_vector=r.get("current_mit_vector"),
            signature=sig_bytes + bytes(REPORT_SIZE - 0x2A0 - len(sig_bytes)),
        )
        return report.to_bytes()
    except (ValueError, TypeError, OverflowError, KeyError) as e:
        raise MalformedEvidenceError(f"virtee report JSON: {e}") from e


def load_virtee_json(data: bytes) -> tuple[bytes, dict[str, bytes]]:
    """Trustee/virtee SNP evidence JSON -> (report bytes, attachments)."""
    try:
        obj = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise MalformedEvidenceError(f"SNP evidence is not JSON: {e}") from e
    if not isinstance(obj, dict):
        raise MalformedEvidenceError("SNP evidence JSON must be an object")
    report = obj.get("attestation_report", obj)
    if not isinstance(report, dict):
        raise MalformedEvidenceError("'attestation_report' must be an object")
    attachments: dict[str, bytes] = {}
    chain = obj.get("cert_chain") or []
    if not isinstance(chain, list):
        raise MalformedEvidenceError("'cert_chain' must be a list")
    for n, entry in enumerate(chain):
        if not isinstance(entry, dict) or not isinstance(entry.get("data"), list):
            raise MalformedEvidenceError(f"cert_chain[{n}] must be {{cert_type, data: [bytes]}}")
        try:
            attachments[f"cert.{n}"] = bytes(entry["data"])
        except (TypeError, ValueError) as e:
            raise MalformedEvidenceError(f"cert_chain[{n}].data: {e}") from e
    return report_from_virtee(report), attachments


def looks_like_virtee_json(data: bytes) -> bool:
    head = data.lstrip()[:400]
    return head.startswith(b"{") and (
        b'"attestation_report"' in head or (b'"measurement"' in data and b'"chip_id"' in data)
    )


_HEX = re.compile(rb"[0-9a-fA-F]+")
_B64 = re.compile(rb"[A-Za-z0-9+/_-]+={0,2}")


def decode_text_report(data: bytes) -> bytes | None:
    """A report written as text: ASCII hex (virtee's ``report.hex``) or base64 (standard
    or URL-safe alphabet, as JSON APIs and ``base64`` write it), whitespace and line
    breaks ignored. Returns the bytes when they are at least one report long and start
    with a supported VERSION; None when ``data`` is not such text."""
    text = b"".join(data.split())
    if len(text) < REPORT_SIZE:
        return None
    decoded: bytes | None = None
    if _HEX.fullmatch(text) and len(text) % 2 == 0:
        decoded = bytes.fromhex(text.decode("ascii"))
    elif _B64.fullmatch(text):
        try:
            decoded = base64.b64decode(
                text.replace(b"-", b"+").replace(b"_", b"/") + b"=" * (-len(text) % 4),
                validate=True,
            )
        except binascii.Error:
            return None
    if decoded is None or len(decoded) < REPORT_SIZE:
        return None
    if int.from_bytes(decoded[:4], "little") not in SUPPORTED_VERSIONS:
        return None
    return decoded


# ---- certificate containers ---------------------------------------------------------

# Azure IMDS "THIM" answer (GET http://169.254.169.254/metadata/THIM/amd/certification):
# {"vcekCert": PEM, "certificateChain": PEM ASK + ARK, "tcbm": hex, "cacheControl": ...}.
THIM_CERT_FIELDS = ("vcekCert", "certificateChain")


def looks_like_thim_json(data: bytes) -> bool:
    head = data.lstrip()[:1]
    return head == b"{" and any(f'"{k}"'.encode() in data for k in THIM_CERT_FIELDS)


def load_thim_json(data: bytes, what: str = "THIM certificate JSON") -> list[bytes]:
    """The PEM certificates of an Azure THIM answer (VCEK first, then ASK and ARK).

    Only the certificates are used; ``tcbm`` and ``cacheControl`` are informational (the
    VCEK's own TCB extensions are what verification compares with the report)."""
    try:
        obj = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise MalformedEvidenceError(f"{what} is not JSON: {e}") from e
    if not isinstance(obj, dict):
        raise MalformedEvidenceError(f"{what} must be a JSON object")
    out: list[bytes] = []
    for key in THIM_CERT_FIELDS:
        value = obj.get(key)
        if not isinstance(value, str) or "-----BEGIN CERTIFICATE-----" not in value:
            raise MalformedEvidenceError(
                f"{what}: {key!r} must be a PEM string, got {type(value).__name__}"
            )
        out.append(value.encode("ascii", errors="replace"))
    tcbm = obj.get("tcbm")
    if tcbm is not None and (not isinstance(tcbm, str) or not _HEX.fullmatch(tcbm.encode())):
        raise MalformedEvidenceError(f"{what}: 'tcbm' must be a hex string, got {tcbm!r}")
    return out


# snpguest (virtee/snpguest) writes one file per certificate into a directory:
# ``snpguest certificates {pem|der} DIR`` and ``snpguest fetch ca|vcek|crl {pem|der} DIR``
# name them {ark,ask,asvk,vcek,vlek,crl}.{pem,der} (ASK is "asvk" for a VLEK chain).
SNPGUEST_NAMES = ("vcek", "vlek", "ask", "asvk", "ark", "crl")


def load_snpguest_dir(directory: Path) -> dict[str, bytes]:
    """Attachments from a snpguest certificates directory: ``cert.snpguest.<name>`` for
    certificates and ``crl`` for the CRL. Other files (``other-<uuid>.*``) are ignored."""
    out: dict[str, bytes] = {}
    for name in SNPGUEST_NAMES:
        for enc in ("pem", "der"):
            path = directory / f"{name}.{enc}"
            if not path.is_file():
                continue
            key = "crl" if name == "crl" else f"cert.snpguest.{name}.{enc}"
            if name == "crl" and key in out:
                raise InvalidInputError(f"{directory} holds both crl.pem and crl.der; keep one")
            try:
                out[key] = path.read_bytes()
            except OSError as e:
                raise InvalidInputError(f"cannot read {path}: {e}") from e
    if not any(k.startswith("cert.") for k in out):
        raise InvalidInputError(
            f"{directory} holds no snpguest certificates (expected files named "
            f"{', '.join(n + '.pem' for n in SNPGUEST_NAMES[:-1])} or .der)"
        )
    return out

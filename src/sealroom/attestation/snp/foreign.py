"""Other tools' SNP evidence formats, converted to the real report bytes.

- virtee/sev JSON (serde of ``AttestationReport``), used by Trustee's SNP evidence
  (``{"attestation_report": {...}, "cert_chain": [{"cert_type": "VCEK", "data": [...]}]}``)
  and by older virtee releases (``current_tcb._reserved``, ``plat_info``, ``_author_key_en``).
- ASCII hex of the 1184 report bytes.

The result is re-serialised with ``Report.to_bytes()``; the signature then proves the
conversion exact (a single wrong field fails verification).
"""

from __future__ import annotations

import json
from typing import Any

from sealroom.attestation.snp.abi import (
    REPORT_SIZE,
    GuestPolicy,
    PlatformInfo,
    Report,
    SigningKey,
    TcbVersion,
)
from sealroom.errors import MalformedEvidenceError


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


def decode_hex_report(data: bytes) -> bytes | None:
    text = data.strip()
    if len(text) != 2 * REPORT_SIZE:
        return None
    try:
        return bytes.fromhex(text.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        return None

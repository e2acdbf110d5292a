"""File formats that carry NVIDIA SPDM evidence, turned into evidence items.

1. ASCII hex of request || response (NVIDIA's ``hopperAttestationReport.txt``); the item's
   data is the decoded bytes, the certificate chain comes separately (attachments ``cert``,
   ``cert.1``... from ``--certs``, or ``cert_chain``).
2. The same as raw bytes (starts 0x11 0xE0: SPDM 1.1 GET_MEASUREMENTS).
3. nvtrust's multi-device JSON list ``[{arch, certificate, evidence, nonce,
   driver_version, vbios_version, version}]`` (certificate = base64 of a PEM chain,
   evidence = base64 of request || response). One item per entry, named gpu0..gpuN or
   switch0..switchN by the declared arch. The chain becomes attachment ``cert_chain``;
   the presenter's declared fields become ``declared.*`` attachments, which verification
   compares with the signed evidence (they are never trusted on their own).
4. The sealroom envelope (``sealroom-evidence/v1``) with ``kind: nvidia`` items.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any

from sealroom.attestation.evidence import (
    EvidenceBundle,
    EvidenceItem,
    is_envelope,
    parse_envelope,
)
from sealroom.attestation.nvidia.abi import GET_MEASUREMENTS, SPDM_VERSION_1_1, parse_evidence
from sealroom.errors import MalformedEvidenceError

KIND_NAME = "nvidia"
ATT_CERT_CHAIN = "cert_chain"
ATT_CERT = "cert"
DECLARED_PREFIX = "declared."
DECLARED_FIELDS = ("arch", "nonce", "driver_version", "vbios_version")
# Declared arch -> submodule base name; anything not listed is a GPU.
_SWITCH_ARCHS = frozenset({"LS10"})
_MIN_EVIDENCE = 37 + 8 + 32 + 2
_HEX = re.compile(rb"[0-9a-fA-F]+")
_MAGIC = bytes([SPDM_VERSION_1_1, GET_MEASUREMENTS])


def _compact(data: bytes) -> bytes:
    return b"".join(data.split())


def _looks_hex(data: bytes) -> bool:
    s = _compact(data)
    return (
        len(s) >= 2 * _MIN_EVIDENCE
        and len(s) % 2 == 0
        and s[:4].lower() == _MAGIC.hex().encode()
        and _HEX.fullmatch(s) is not None
    )


def _looks_json(data: bytes) -> bool:
    """nvtrust's shape: an object, or a non-empty list of objects, with top-level keys
    "evidence" and "certificate" (other kinds' JSON may mention those words elsewhere)."""
    head = data.lstrip()[:1]
    if head not in (b"[", b"{") or b'"evidence"' not in data or b'"certificate"' not in data:
        return False
    try:
        obj = json.loads(data)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return False
    entries = obj if isinstance(obj, list) else [obj]
    return bool(entries) and all(
        isinstance(e, dict) and "evidence" in e and "certificate" in e for e in entries
    )


def sniff(data: bytes) -> bool:
    if data.startswith(_MAGIC) and len(data) >= _MIN_EVIDENCE:
        return True
    return _looks_hex(data) or (not is_envelope(data) and _looks_json(data))


def _str(entry: dict[str, Any], key: str, where: str, required: bool = False) -> str | None:
    value = entry.get(key)
    if value is None:
        if required:
            raise MalformedEvidenceError(f"{where}.{key} is missing")
        return None
    if not isinstance(value, str):
        raise MalformedEvidenceError(f"{where}.{key} must be a string, got {type(value).__name__}")
    return value


def _b64(value: str, where: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as e:
        raise MalformedEvidenceError(f"{where} is not valid base64: {e}") from e


def _load_json(data: bytes) -> EvidenceBundle:
    try:
        obj = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise MalformedEvidenceError(f"NVIDIA evidence JSON does not parse: {e}") from e
    entries = obj if isinstance(obj, list) else [obj]
    if not entries:
        raise MalformedEvidenceError("NVIDIA evidence JSON list is empty")
    items: list[EvidenceItem] = []
    counters = {"gpu": 0, "switch": 0}
    for n, entry in enumerate(entries):
        where = f"evidence[{n}]"
        if not isinstance(entry, dict):
            raise MalformedEvidenceError(f"{where} must be an object, got {type(entry).__name__}")
        evidence_b64 = _str(entry, "evidence", where, required=True)
        cert_b64 = _str(entry, "certificate", where, required=True)
        assert evidence_b64 is not None
        assert cert_b64 is not None
        evidence = _b64(evidence_b64, f"{where}.evidence")
        chain = _b64(cert_b64, f"{where}.certificate")
        parse_evidence(evidence)
        attachments = {ATT_CERT_CHAIN: chain}
        for key in DECLARED_FIELDS:
            value = _str(entry, key, where)
            if value is None:
                continue
            if key == "nonce":
                try:
                    attachments[DECLARED_PREFIX + key] = bytes.fromhex(value)
                except ValueError as e:
                    raise MalformedEvidenceError(f"{where}.nonce is not hex: {value!r}") from e
            else:
                attachments[DECLARED_PREFIX + key] = value.encode()
        arch = (_str(entry, "arch", where) or "").upper()
        base = "switch" if arch in _SWITCH_ARCHS else "gpu"
        name = f"{base}{counters[base]}"
        counters[base] += 1
        items.append(EvidenceItem(KIND_NAME, evidence, attachments, name))
    return EvidenceBundle(tuple(items))


def load(data: bytes) -> EvidenceBundle:
    """Any of the formats above; parse errors are MalformedEvidenceError."""
    if is_envelope(data):
        bundle = parse_envelope(data)
        for i, item in enumerate(bundle.items):
            if item.kind != KIND_NAME:
                raise MalformedEvidenceError(
                    f"items[{i}].kind is {item.kind!r}, expected {KIND_NAME!r}"
                )
            parse_evidence(item.data)
        return bundle
    if data.startswith(_MAGIC):
        parse_evidence(data)
        return EvidenceBundle.single(EvidenceItem(KIND_NAME, bytes(data)))
    if _looks_hex(data):
        raw = bytes.fromhex(_compact(data).decode("ascii"))
        parse_evidence(raw)
        return EvidenceBundle.single(EvidenceItem(KIND_NAME, raw))
    if data.lstrip()[:1] in (b"[", b"{"):
        return _load_json(data)
    raise MalformedEvidenceError(
        f"not NVIDIA SPDM evidence: expected hex or raw GET_MEASUREMENTS (11e0...), an "
        f"nvtrust evidence JSON list or a sealroom envelope; starts {data[:8].hex() or '(empty)'}"
    )

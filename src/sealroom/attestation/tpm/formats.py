"""TPM evidence formats -> one normalised form (:class:`TpmEvidence`).

The ``tpm`` evidence item takes one of three shapes:

* **sealroom / tpm2-tools**: ``data`` = TPMS_ATTEST (``tpm2_quote -m``); attachments
  ``signature`` (TPMT_SIGNATURE, ``tpm2_quote -s``), ``pcrs`` (JSON, below), ``ak_pub``
  (the AK the evidence carries: TPMT_PUBLIC/TPM2B_PUBLIC or SPKI), ``ak_cert``,
  ``eventlog`` (raw TCG log);
* **go-tpm-tools** ``attest.Attestation`` protobuf (GCE): ``data`` = the protobuf;
* **Trustee** ``tpm_evidence.json``: turned into the first shape by ``load``.

Every shape also takes ``ak`` (an AK the presenter names: PEM/DER SPKI, TPMT_PUBLIC or
TPM2B_PUBLIC; a claim like ``ak_pub``, never a pin: pins are the verifier's
``VerifyContext.ak_pins``) and ``cert``, ``cert.1``, ... (intermediate certificates for
the AK certificate). PCR values JSON: ``{"sha256": {"0": "<hex>", "7": "<hex>"}, "sha1": {...}}``
(a bank may also be a list, index = position).
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from sealroom.attestation.evidence import EvidenceItem
from sealroom.attestation.tpm.abi import (
    HASH_BY_NAME,
    HASH_SIZES,
    TPM_GENERATED_VALUE,
    Alg,
    Attest,
    Public,
    Signature,
    digest,
    hash_name,
    parse_attest,
    parse_public_area,
    parse_signature,
)
from sealroom.attestation.tpm.gce import (
    GceInstanceInfo,
    looks_like_gce_attestation,
    parse_gce_attestation,
)
from sealroom.errors import MalformedEvidenceError

MAGIC = TPM_GENERATED_VALUE.to_bytes(4, "big")
MAX_PCR_INDEX = 31

PcrBanks = dict[int, dict[int, bytes]]  # hash alg -> PCR index -> value


@dataclass(frozen=True)
class TpmEvidence:
    format: str
    quotes: tuple[tuple[Attest, Signature], ...]
    #: PCR values supplied for each quote (same order as ``quotes``).
    pcrs: tuple[PcrBanks, ...]
    ak_pub: bytes | None = None
    ak_cert: bytes | None = None
    intermediates: tuple[bytes, ...] = field(default=())
    event_log: bytes | None = None
    gce_instance: GceInstanceInfo | None = None


@dataclass(frozen=True)
class AkKey:
    """An attestation key: the public key and, where known, its TPMT_PUBLIC."""

    key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey
    public: Public | None = None

    @functools.cached_property
    def spki(self) -> bytes:
        return self.key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    @functools.cached_property
    def fingerprint(self) -> str:
        """SHA-256 of the DER SubjectPublicKeyInfo, lowercase hex."""
        return digest(Alg.SHA256, self.spki).hex()

    @functools.cached_property
    def algorithm(self) -> str:
        if isinstance(self.key, rsa.RSAPublicKey):
            return f"rsa-{self.key.key_size}"
        return f"ecc-p{self.key.curve.key_size}"


def load_ak(data: bytes, what: str) -> AkKey:
    """A PEM or DER SubjectPublicKeyInfo, a TPMT_PUBLIC or a TPM2B_PUBLIC."""
    try:
        return _load_ak_cached(bytes(data))
    except MalformedEvidenceError as e:
        raise MalformedEvidenceError(f"{what}: {e.message}", code=e.code) from e


@functools.lru_cache(maxsize=256)
def _load_ak_cached(data: bytes) -> AkKey:
    """Keys are immutable and parsing is pure: repeated verification of one AK parses once."""
    what = "AK"
    stripped = data.strip()
    try:
        if stripped.startswith(b"-----BEGIN"):
            key = serialization.load_pem_public_key(stripped)
        elif stripped.startswith(b"\x30"):
            key = serialization.load_der_public_key(stripped)
        else:
            pub = parse_public_area(data)
            return AkKey(pub.public_key(), pub)
    except (ValueError, TypeError) as e:
        raise MalformedEvidenceError(
            f"{what} is not a public key (PEM/DER SPKI, TPMT_PUBLIC or TPM2B_PUBLIC): {e}",
            code="tpm-ak-invalid",
        ) from e
    if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        raise MalformedEvidenceError(
            f"{what} is a {type(key).__name__}, an AK must be RSA or ECC", code="tpm-ak-invalid"
        )
    return AkKey(key)


def _pcr_index(k: object, bank: str) -> int:
    if isinstance(k, int) and not isinstance(k, bool):
        idx = k
    elif isinstance(k, str) and 0 < len(k) <= 2 and k.isascii() and k.isdigit():
        idx = int(k)
    else:
        raise MalformedEvidenceError(f"pcrs.{bank}: PCR index {k!r} is not a number")
    if not 0 <= idx <= MAX_PCR_INDEX:
        raise MalformedEvidenceError(f"pcrs.{bank}: PCR index {idx} is not 0..{MAX_PCR_INDEX}")
    return idx


def _hex(v: object, where: str) -> bytes:
    if not isinstance(v, str):
        raise MalformedEvidenceError(f"{where} must be a hex string")
    try:
        return bytes.fromhex(v)
    except ValueError:
        pass
    try:
        return bytes.fromhex(v.strip().lower().removeprefix("0x"))
    except ValueError as e:
        raise MalformedEvidenceError(f"{where} is not hex: {v[:40]!r}") from e


def parse_pcrs_json(data: bytes) -> PcrBanks:
    """``{"sha256": {"0": "hex", ...}}`` (or a list per bank) -> {alg: {index: value}}."""
    try:
        obj = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise MalformedEvidenceError(
            f"PCR values are not JSON: {e}", code="tpm-pcrs-invalid"
        ) from e
    if not isinstance(obj, dict):
        raise MalformedEvidenceError(
            'PCR values must be a JSON object {"sha256": {"0": "<hex>", ...}}',
            code="tpm-pcrs-invalid",
        )
    out: PcrBanks = {}
    for bank, values in obj.items():
        alg = HASH_BY_NAME.get(str(bank).lower())
        if alg is None:
            raise MalformedEvidenceError(
                f"PCR values: unknown bank {bank!r} (known: {', '.join(HASH_BY_NAME)})",
                code="tpm-pcrs-invalid",
            )
        if isinstance(values, list):
            items: list[tuple[object, object]] = list(enumerate(values))
        elif isinstance(values, dict):
            items = list(values.items())
        else:
            raise MalformedEvidenceError(
                f"pcrs.{bank} must be an object or a list", code="tpm-pcrs-invalid"
            )
        bank_values: dict[int, bytes] = {}
        for k, v in items:
            idx = _pcr_index(k, bank)
            value = _hex(v, f"pcrs.{bank}[{idx}]")
            if len(value) != HASH_SIZES[alg]:
                raise MalformedEvidenceError(
                    f"pcrs.{bank}[{idx}] is {len(value)} bytes, a {bank} PCR is {HASH_SIZES[alg]}",
                    code="tpm-pcrs-invalid",
                )
            if idx in bank_values:
                raise MalformedEvidenceError(f"pcrs.{bank} lists PCR {idx} twice")
            bank_values[idx] = value
        out[alg] = bank_values
    return out


def pcrs_json(banks: Mapping[int, Mapping[int, bytes]]) -> bytes:
    return json.dumps(
        {hash_name(a): {str(i): v.hex() for i, v in sorted(b.items())} for a, b in banks.items()},
        indent=1,
    ).encode()


def pcrs_from_list(values: list[bytes], attest: Attest, what: str) -> PcrBanks:
    """A bare list of PCR values (index = position) for the single bank a quote selects."""
    banks = {s.hash_alg for s in attest.pcr_select}
    if len(banks) != 1:
        raise MalformedEvidenceError(
            f"{what}: a PCR value list needs a quote over exactly one bank, this one selects "
            f"{', '.join(hash_name(b) for b in banks) or 'none'}",
            code="tpm-pcrs-invalid",
        )
    alg = banks.pop()
    if len(values) > MAX_PCR_INDEX + 1:
        raise MalformedEvidenceError(f"{what}: {len(values)} PCR values, at most 32 allowed")
    for i, v in enumerate(values):
        if len(v) != HASH_SIZES[alg]:
            raise MalformedEvidenceError(
                f"{what}: PCR {i} is {len(v)} bytes, a {hash_name(alg)} PCR is {HASH_SIZES[alg]}",
                code="tpm-pcrs-invalid",
            )
    return {alg: dict(enumerate(values))}


def cert_attachments(attachments: Mapping[str, bytes]) -> list[bytes]:
    """``cert``, ``cert.1``, ``cert.2``, ... in that order."""
    names = [n for n in attachments if n == "cert" or re.fullmatch(r"cert\.[0-9]+", n)]
    names.sort(key=lambda n: 0 if n == "cert" else int(n.split(".")[1]))
    return [attachments[n] for n in names]


def _b64(v: object, where: str) -> bytes:
    if not isinstance(v, str):
        raise MalformedEvidenceError(f"{where} must be a base64 string")
    s = v.strip()
    try:
        if "-" in s or "_" in s:
            return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))
        return base64.b64decode(s + "=" * (-len(s) % 4), validate=True)
    except (binascii.Error, ValueError) as e:
        raise MalformedEvidenceError(f"{where} is not base64: {e}") from e


def _json_obj(data: bytes) -> dict[str, Any] | None:
    if not data.lstrip().startswith(b"{"):
        return None
    try:
        obj = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return obj if isinstance(obj, dict) else None


def looks_like_trustee_tpm(data: bytes) -> bool:
    obj = _json_obj(data)
    return obj is not None and "ak_public" in obj and isinstance(obj.get("tpm_quote"), dict)


def load_trustee_tpm(data: bytes) -> EvidenceItem:
    """Trustee ``{ak_public, tpm_quote: {message, signature, pcrs}}`` -> a ``tpm`` item."""
    obj = _json_obj(data)
    if obj is None or not isinstance(obj.get("tpm_quote"), dict):
        raise MalformedEvidenceError("not Trustee TPM evidence JSON {ak_public, tpm_quote}")
    q = obj["tpm_quote"]
    message = _b64(q.get("message"), "tpm_quote.message")
    signature = _b64(q.get("signature"), "tpm_quote.signature")
    raw_pcrs = q.get("pcrs")
    if not isinstance(raw_pcrs, list):
        raise MalformedEvidenceError("tpm_quote.pcrs must be a list of hex strings")
    attest = parse_attest(message)
    parse_signature(signature)
    values = [_hex(v, f"tpm_quote.pcrs[{i}]") for i, v in enumerate(raw_pcrs)]
    pcrs = pcrs_from_list(values, attest, "tpm_quote.pcrs")
    ak = _b64(obj.get("ak_public"), "ak_public")
    load_ak(ak, "ak_public")
    return EvidenceItem(
        kind="tpm",
        data=message,
        attachments={"signature": signature, "pcrs": pcrs_json(pcrs), "ak_pub": ak},
    )


def decode_tpm_item(item: EvidenceItem, *, require_signature: bool = True) -> TpmEvidence:
    """Any accepted shape of a ``tpm`` item -> TpmEvidence (parse only, no checks).

    ``require_signature=False`` (inspect) accepts a bare TPMS_ATTEST; its signature is then
    recorded as algorithm "null".
    """
    data = item.data
    att = item.attachments
    extra_certs = tuple(cert_attachments(att))
    if data.startswith(MAGIC):
        attest = parse_attest(data)
        sig_raw = att.get("signature")
        if sig_raw is None and not require_signature:
            sig = Signature(Alg.NULL, Alg.NULL)
        elif sig_raw is None:
            raise MalformedEvidenceError(
                "TPM quote has no 'signature' attachment (TPMT_SIGNATURE, tpm2_quote -s)",
                code="tpm-signature-missing",
            )
        else:
            sig = parse_signature(sig_raw)
        pcrs = parse_pcrs_json(att["pcrs"]) if "pcrs" in att else {}
        return TpmEvidence(
            format="tpms-attest",
            quotes=((attest, sig),),
            pcrs=(pcrs,),
            ak_pub=att.get("ak_pub"),
            ak_cert=att.get("ak_cert"),
            intermediates=extra_certs,
            event_log=att.get("eventlog"),
        )
    if looks_like_trustee_tpm(data):
        inner = load_trustee_tpm(data)
        ev = decode_tpm_item(inner.with_attachments(att))
        return TpmEvidence(
            "trustee-tpm", ev.quotes, ev.pcrs, ev.ak_pub, ev.ak_cert, ev.intermediates,
            ev.event_log,
        )  # fmt: skip
    if looks_like_gce_attestation(data):
        g = parse_gce_attestation(data)
        quotes = tuple((parse_attest(q.attest), parse_signature(q.signature)) for q in g.quotes)
        gce_pcrs = tuple({q.pcr_hash: dict(q.pcrs)} for q in g.quotes)
        return TpmEvidence(
            format="gce-attestation",
            quotes=quotes,
            pcrs=gce_pcrs,
            ak_pub=g.ak_pub,
            ak_cert=g.ak_cert or att.get("ak_cert"),
            intermediates=g.intermediate_certs + extra_certs,
            event_log=g.event_log or att.get("eventlog"),
            gce_instance=g.instance_info,
        )
    raise MalformedEvidenceError(
        f"not TPM evidence: {len(data)} bytes starting {data[:8].hex() or '(empty)'} "
        f"(expected a TPMS_ATTEST starting {MAGIC.hex()}, a go-tpm-tools Attestation "
        "protobuf, or Trustee TPM JSON)",
        code="tpm-format-unknown",
    )

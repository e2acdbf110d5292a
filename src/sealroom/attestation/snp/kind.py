"""The ``snp`` evidence kind: AMD SEV-SNP reports (and sim reports, same layout)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel

from sealroom.attestation.appraise import RuleResult
from sealroom.attestation.claims import Claims
from sealroom.attestation.evidence import EvidenceBundle, EvidenceItem
from sealroom.attestation.kinds import VerifyContext
from sealroom.attestation.snp.abi import REPORT_SIZE, SUPPORTED_VERSIONS, parse_report
from sealroom.attestation.snp.certs import vek_info
from sealroom.attestation.snp.claims import SnpClaims, claims_from_report
from sealroom.attestation.snp.foreign import (
    decode_text_report,
    load_virtee_json,
    looks_like_virtee_json,
)
from sealroom.attestation.snp.policy import STARTER, SnpPolicy, appraise_snp
from sealroom.attestation.snp.verify import _choose_product, collect_certs, verify_report
from sealroom.errors import MalformedEvidenceError


def _report_prefix(data: bytes | None) -> bytes | None:
    """``data`` when it is longer than one report and its first 0x4A0 bytes parse as one
    (a report followed by a tool's header or padding); None otherwise."""
    if data is None or len(data) <= REPORT_SIZE:
        return None
    try:
        parse_report(data[:REPORT_SIZE])
    except MalformedEvidenceError:
        return None
    return data


class SnpKind:
    name: ClassVar[str] = "snp"
    default_submod: ClassVar[str] = "cpu0"
    policy_model: ClassVar[type[BaseModel]] = SnpPolicy

    def sniff(self, data: bytes) -> bool:
        if len(data) == REPORT_SIZE:
            return int.from_bytes(data[:4], "little") in SUPPORTED_VERSIONS
        if _report_prefix(data) is not None or decode_text_report(data) is not None:
            return True
        return looks_like_virtee_json(data)

    def load(self, data: bytes) -> EvidenceBundle:
        attachments: dict[str, bytes] = {}
        if len(data) == REPORT_SIZE or _report_prefix(data) is not None:
            raw = data
        elif (decoded := decode_text_report(data)) is not None:
            raw = decoded
        elif looks_like_virtee_json(data):
            raw, attachments = load_virtee_json(data)
        else:
            raise MalformedEvidenceError(
                f"not an SNP report: {len(data)} bytes (expected {REPORT_SIZE} raw, optionally "
                "followed by other bytes, hex or base64 text of it, or virtee/Trustee JSON)"
            )
        parse_report(raw, trailing_ok=True)  # fail early, with the parser's message
        return EvidenceBundle.single(EvidenceItem(kind="snp", data=raw, attachments=attachments))

    def inspect(self, item: EvidenceItem) -> Claims:
        report = parse_report(item.data, trailing_ok=True)
        certs = collect_certs(item.attachments)
        info = vek_info(certs.veks[0]) if len(certs.veks) == 1 else None
        try:
            product = _choose_product(report, info, None)
        except Exception:  # inspect never judges; a mismatch shows up in verify
            product = report.cpuid_product
        return claims_from_report(report, product, verified=False, simulated=False)

    def verify(self, item: EvidenceItem, ctx: VerifyContext) -> Claims:
        report = parse_report(item.data, trailing_ok=True)
        return verify_report(report, collect_certs(item.attachments), ctx)

    def appraise(self, claims: Claims, section: BaseModel, ctx: VerifyContext) -> list[RuleResult]:
        if not isinstance(claims, SnpClaims) or not isinstance(section, SnpPolicy):
            raise TypeError("snp appraisal needs SnpClaims and SnpPolicy")
        return appraise_snp(claims, section, ctx)

    def starter_policy(self) -> str:
        return STARTER


KIND = SnpKind()

"""The ``tdx`` and ``sgx`` evidence kinds: Intel DCAP ECDSA quotes.

``tdx``: quote v4/v5 with TEE_TYPE 0x81. ``sgx``: quote v3 (TEE_TYPE 0). Both accept a raw
quote or its ASCII hex. Collateral travels as attachments (``collateral``: a dcap-qvl
JSON file or a PCS response; ``tcb_info``, ``qe_identity``, ``pck_crl``, ``root_ca_crl``;
``cert*``: issuer chains such as the Intel SGX TCB Signing certificate) or comes from
``ctx.collateral`` (e.g. ``DirectoryCollateral``).
"""

from __future__ import annotations

import binascii
import struct
from typing import ClassVar

from pydantic import BaseModel

from sealroom.attestation.appraise import RuleResult
from sealroom.attestation.claims import Claims
from sealroom.attestation.collateral import seen_by_verifier
from sealroom.attestation.evidence import EvidenceBundle, EvidenceItem
from sealroom.attestation.kinds import VerifyContext
from sealroom.attestation.tdx import collateral as coll
from sealroom.attestation.tdx.abi import (
    CERT_DATA_PCK_CHAIN,
    HEADER_SIZE,
    INTEL_QE_VENDOR_ID,
    TEE_TYPE_SGX,
    TEE_TYPE_TDX,
    Quote,
)
from sealroom.attestation.tdx.claims import CheckState, SgxClaims, TdxClaims, sgx_claims, tdx_claims
from sealroom.attestation.tdx.policy import (
    SGX_STARTER,
    TDX_STARTER,
    SgxPolicy,
    TdxPolicy,
    appraise_sgx,
    appraise_tdx,
)
from sealroom.attestation.tdx.tcb import TcbStatus
from sealroom.attestation.tdx.verify import (
    VerifiedQuote,
    inspect_pck_chain,
    root_fingerprint,
    verify_quote,
)
from sealroom.errors import MalformedEvidenceError, SealroomError

_HEX = frozenset(b"0123456789abcdefABCDEF")


def _decode(data: bytes) -> bytes:
    """Raw quote bytes from a raw or ASCII-hex file."""
    stripped = b"".join(data.split())
    if len(stripped) >= 2 * HEADER_SIZE and not set(stripped) - _HEX and len(stripped) % 2 == 0:
        try:
            return binascii.unhexlify(stripped)
        except binascii.Error:  # pragma: no cover - guarded by the character check
            return data
    return data


def _looks_like(data: bytes, versions: tuple[int, ...], tee: int) -> bool:
    if len(data) < HEADER_SIZE:
        return False
    version, _akt, tee_type = struct.unpack_from("<HHI", data, 0)
    return version in versions and tee_type == tee and data[12:28] == INTEL_QE_VENDOR_ID


def _check_state(v: VerifiedQuote) -> CheckState:
    t = v.tcb
    return CheckState(
        verified=True,
        simulated=not v.vendor_rooted,
        vendor_rooted=v.vendor_rooted,
        root_ca=root_fingerprint(v.root_der),
        pck=v.pck,
        pck_issuer=v.pck_issuer,
        tcb_status=t.status,
        advisory_ids=t.advisory_ids,
        platform_tcb_status=t.platform.status,
        qe_identity_status=t.qe.status,
        tdx_module_status=t.module.status if t.module is not None else None,
        tcb_detail=t.detail,
        tcb_date=t.tcb_date,
        tcb_evaluation_data_number=t.evaluation_data_number,
        collateral=v.collateral_items,
        crl_checked=v.crl_checked,
        collateral_expiry=v.collateral_expiry,
    )


def _inspect_state(quote: Quote) -> CheckState:
    """Best effort: the PCK certificate's FMSPC etc. when it parses; never judges."""
    cd = quote.signature_data.qe.pck_cert_data
    if cd.cert_type != CERT_DATA_PCK_CHAIN:
        return CheckState.parsed_only(None, None)
    try:
        pck, issuer = inspect_pck_chain(cd.data)
    except SealroomError:
        return CheckState.parsed_only(None, None)
    return CheckState.parsed_only(pck, issuer)


class _DcapKind:
    name: ClassVar[str]
    default_submod: ClassVar[str] = "cpu0"
    _versions: ClassVar[tuple[int, ...]]
    _tee: ClassVar[int]

    def sniff(self, data: bytes) -> bool:
        return _looks_like(_decode(data), self._versions, self._tee)

    def load(self, data: bytes) -> EvidenceBundle:
        raw = _decode(data)
        if not _looks_like(raw, self._versions, self._tee):
            raise MalformedEvidenceError(
                f"not an Intel {self.name.upper()} quote: {len(data)} bytes starting "
                f"{raw[:8].hex() or '(empty)'} (expected quote version "
                f"{'/'.join(map(str, self._versions))}, Intel QE vendor ID)",
                code="tdx-quote-unrecognised",
            )
        Quote.from_bytes(raw)  # fail early, with the parser's message
        return EvidenceBundle.single(EvidenceItem(kind=self.name, data=raw))

    def _verify(self, item: EvidenceItem, ctx: VerifyContext) -> tuple[Quote, CheckState]:
        # The TEE type is checked before any signature work.
        quote = self._parse(item)
        v = verify_quote(
            quote,
            now=ctx.now,
            attached=coll.from_attachments(item.attachments),
            source=ctx.collateral,
            extra_roots=ctx.extra_roots,
            verifier=coll.from_attachments(ctx.verifier_collateral),
            seen=lambda series: seen_by_verifier(ctx.collateral, ctx.collateral_history, series),
            observe=ctx.collateral_history.observe if ctx.collateral_history else None,
        )
        return v.quote, _check_state(v)

    def _check_tee(self, quote: Quote) -> None:
        if int(quote.tee_type) != self._tee:
            raise MalformedEvidenceError(
                f"evidence of kind {self.name!r} holds a {quote.tee_type.name} quote "
                f"(use kind {quote.tee_type.name.lower()!r})",
                code="tdx-quote-kind-mismatch",
            )

    def _parse(self, item: EvidenceItem) -> Quote:
        quote = Quote.from_bytes(item.data)
        self._check_tee(quote)
        return quote


class TdxKind(_DcapKind):
    name: ClassVar[str] = "tdx"
    policy_model: ClassVar[type[BaseModel]] = TdxPolicy
    _versions = (4, 5)
    _tee = TEE_TYPE_TDX

    def inspect(self, item: EvidenceItem) -> Claims:
        quote = self._parse(item)
        return tdx_claims(quote, _inspect_state(quote))

    def verify(self, item: EvidenceItem, ctx: VerifyContext) -> Claims:
        quote, state = self._verify(item, ctx)
        return tdx_claims(quote, state)

    def appraise(self, claims: Claims, section: BaseModel, ctx: VerifyContext) -> list[RuleResult]:
        if not isinstance(claims, TdxClaims) or not isinstance(section, TdxPolicy):
            raise TypeError("tdx appraisal needs TdxClaims and TdxPolicy")
        return appraise_tdx(claims, section, ctx)

    def starter_policy(self) -> str:
        return TDX_STARTER


class SgxKind(_DcapKind):
    name: ClassVar[str] = "sgx"
    policy_model: ClassVar[type[BaseModel]] = SgxPolicy
    _versions = (3,)
    _tee = TEE_TYPE_SGX

    def inspect(self, item: EvidenceItem) -> Claims:
        quote = self._parse(item)
        return sgx_claims(quote, _inspect_state(quote))

    def verify(self, item: EvidenceItem, ctx: VerifyContext) -> Claims:
        quote, state = self._verify(item, ctx)
        return sgx_claims(quote, state)

    def appraise(self, claims: Claims, section: BaseModel, ctx: VerifyContext) -> list[RuleResult]:
        if not isinstance(claims, SgxClaims) or not isinstance(section, SgxPolicy):
            raise TypeError("sgx appraisal needs SgxClaims and SgxPolicy")
        return appraise_sgx(claims, section, ctx)

    def starter_policy(self) -> str:
        return SGX_STARTER


KIND = TdxKind()
SGX_KIND = SgxKind()

__all__ = ["KIND", "SGX_KIND", "SgxKind", "TcbStatus", "TdxKind"]

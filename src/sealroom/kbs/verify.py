"""The verifier the key broker and the attestation service share, in-process.

Evidence goes through sealroom's attestation library unchanged (parse -> verify ->
appraise, every registered kind); this module only adds what a service needs around it:
turning Trustee ``tee-evidence`` into an evidence bundle, the key broker's runtime-data
binding rule, reference values (Trustee's RVPS) as extra rules, and the EAR.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from cryptography import x509

from sealroom.attestation import kinds
from sealroom.attestation.appraise import AppraisalResult, RuleResult, Trust
from sealroom.attestation.claims import to_jsonable
from sealroom.attestation.collateral import CollateralSource, NoCollateral
from sealroom.attestation.ear import VerifierKey, ear_claims, issue_ear
from sealroom.attestation.evidence import EvidenceBundle, is_envelope, parse_envelope
from sealroom.attestation.kinds import VerifyContext
from sealroom.attestation.policy import Policy
from sealroom.attestation.verifier import VerifiedItem, appraise, load_evidence, verify_bundle
from sealroom.errors import MalformedEvidenceError
from sealroom.kbs.protocol import REPORT_DATA_SIZE, regularize

#: Trustee TEE names that map onto a sealroom evidence kind of the same name.
TEE_TO_KIND = {t: t for t in ("snp", "tdx", "sgx", "az-snp-vtpm", "az-tdx-vtpm", "tpm", "nvidia")}


def bundle_from_tee_evidence(tee: str, primary_evidence: Any) -> EvidenceBundle:
    """Trustee ``primary_evidence`` (a JSON value) as an evidence bundle.

    A sealroom envelope (``{"format": "sealroom-evidence/v1", ...}``) is taken as is;
    anything else is read as the TEE's own format by the sealroom kind of the same name
    (Trustee's SNP JSON, a TDX quote, Azure vTPM JSON, ...)."""
    if tee not in TEE_TO_KIND:
        raise MalformedEvidenceError(
            f"tee {tee!r} has no sealroom verifier (supported: {sorted(TEE_TO_KIND)})",
            code="unsupported-tee",
        )
    raw = (
        primary_evidence.encode()
        if isinstance(primary_evidence, str)
        else json.dumps(primary_evidence).encode()
    )
    if is_envelope(raw):
        bundle = parse_envelope(raw)
        for item in bundle.items:
            if item.kind != TEE_TO_KIND[tee] and item is bundle.items[0]:
                raise MalformedEvidenceError(
                    f"the Request said tee {tee!r} but the primary evidence is {item.kind!r}",
                    code="tee-mismatch",
                )
        return bundle
    return load_evidence(raw, TEE_TO_KIND[tee])


def binding_rules(verified: list[VerifiedItem], digest: bytes) -> dict[str, list[RuleResult]]:
    """The KBS's own REPORT_DATA rule for the first (primary) item, whatever the policy.

    SNP/TDX/SGX: REPORT_DATA equals the runtime-data digest zero-padded or truncated to
    64 bytes (Trustee ``regularize_data``). TPM kinds: the quote's extraData equals the
    digest. Any other kind cannot carry the binding and fails the rule (fail closed)."""
    first = verified[0]
    claims = first.claims
    want: bytes | None
    got: bytes | None
    if hasattr(claims, "report_data"):
        got, want = claims.report_data, regularize(digest, REPORT_DATA_SIZE)
        fieldname = "REPORT_DATA"
    elif hasattr(claims, "extra_data"):
        got, want = claims.extra_data, digest
        fieldname = "extraData"
    else:
        got, want, fieldname = None, None, "runtime-data binding"
    passed = want is not None and got == want
    rule = RuleResult(
        f"kbs.{fieldname}",
        got.hex() if isinstance(got, bytes) else "(no report data field)",
        f"hash of the RFC 8785 runtime-data ({want.hex() if want else 'unsupported kind'})",
        passed,
        Trust.INSTANCE_IDENTITY,
        binds_nonce=True,
    )
    return {first.name: [rule]}


def reference_value_rules(
    verified: list[VerifiedItem], refs: Mapping[str, Any], expired: Mapping[str, datetime]
) -> dict[str, list[RuleResult]]:
    """Reference values (RVPS-like): ``"<kind>.<claim path>"`` -> ``{"allowed": [..]}`` or
    ``{"min": n}``; every item of that kind must satisfy each. An expired value fails its
    rule (never silently dropped)."""
    out: dict[str, list[RuleResult]] = {}
    names = set(refs) | set(expired)
    if not names:
        return out
    for v in verified:
        claims = to_jsonable(v.claims)
        for name in sorted(names):
            kind, _, path = name.partition(".")
            if kind != v.item.kind or not path:
                continue
            got: Any = claims
            for part in path.split("."):
                got = got.get(part) if isinstance(got, dict) else None
            if name in expired:
                rule = RuleResult(
                    f"reference.{path}",
                    str(got),
                    f"reference value expired {expired[name]}",
                    False,
                    Trust.EXECUTABLES,
                )
            else:
                spec = refs[name]
                if isinstance(spec, dict) and "min" in spec:
                    ok = isinstance(got, int) and got >= int(spec["min"])
                    want = f">= {spec['min']}"
                else:
                    allowed = spec.get("allowed", []) if isinstance(spec, dict) else spec
                    ok = got in allowed
                    want = f"one of {allowed}"
                rule = RuleResult(f"reference.{path}", str(got), want, ok, Trust.EXECUTABLES)
            out.setdefault(v.name, []).append(rule)
    return out


@functools.lru_cache(maxsize=64)
def parse_policy(text: str, source: str) -> Policy:
    """A stored policy's text, parsed once. The services read their policies from the shared
    store on every request (so every replica sees an update at once); parsing the same YAML
    again each time cost more than verifying an SNP report. Policies are immutable."""
    return Policy.loads(text, source=source)


@dataclass
class Verifier:
    """Verifier-owned trust inputs (ADR 0020): roots, collateral, the clock and the EAR key."""

    key: VerifierKey
    extra_roots: tuple[x509.Certificate, ...] = ()
    collateral: CollateralSource = field(default_factory=NoCollateral)
    clock: Callable[[], datetime] | None = None
    ear_ttl: timedelta = timedelta(minutes=5)

    def now(self) -> datetime:
        if self.clock is not None:
            return self.clock()
        from datetime import UTC

        return datetime.now(UTC)

    def appraise(
        self,
        bundle: EvidenceBundle,
        policy: Policy,
        *,
        now: datetime,
        runtime_digest: bytes | None = None,
        nonce: bytes | None = None,
        refs: Mapping[str, Any] | None = None,
        expired_refs: Mapping[str, datetime] | None = None,
    ) -> AppraisalResult:
        ctx = VerifyContext(
            now=now, collateral=self.collateral, nonce=nonce, extra_roots=self.extra_roots
        )
        verified = verify_bundle(bundle, ctx)
        extra: dict[str, list[RuleResult]] = {}
        if runtime_digest is not None:
            for k, rules in binding_rules(verified, runtime_digest).items():
                extra.setdefault(k, []).extend(rules)
        for k, rules in reference_value_rules(verified, refs or {}, expired_refs or {}).items():
            extra.setdefault(k, []).extend(rules)
        return appraise(verified, policy, ctx, caller_rules=extra)

    def ear(self, result: AppraisalResult, *, now: datetime, nonce: bytes | None = None) -> str:
        return issue_ear(result, self.key, now=now, ttl=self.ear_ttl, nonce=nonce)

    def ear_claims(
        self, result: AppraisalResult, *, now: datetime, nonce: bytes | None = None
    ) -> dict[str, Any]:
        return ear_claims(result, now=now, ttl=self.ear_ttl, nonce=nonce)


def known_kinds() -> list[str]:
    return kinds.names()

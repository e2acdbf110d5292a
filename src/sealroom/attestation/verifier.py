"""The facade: parse -> verify -> appraise, for a bundle of evidence under one policy.

Verification is all-or-nothing per item: evidence that is not authentic raises
(AttestationError, exit 2) before any policy is consulted. Appraisal then evaluates every
rule of every submodule and returns them all; the caller decides whether to
``require_ok()``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sealroom.attestation import kinds
from sealroom.attestation.appraise import AppraisalResult, RuleResult, Rules, SubmodResult, Trust
from sealroom.attestation.claims import Claims
from sealroom.attestation.evidence import EvidenceBundle, EvidenceItem, is_envelope, parse_envelope
from sealroom.attestation.kinds import VerifyContext
from sealroom.attestation.policy import Policy
from sealroom.errors import InvalidInputError


@dataclass(frozen=True)
class VerifiedItem:
    name: str
    item: EvidenceItem
    claims: Claims


def load_evidence(data: bytes, kind: str | None = None) -> EvidenceBundle:
    """Recognise a file: the sealroom envelope, or any format a registered kind accepts."""
    if kind is None and is_envelope(data):
        return parse_envelope(data)
    k = kinds.get(kind) if kind is not None else kinds.sniff(data)
    return k.load(data)


def _submod_names(bundle: EvidenceBundle) -> list[str]:
    names: list[str] = []
    counters: dict[str, int] = {}
    for item in bundle.items:
        if item.name is not None:
            name = item.name
        else:
            base = kinds.get(item.kind).default_submod.rstrip("0123456789")
            n = counters.get(base, 0)
            counters[base] = n + 1
            name = f"{base}{n}"
        if name in names:
            raise InvalidInputError(f"evidence bundle names submodule {name!r} twice")
        names.append(name)
    return names


def verify_bundle(bundle: EvidenceBundle, ctx: VerifyContext) -> list[VerifiedItem]:
    """Authenticity only: every item's signatures and chains. Raises on the first failure."""
    return [
        VerifiedItem(name, item, kinds.get(item.kind).verify(item, ctx))
        for name, item in zip(_submod_names(bundle), bundle.items, strict=True)
    ]


def appraise(
    verified: list[VerifiedItem],
    policy: Policy,
    ctx: VerifyContext,
    *,
    caller_rules: Mapping[str, Sequence[RuleResult]] | None = None,
) -> AppraisalResult:
    """Pure: every rule of ``policy`` against every verified item.

    ``caller_rules``: rules the caller checked itself, by submodule (a sealroom client's
    mandatory REPORT_DATA binding); they are reported with the policy's rules.

    A nonce the verifier gave (``ctx.nonce``) must be bound by a rule of every item:
    otherwise the policy does not check it and the verification is refused (bad input),
    never reported as fresh. Without a nonce each submodule says freshness "not-checked".
    """
    bundle_rules = Rules()
    present = [v.item.kind for v in verified]
    for req in policy.require:
        bundle_rules.add(
            f"require.{req}",
            present,
            f"a {req} evidence item",
            req in present,
            Trust.INSTANCE_IDENTITY,
        )
    submods = []
    for v in verified:
        rules = Rules()
        rules.flag("simulated", v.claims.simulated, policy.allow_simulated, Trust.HARDWARE)
        if policy.max_evidence_age is not None:
            collected = v.item.collected_at
            if collected is None:
                rules.add(
                    "evidence_age",
                    None,
                    f"<= {policy.max_evidence_age}s (evidence carries no collected_at)",
                    False,
                    Trust.INSTANCE_IDENTITY,
                )
            else:
                age = int((ctx.now - collected).total_seconds())
                rules.add(
                    "evidence_age",
                    f"{age}s",
                    f"<= {policy.max_evidence_age}s",
                    -60 <= age <= policy.max_evidence_age,
                    Trust.INSTANCE_IDENTITY,
                )
        section = policy.sections.get(v.item.kind)
        if section is not None:
            rules.extend(kinds.get(v.item.kind).appraise(v.claims, section, ctx))
        elif not policy.unsafe:
            rules.add(
                "kind",
                v.item.kind,
                f"one of {sorted(policy.sections)}",
                False,
                Trust.INSTANCE_IDENTITY,
            )
        rules.extend((caller_rules or {}).get(v.name, ()))
        named = tuple(dataclasses.replace(r, submod=v.name) for r in rules.results)
        judged = section is not None or policy.unsafe  # else the "kind" rule rejects it
        if ctx.nonce is not None and judged and not any(r.binds_nonce for r in named):
            raise InvalidInputError(
                f"a nonce was given ({ctx.nonce.hex()}), but policy {policy.id!r} does not "
                f"bind a nonce for {v.name} ({v.item.kind} evidence): no rule would check it. "
                f"Set the {v.item.kind} section's nonce rule (report_data/extra_data "
                "mode: nonce or sealroom-v1), or verify without --nonce (the result then says "
                "freshness was not checked)",
                code="nonce-not-bound",
            )
        submods.append(SubmodResult(v.name, v.claims, named))
    return AppraisalResult(policy.id, tuple(submods), tuple(bundle_rules.results))


def verify_and_appraise(
    bundle: EvidenceBundle, policy: Policy, ctx: VerifyContext
) -> AppraisalResult:
    return appraise(verify_bundle(bundle, ctx), policy, ctx)

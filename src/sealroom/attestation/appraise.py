"""Appraisal results: every rule evaluated, every result kept.

Appraisal is pure: claims + policy in, a result out. A kind's appraiser returns a list
of :class:`RuleResult`; the facade collects them per submodule. ``require_ok()`` raises
:class:`~sealroom.errors.PolicyViolationError` naming every failed rule.

Each rule names the AR4SI trustworthiness claim it bears on (draft-ietf-rats-ar4si
section 2.3), so the EAR token's trust vector is derived from the same results.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sealroom.attestation.claims import Claims
from sealroom.errors import PolicyViolationError


class Trust(enum.StrEnum):
    """AR4SI trustworthiness-vector claim names."""

    INSTANCE_IDENTITY = "instance-identity"
    CONFIGURATION = "configuration"
    EXECUTABLES = "executables"
    FILE_SYSTEM = "file-system"
    HARDWARE = "hardware"
    RUNTIME_OPAQUE = "runtime-opaque"
    STORAGE_OPAQUE = "storage-opaque"
    SOURCED_DATA = "sourced-data"


def _fmt(value: Any) -> str:
    if isinstance(value, bytes):
        return value.hex() if value else "(empty)"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list | tuple | frozenset | set):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    if value is None:
        return "(absent)"
    return str(value)


@dataclass(frozen=True)
class RuleResult:
    field: str
    got: str
    want: str
    passed: bool
    trust: Trust = Trust.CONFIGURATION
    submod: str = ""
    #: This rule compared the evidence with the verifier's nonce: the evidence is fresh
    #: (if it passed). A submodule with no such rule was not checked for freshness.
    binds_nonce: bool = False

    def describe(self) -> str:
        where = f"{self.submod}: " if self.submod else ""
        verdict = "ok" if self.passed else "FAIL"
        return f"{where}{self.field} is {self.got}, policy wants {self.want} [{verdict}]"

    def to_dict(self) -> dict[str, Any]:
        return {
            "submod": self.submod,
            "field": self.field,
            "got": self.got,
            "want": self.want,
            "pass": self.passed,
            "trust": self.trust.value,
        }


@dataclass(frozen=True)
class SubmodResult:
    name: str
    claims: Claims
    rules: tuple[RuleResult, ...]

    @property
    def ok(self) -> bool:
        return all(r.passed for r in self.rules)

    @property
    def freshness(self) -> str:
        """``nonce``: a rule bound the verifier's nonce; ``not-checked``: nothing shows the
        evidence is newer than whenever it was produced (archived or replayed alike)."""
        return FRESH_NONCE if any(r.binds_nonce for r in self.rules) else FRESH_NOT_CHECKED


FRESH_NONCE = "nonce"
FRESH_NOT_CHECKED = "not-checked"


@dataclass(frozen=True)
class AppraisalResult:
    policy_id: str
    submods: tuple[SubmodResult, ...]
    # Rules about the bundle as a whole (required kinds present, ...).
    bundle_rules: tuple[RuleResult, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return all(r.passed for r in self.all_rules())

    def all_rules(self) -> list[RuleResult]:
        out = list(self.bundle_rules)
        for s in self.submods:
            out.extend(s.rules)
        return out

    def failures(self) -> list[RuleResult]:
        return [r for r in self.all_rules() if not r.passed]

    def require_ok(self) -> AppraisalResult:
        bad = self.failures()
        if bad:
            first = bad[0]
            raise PolicyViolationError(
                f"policy {self.policy_id!r} rejected the evidence: {len(bad)} rule(s) failed, "
                f"first: {first.describe()}",
                self,
            )
        return self

    def to_dict(self) -> dict[str, Any]:
        return {
            "policy_id": self.policy_id,
            "ok": self.ok,
            "bundle_rules": [r.to_dict() for r in self.bundle_rules],
            "submods": {
                s.name: {
                    "ok": s.ok,
                    "freshness": s.freshness,
                    "claims": s.claims.to_dict(),
                    "rules": [r.to_dict() for r in s.rules],
                }
                for s in self.submods
            },
        }


T = TypeVar("T")


class Rules:
    """Collects rule results for one submodule; small helpers keep appraisers declarative."""

    def __init__(self) -> None:
        self.results: list[RuleResult] = []

    def add(
        self,
        field: str,
        got: Any,
        want: str,
        passed: bool,
        trust: Trust = Trust.CONFIGURATION,
        *,
        binds_nonce: bool = False,
    ) -> None:
        self.results.append(
            RuleResult(field, _fmt(got), want, passed, trust, binds_nonce=binds_nonce)
        )

    def equal(self, field: str, got: T, want: T | None, trust: Trust = Trust.CONFIGURATION) -> None:
        """Skipped (not recorded) when the policy does not set ``want``."""
        if want is None:
            return
        self.add(field, got, _fmt(want), got == want, trust)

    def one_of(
        self,
        field: str,
        got: T,
        allowed: Sequence[T] | None,
        trust: Trust = Trust.CONFIGURATION,
    ) -> None:
        if allowed is None:
            return
        # An explicit empty allow-list accepts nothing (style: an empty AnyOf is not a pass).
        self.add(field, got, f"one of {_fmt(list(allowed))}", got in allowed, trust)

    def at_least(
        self, field: str, got: int, minimum: int | None, trust: Trust = Trust.CONFIGURATION
    ) -> None:
        if minimum is None:
            return
        self.add(field, got, f">= {minimum}", got >= minimum, trust)

    def at_most(
        self, field: str, got: int, maximum: int | None, trust: Trust = Trust.CONFIGURATION
    ) -> None:
        if maximum is None:
            return
        self.add(field, got, f"<= {maximum}", got <= maximum, trust)

    def flag(
        self,
        field: str,
        got: bool,
        allowed: bool,
        trust: Trust = Trust.CONFIGURATION,
    ) -> None:
        """A boolean property the policy either allows or forbids (always recorded)."""
        want = "true or false" if allowed else "false"
        self.add(field, got, want, allowed or not got, trust)

    def check(
        self,
        field: str,
        got: Any,
        want: str,
        predicate: Callable[[], bool],
        trust: Trust = Trust.CONFIGURATION,
    ) -> None:
        self.add(field, got, want, predicate(), trust)

    def extend(self, results: Iterable[RuleResult]) -> None:
        self.results.extend(results)

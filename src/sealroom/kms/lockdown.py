"""Lockdown: "TEE compromise -> lockdown, revoke all keys", scoped, signed, lifted by quorum.

A lockdown order is a :func:`sealroom.crypto.signing.signed_json` document (domain
``sealroom/kms-lockdown/v1``) signed by one of the KMS's admin keys::

    {"type": "sealroom-kms-lockdown", "id": HEX16, "issued_at": ISO, "reason": "...",
     "scope": {"tee_kind"?, "measurement"?, "chip_id"?, "tcb"?: {"component", "min", "max"},
               "account"?}}

A release is *in scope* when every field the scope names matches (AND): the TEE kind,
measurement (SNP MEASUREMENT or TDX MR_TD) and chip id are read from any EAR submodule's
``sealroom.claims``; the TCB range compares one SNP REPORTED_TCB component
(bootloader/tee/snp/microcode/fmc) or the first TDX TEE_TCB_SVN byte (``tdx_svn``)
inclusively; the account is the owner of the key asked for. A field the scope names but
the evidence lacks does not match (a chip-scoped lockdown does not stop TDX guests).

Applying an order (:meth:`Lockdowns.apply`), in this order: (1) record it, so the
:class:`LockdownGuard` refuses every release in scope from then on, whatever session or
token was issued before; (2) revoke every key version the audit shows released in scope
(a new primary is made); (3) rotate the KEK (re-wrap everything, destroy the old KEK);
(4) stop the computations in scope through a :class:`Stopper` (the control plane's
cancel: the enclave wipes its storage and keys and exits). Each step is audited.

Lifting needs ``quorum`` distinct admins, each signing ``{"type": "sealroom-kms-lift",
"lockdown_id": ID}`` (domain ``sealroom/kms-lift/v1``). A signature over another lockdown's
id, by a key that is not an admin, or repeated by the same admin, does not count.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from sealroom.crypto.signing import signed_json, verify_signed_json
from sealroom.errors import (
    AccessDeniedError,
    AttestationError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
    SealroomError,
)
from sealroom.files import write_private
from sealroom.kms.audit import evidence_digest
from sealroom.kms.store import KeyManager

LOCKDOWN_DOMAIN = b"sealroom/kms-lockdown/v1\0"
LIFT_DOMAIN = b"sealroom/kms-lift/v1\0"
LOCKDOWNS_NAME = "lockdowns.json"
TCB_COMPONENTS = ("bootloader", "tee", "snp", "microcode", "fmc", "tdx_svn")


class LockdownRefused(AccessDeniedError):
    """A release refused because a lockdown covers it."""

    code = "kms-lockdown"


# ---- scope ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TcbRange:
    component: str
    min: int
    max: int


@dataclass(frozen=True)
class Scope:
    tee_kind: str | None = None
    measurement: str | None = None
    chip_id: str | None = None
    tcb: TcbRange | None = None
    account: str | None = None

    def __post_init__(self) -> None:
        if not any((self.tee_kind, self.measurement, self.chip_id, self.tcb, self.account)):
            raise InvalidInputError(
                "lockdown scope is empty: name a TEE kind, measurement, chip id, TCB range "
                "or account",
                code="kms-lockdown-scope-empty",
            )
        if self.tcb is not None and (
            self.tcb.component not in TCB_COMPONENTS or self.tcb.min > self.tcb.max
        ):
            raise InvalidInputError(
                f"lockdown TCB range {self.tcb}: component one of {TCB_COMPONENTS}, min <= max",
                code="kms-lockdown-scope-invalid",
            )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in ("tee_kind", "measurement", "chip_id", "account"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        if self.tcb is not None:
            out["tcb"] = {"component": self.tcb.component, "min": self.tcb.min, "max": self.tcb.max}
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Scope:
        unknown = set(d) - {"tee_kind", "measurement", "chip_id", "tcb", "account"}
        if unknown:
            raise InvalidInputError(f"lockdown scope: unknown fields {sorted(unknown)}")
        tcb = d.get("tcb")
        return cls(
            tee_kind=d.get("tee_kind"),
            measurement=d["measurement"].lower() if d.get("measurement") else None,
            chip_id=d["chip_id"].lower() if d.get("chip_id") else None,
            tcb=TcbRange(str(tcb["component"]), int(tcb["min"]), int(tcb["max"])) if tcb else None,
            account=d.get("account"),
        )

    @classmethod
    def parse(cls, items: Sequence[str]) -> Scope:
        """From CLI ``KEY=VALUE`` items: tee=snp, measurement=HEX, chip=HEX, account=NAME,
        tcb=COMPONENT:MIN-MAX."""
        d: dict[str, Any] = {}
        names = {
            "tee": "tee_kind",
            "measurement": "measurement",
            "chip": "chip_id",
            "account": "account",
        }
        for item in items:
            key, sep, value = item.partition("=")
            if not sep or not value:
                raise InvalidInputError(f"scope {item!r}: want KEY=VALUE")
            if key == "tcb":
                comp, _, rng = value.partition(":")
                lo, _, hi = rng.partition("-")
                try:
                    d["tcb"] = {"component": comp, "min": int(lo), "max": int(hi)}
                except ValueError as e:
                    raise InvalidInputError(f"scope {item!r}: want tcb=COMPONENT:MIN-MAX") from e
            elif key in names:
                d[names[key]] = value
            else:
                raise InvalidInputError(
                    f"scope {item!r}: key one of tee, measurement, chip, tcb, account"
                )
        return cls.from_dict(d)


def facts_of(claims: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Per EAR submodule: the facts a scope looks at (kind, measurement, chip id, TCB
    components, host_data). Also what the audit keeps of each release."""
    out: list[dict[str, Any]] = []
    submods = claims.get("submods")
    if not isinstance(submods, Mapping):
        return out
    for sub in submods.values():
        if not isinstance(sub, Mapping):
            continue
        c = sub.get("sealroom.claims")
        c = c if isinstance(c, Mapping) else {}
        kind = sub.get("sealroom.kind")
        if kind == "bundle":
            continue
        tcb: dict[str, int] = {}
        reported = c.get("reported_tcb")
        if isinstance(reported, Mapping):
            for comp in ("bootloader", "tee", "snp", "microcode", "fmc"):
                if isinstance(reported.get(comp), int):
                    tcb[comp] = reported[comp]
        svn = c.get("tee_tcb_svn")
        if isinstance(svn, str) and len(svn) >= 2:
            tcb["tdx_svn"] = int(svn[:2], 16)
        measurement = c.get("measurement") or c.get("mr_td")
        out.append(
            {
                "kind": kind,
                "simulated": bool(sub.get("sealroom.simulated")),
                "measurement": measurement.lower() if isinstance(measurement, str) else None,
                "chip_id": c["chip_id"].lower() if isinstance(c.get("chip_id"), str) else None,
                "host_data": c.get("host_data") if isinstance(c.get("host_data"), str) else None,
                "tcb": tcb,
            }
        )
    return out


def in_scope(scope: Scope, facts: Sequence[Mapping[str, Any]], account: str | None) -> bool:
    if scope.account is not None and scope.account != account:
        return False
    evidence_fields = (scope.tee_kind, scope.measurement, scope.chip_id, scope.tcb)
    if not any(f is not None for f in evidence_fields):
        return True  # account-only scope
    for f in facts:
        if scope.tee_kind is not None and f.get("kind") != scope.tee_kind:
            continue
        if scope.measurement is not None and f.get("measurement") != scope.measurement:
            continue
        if scope.chip_id is not None and f.get("chip_id") != scope.chip_id:
            continue
        if scope.tcb is not None:
            value = f.get("tcb", {}).get(scope.tcb.component)
            if not isinstance(value, int) or not scope.tcb.min <= value <= scope.tcb.max:
                continue
        return True
    return False


# ---- orders ---------------------------------------------------------------------------------


def lockdown_order(
    scope: Scope, key: Ed25519PrivateKey, *, reason: str = "", now: datetime | None = None
) -> dict[str, Any]:
    payload = {
        "type": "sealroom-kms-lockdown",
        "id": secrets.token_hex(16),
        "issued_at": (now or datetime.now(UTC)).isoformat(),
        "reason": reason,
        "scope": scope.to_dict(),
    }
    return signed_json(payload, key, LOCKDOWN_DOMAIN)


def lift_signature(lockdown_id: str, key: Ed25519PrivateKey) -> dict[str, Any]:
    return signed_json({"type": "sealroom-kms-lift", "lockdown_id": lockdown_id}, key, LIFT_DOMAIN)


def _admin_keys(km: KeyManager) -> dict[str, Ed25519PublicKey]:
    return {
        name: Ed25519PublicKey.from_public_bytes(bytes.fromhex(h)) for name, h in km.admins.items()
    }


def _signed_by_admin(doc: object, km: KeyManager, domain: bytes) -> tuple[str, dict[str, Any]]:
    """(admin name, payload) of the first admin whose key verifies ``doc``."""
    admins = _admin_keys(km)
    if not admins:
        raise InvalidInputError(
            "this KMS has no admin keys (sealroom kms init --admin ...)", code="kms-no-admins"
        )
    for name, public in admins.items():
        try:
            return name, verify_signed_json(doc, public, domain)
        except AttestationError:
            continue
    raise AttestationError(
        "order is not signed by any admin key of this KMS", code="kms-order-signature"
    )


# ---- stopping computations ------------------------------------------------------------------


class Stopper(Protocol):
    """Stops running computations in scope; returns what it stopped and what it could
    not reach (ids or descriptions)."""

    def __call__(
        self, scope: Scope, released_to: Sequence[Mapping[str, Any]], /
    ) -> tuple[list[str], list[str]]: ...


# ---- the lockdown book ----------------------------------------------------------------------


@dataclass
class LockdownResult:
    id: str
    admin: str
    revoked: list[str] = field(default_factory=list)
    kek: tuple[str, str] | None = None
    stopped: list[str] = field(default_factory=list)
    not_reached: list[str] = field(default_factory=list)


class Lockdowns:
    """Lockdown orders of one KMS directory."""

    def __init__(self, km: KeyManager) -> None:
        self.km = km
        self.path = km.directory / LOCKDOWNS_NAME

    def _load(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads(self.path.read_text())
            return data
        except FileNotFoundError:
            return {}

    def _save(self, data: dict[str, Any]) -> None:
        write_private(
            self.path,
            json.dumps(data, indent=1, sort_keys=True).encode(),
            overwrite=True,
            what="lockdown book",
        )

    def active(self) -> list[tuple[str, Scope]]:
        return [
            (lid, Scope.from_dict(rec["scope"]))
            for lid, rec in sorted(self._load().items())
            if rec["state"] == "active"
        ]

    def all(self) -> dict[str, Any]:
        return self._load()

    def apply(self, order: object, *, stopper: Stopper | None = None) -> LockdownResult:
        admin, payload = _signed_by_admin(order, self.km, LOCKDOWN_DOMAIN)
        if payload.get("type") != "sealroom-kms-lockdown" or not isinstance(payload.get("id"), str):
            raise InvalidInputError("not a lockdown order", code="kms-order-malformed")
        scope = Scope.from_dict(payload.get("scope") or {})
        lid = payload["id"]
        with self.km.locked():
            book = self._load()
            if lid in book:
                raise ConflictError(
                    f"lockdown {lid}: this order was already applied", code="kms-order-replayed"
                )
            book[lid] = {
                "state": "active",
                "scope": scope.to_dict(),
                "admin": admin,
                "order": order,
                "applied_at": datetime.now(UTC).isoformat(),
            }
            self._save(book)
        result = LockdownResult(lid, admin)
        self.km.audit.append(
            "lockdown",
            actor=f"admin:{admin}",
            policy=f"lockdown:{lid}",
            detail={"scope": scope.to_dict(), "reason": payload.get("reason", "")},
        )
        # (2) revoke every version released in scope.
        released = self._released_in_scope(scope)
        for key_id, version in sorted({(r["key_id"], r["version"]) for r in released}):
            try:
                self.km.revoke(
                    key_id,
                    version,
                    actor=f"lockdown:{lid}",
                    reason=f"released in scope of lockdown {lid}",
                    rotate_primary=True,
                )
                result.revoked.append(f"{key_id}/v{version}")
            except (ConflictError, NotFoundError):
                pass  # already revoked or destroyed
        # Keys of an account in scope: every active version goes.
        if scope.account is not None:
            for info in self.km.list():
                if info.account != scope.account or info.destroyed:
                    continue
                for v in info.versions:
                    if v.state == "active" and v.version != info.primary:
                        self.km.revoke(info.key_id, v.version, actor=f"lockdown:{lid}")
                        result.revoked.append(f"{info.key_id}/v{v.version}")
                if info.primary is not None:
                    self.km.revoke(
                        info.key_id, info.primary, actor=f"lockdown:{lid}", rotate_primary=True
                    )
                    result.revoked.append(f"{info.key_id}/v{info.primary}")
        # (3) the KEK that wrapped them is replaced and destroyed.
        result.kek = self.km.rotate_kek(actor=f"lockdown:{lid}", reason=f"lockdown {lid}")
        # (4) computations in scope are stopped.
        if stopper is not None:
            try:
                result.stopped, result.not_reached = stopper(scope, released)
            except SealroomError as e:
                result.not_reached = [f"control plane: {e.message}"]
        else:
            result.not_reached = ["no control plane given: running computations not stopped"]
        self.km.audit.append(
            "lockdown-stop",
            actor=f"lockdown:{lid}",
            policy=f"lockdown:{lid}",
            detail={"stopped": result.stopped, "not_reached": result.not_reached},
        )
        return result

    def _released_in_scope(self, scope: Scope) -> list[dict[str, Any]]:
        out = []
        for entry in self.km.audit.entries():
            ev = entry["event"]
            if ev["action"] != "release" or ev["key_id"] is None:
                continue
            facts = ev["detail"].get("facts", [])
            if in_scope(scope, facts, ev["detail"].get("account")):
                out.append({"key_id": ev["key_id"], "version": ev["version"], "facts": facts})
        return out

    def lift(self, lockdown_id: str, signatures: Sequence[object]) -> list[str]:
        """Lift ``lockdown_id`` if ``quorum`` distinct admins signed it; returns them."""
        admins = _admin_keys(self.km)
        signers: set[str] = set()
        for doc in signatures:
            for name, public in admins.items():
                try:
                    payload = verify_signed_json(doc, public, LIFT_DOMAIN)
                except (AttestationError, InvalidInputError):
                    continue
                if payload == {"type": "sealroom-kms-lift", "lockdown_id": lockdown_id}:
                    signers.add(name)
        if len(signers) < self.km.quorum:
            self.km.audit.append(
                "lockdown-lift",
                actor="admins:" + ",".join(sorted(signers)),
                result="refused",
                policy=f"lockdown:{lockdown_id}",
                detail={"valid_signers": sorted(signers), "quorum": self.km.quorum},
            )
            raise AccessDeniedError(
                f"lift of lockdown {lockdown_id}: {len(signers)} distinct admin signature(s) "
                f"over this lockdown, quorum is {self.km.quorum}",
                code="kms-lift-quorum",
            )
        with self.km.locked():
            book = self._load()
            rec = book.get(lockdown_id)
            if rec is None:
                raise NotFoundError(f"lockdown {lockdown_id}: no such lockdown")
            if rec["state"] != "active":
                raise ConflictError(f"lockdown {lockdown_id}: already {rec['state']}")
            rec["state"] = "lifted"
            rec["lifted_by"] = sorted(signers)
            rec["lifted_at"] = datetime.now(UTC).isoformat()
            self._save(book)
        self.km.audit.append(
            "lockdown-lift",
            actor="admins:" + ",".join(sorted(signers)),
            policy=f"lockdown:{lockdown_id}",
        )
        return sorted(signers)


# ---- the release path -----------------------------------------------------------------------


class ReleaseRequest(Protocol):
    """What the KMS needs of a KBS resource request (the KBS ``ReleaseContext`` fits)."""

    @property
    def claims(self) -> Mapping[str, Any]: ...


class LockdownGuard:
    """Refuses a release in scope of any active lockdown. Evaluated on every request
    against the EAR claims of its session, so sessions and tokens issued before the
    lockdown are refused as well. ``account_of`` maps a request to the key owner's
    account (None when the resource is not a KMS key)."""

    def __init__(
        self,
        km: KeyManager,
        account_of: Callable[[Any], str | None] = lambda _ctx: None,
        refuse: Callable[[str], Exception] | None = None,
    ) -> None:
        self.km = km
        self.lockdowns = Lockdowns(km)
        self.account_of = account_of
        self.refuse = refuse or (lambda msg: LockdownRefused(msg))

    def check(self, claims: Mapping[str, Any], account: str | None) -> None:
        facts = facts_of(claims)
        for lid, scope in self.lockdowns.active():
            if in_scope(scope, facts, account):
                self.km.audit.append(
                    "refusal",
                    actor="kbs",
                    result="refused",
                    policy=f"lockdown:{lid}",
                    evidence_digest=evidence_digest(claims),
                    detail={"facts": facts},
                )
                raise self.refuse(f"lockdown {lid} covers this release (scope {scope.to_dict()})")

    def __call__(self, ctx: Any, /) -> None:
        self.check(ctx.claims, self.account_of(ctx))

"""Lockdown: signed order, scoped refusal (also for sessions attested before), revocation
of what was released in scope, KEK rotation, stopping, quorum lift."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sealroom.errors import (
    AccessDeniedError,
    AttestationError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
)
from sealroom.kms import KeyManager, LockdownGuard, Lockdowns, Scope, release
from sealroom.kms.lockdown import LockdownRefused, lift_signature, lockdown_order
from tests.kms.claims import snp_claims, tdx_claims


def _hex(k: Ed25519PrivateKey) -> str:
    return (
        k.public_key()
        .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        .hex()
    )


@pytest.fixture
def admins() -> list[Ed25519PrivateKey]:
    return [Ed25519PrivateKey.generate() for _ in range(3)]


@pytest.fixture
def km(tmp_path: Path, admins: list[Ed25519PrivateKey]) -> KeyManager:
    km = KeyManager.init(
        tmp_path / "kms", admins={f"admin{i}": _hex(k) for i, k in enumerate(admins)}, quorum=2
    )
    km.create("ds1", account="acme", actor="t")
    km.create("ds2", account="globex", actor="t")
    return km


@pytest.mark.parametrize(
    ("scope", "claims", "account", "covered"),
    [
        (Scope(tee_kind="snp"), snp_claims(), None, True),
        (Scope(tee_kind="tdx"), snp_claims(), None, False),
        (Scope(measurement="AA" * 48), snp_claims(), None, True),
        (Scope(measurement="bb" * 48), snp_claims(), None, False),
        (Scope(chip_id="cc" * 64), snp_claims(), None, True),
        (Scope(chip_id="cc" * 64), tdx_claims(), None, False),  # no chip id in TDX evidence
        (Scope.parse(["tcb=snp:0-21"]), snp_claims(snp=21), None, True),
        (Scope.parse(["tcb=snp:0-21"]), snp_claims(snp=22), None, False),
        (Scope.parse(["tcb=tdx_svn:0-5"]), tdx_claims(svn=5), None, True),
        (Scope(tee_kind="snp", chip_id="ee" * 64), snp_claims(), None, False),  # AND
        (Scope(account="acme"), snp_claims(), "acme", True),
        (Scope(account="acme"), snp_claims(), "globex", False),
        (Scope(tee_kind="snp", account="acme"), tdx_claims(), "acme", False),
    ],
)
def test_scope(
    km: KeyManager,
    admins: list[Ed25519PrivateKey],
    scope: Scope,
    claims: Mapping[str, Any],
    account: str | None,
    covered: bool,
) -> None:
    Lockdowns(km).apply(lockdown_order(scope, admins[0]))
    guard = LockdownGuard(km)
    if covered:
        with pytest.raises(LockdownRefused):
            guard.check(claims, account)
    else:
        guard.check(claims, account)


def test_empty_scope_refused() -> None:
    with pytest.raises(InvalidInputError):
        Scope()
    with pytest.raises(InvalidInputError):
        Scope.parse(["tcb=snp:9-1"])


def test_lockdown_steps(km: KeyManager, admins: list[Ed25519PrivateKey]) -> None:
    compromised = snp_claims(chip_id="0f" * 64, host_data="11" * 32)
    healthy = snp_claims(chip_id="aa" * 64)
    # Before: both released; the compromised chip got ds1 v1, the healthy one ds2 v1.
    _, ds1_v1 = release(km, "ds1", None, compromised, actor="kbs", policy="p")
    _, ds2_v1 = release(km, "ds2", None, healthy, actor="kbs", policy="p")
    kek_before = km.kek_label

    stop_calls: list[tuple[Scope, Sequence[Mapping[str, Any]]]] = []

    def stopper(scope: Scope, released: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[str]]:
        stop_calls.append((scope, released))
        return ["comp-1"], []

    order = lockdown_order(Scope(chip_id="0f" * 64), admins[1], reason="chip key leaked")
    result = Lockdowns(km).apply(order, stopper=stopper)

    # (1) every release in scope refused from now on (the same claims a session was
    # attested with before the lockdown), out of scope still released.
    with pytest.raises(LockdownRefused):
        release(km, "ds2", None, compromised, actor="kbs", policy="p")
    n, again = release(km, "ds2", None, healthy, actor="kbs", policy="p")
    assert (n, again) == (1, ds2_v1)
    # (2) what was released in scope is revoked; the key got a new primary.
    assert result.revoked == ["ds1/v1"]
    info = km.info("ds1")
    assert info.versions[0].state == "revoked" and info.primary == 2
    assert km.material("ds1")[1] != ds1_v1
    # (3) the KEK was rotated, the old one destroyed, keys still unwrap.
    assert result.kek is not None and result.kek[0] == kek_before
    assert not km.backend.exists(kek_before) and km.kek_label != kek_before
    # (4) the stopper was asked with what was released in scope (host_data -> computation).
    assert result.stopped == ["comp-1"]
    assert stop_calls[0][1][0]["facts"][0]["host_data"] == "11" * 32
    actions = [e["event"]["action"] for e in km.audit.entries()]
    assert actions[-7:] == [
        "lockdown",
        "key-revoke",
        "key-rotate",
        "kek-rotate",
        "lockdown-stop",
        "refusal",
        "release",
    ]


def test_lockdown_without_control_plane_says_so(
    km: KeyManager, admins: list[Ed25519PrivateKey]
) -> None:
    result = Lockdowns(km).apply(lockdown_order(Scope(tee_kind="snp"), admins[0]))
    assert result.not_reached and "not stopped" in result.not_reached[0]


def test_lockdown_order_by_non_admin_refused(km: KeyManager) -> None:
    with pytest.raises(AttestationError) as e:
        Lockdowns(km).apply(lockdown_order(Scope(tee_kind="snp"), Ed25519PrivateKey.generate()))
    assert e.value.code == "kms-order-signature"
    LockdownGuard(km).check(snp_claims(), None)  # nothing in force


def test_lockdown_order_replayed_refused(km: KeyManager, admins: list[Ed25519PrivateKey]) -> None:
    order = lockdown_order(Scope(tee_kind="snp"), admins[0])
    Lockdowns(km).apply(order)
    with pytest.raises(ConflictError) as e:
        Lockdowns(km).apply(order)
    assert e.value.code == "kms-order-replayed"


def test_lockdown_order_with_edited_scope_refused(
    km: KeyManager, admins: list[Ed25519PrivateKey]
) -> None:
    order = lockdown_order(Scope(tee_kind="snp"), admins[0])
    order["payload"]["scope"] = {"tee_kind": "tdx"}
    with pytest.raises(AttestationError):
        Lockdowns(km).apply(order)


def test_lift_needs_quorum(km: KeyManager, admins: list[Ed25519PrivateKey]) -> None:
    book = Lockdowns(km)
    lid = book.apply(lockdown_order(Scope(tee_kind="snp"), admins[0])).id
    one = lift_signature(lid, admins[0])
    # duplicate signatures by the same admin count once
    with pytest.raises(AccessDeniedError) as e:
        book.lift(lid, [one, one, lift_signature(lid, admins[0])])
    assert e.value.code == "kms-lift-quorum"
    # a non-admin's signature does not count
    with pytest.raises(AccessDeniedError):
        book.lift(lid, [one, lift_signature(lid, Ed25519PrivateKey.generate())])
    with pytest.raises(LockdownRefused):
        LockdownGuard(km).check(snp_claims(), None)
    assert book.lift(lid, [one, lift_signature(lid, admins[2])]) == ["admin0", "admin2"]
    LockdownGuard(km).check(snp_claims(), None)  # released again
    lift_events = [
        e["event"] for e in km.audit.entries() if e["event"]["action"] == "lockdown-lift"
    ]
    assert [e["result"] for e in lift_events] == ["refused", "refused", "ok"]


def test_lift_signatures_replayed_from_an_earlier_lockdown_do_not_count(
    km: KeyManager, admins: list[Ed25519PrivateKey]
) -> None:
    book = Lockdowns(km)
    first = book.apply(lockdown_order(Scope(tee_kind="snp"), admins[0])).id
    sigs = [lift_signature(first, admins[0]), lift_signature(first, admins[1])]
    book.lift(first, sigs)
    second = book.apply(lockdown_order(Scope(tee_kind="snp"), admins[0])).id
    with pytest.raises(AccessDeniedError):
        book.lift(second, sigs)
    # and lifting the first again is refused
    with pytest.raises(ConflictError):
        book.lift(first, sigs)
    with pytest.raises(NotFoundError):
        book.lift("00" * 16, [lift_signature("00" * 16, a) for a in admins])

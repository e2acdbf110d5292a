"""A nonce given is a nonce checked; without one, the result says freshness was not checked
(in the appraisal, the CLI output and the EAR submodule)."""

from __future__ import annotations

import base64
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from sealroom.attestation.ear import ear_claims
from sealroom.attestation.evidence import EvidenceBundle, EvidenceItem
from sealroom.attestation.kinds import VerifyContext
from sealroom.attestation.policy import Policy, starter_policy
from sealroom.attestation.sim.authority import SimAuthority
from sealroom.attestation.verifier import verify_and_appraise
from sealroom.errors import InvalidInputError

from ..cli.test_attest_cli import sealroom

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
NONCE = bytes(range(32))


@pytest.fixture(scope="module")
def sim() -> SimAuthority:
    return SimAuthority.ephemeral(NOW)


def _item(sim: SimAuthority, report_data: bytes) -> EvidenceItem:
    return sim.evidence(sim.report(measurement=bytes(48), report_data=report_data))


def _policy(report_data: dict[str, Any]) -> Policy:
    return Policy.from_dict(
        {"version": 1, "allow_simulated": True, "snp": {"report_data": report_data}}
    )


def _ctx(sim: SimAuthority, nonce: bytes | None) -> VerifyContext:
    return VerifyContext(now=NOW, nonce=nonce, extra_roots=(sim.root,))


def test_nonce_given_but_policy_does_not_bind_it(sim: SimAuthority) -> None:
    item = _item(sim, bytes(64))  # REPORT_DATA is not the nonce: a replay
    with pytest.raises(InvalidInputError) as e:
        verify_and_appraise(EvidenceBundle.single(item), _policy({"mode": "any"}), _ctx(sim, NONCE))
    assert e.value.code == "nonce-not-bound"
    assert "does not bind a nonce" in e.value.message
    # "exact" compares with a fixed value, not the nonce: still unbound.
    with pytest.raises(InvalidInputError, match="does not bind a nonce"):
        verify_and_appraise(
            EvidenceBundle.single(item),
            _policy({"mode": "exact", "value": "00" * 64}),
            _ctx(sim, NONCE),
        )


def test_nonce_given_and_bound_is_checked(sim: SimAuthority) -> None:
    fresh = _item(sim, NONCE + bytes(32))
    result = verify_and_appraise(
        EvidenceBundle.single(fresh), _policy({"mode": "nonce"}), _ctx(sim, NONCE)
    )
    assert result.ok
    assert result.submods[0].freshness == "nonce"
    replay = _item(sim, os.urandom(32) + bytes(32))
    bad = verify_and_appraise(
        EvidenceBundle.single(replay), _policy({"mode": "nonce"}), _ctx(sim, NONCE)
    )
    assert [r.field for r in bad.failures()] == ["REPORT_DATA"]


def test_no_nonce_with_require_nonce_false_says_freshness_not_checked(sim: SimAuthority) -> None:
    item = _item(sim, os.urandom(64))
    pol = _policy({"mode": "nonce", "require_nonce": False})
    result = verify_and_appraise(EvidenceBundle.single(item), pol, _ctx(sim, None))
    assert result.ok
    sub = result.submods[0]
    assert sub.freshness == "not-checked"
    rule = next(r for r in sub.rules if r.field == "REPORT_DATA")
    assert "freshness NOT checked" in rule.want
    assert result.to_dict()["submods"]["cpu0"]["freshness"] == "not-checked"
    claims = ear_claims(result, now=NOW, ttl=timedelta(minutes=5))
    assert claims["submods"]["cpu0"]["sealroom.freshness"] == "not-checked"
    # The default (require_nonce: true) refuses evidence verified without a nonce.
    strict = verify_and_appraise(
        EvidenceBundle.single(item), _policy({"mode": "nonce"}), _ctx(sim, None)
    )
    assert [r.field for r in strict.failures()] == ["REPORT_DATA"]


def test_ear_says_nonce_when_bound(sim: SimAuthority) -> None:
    item = _item(sim, NONCE + bytes(32))
    result = verify_and_appraise(
        EvidenceBundle.single(item), _policy({"mode": "nonce"}), _ctx(sim, NONCE)
    )
    claims = ear_claims(result, now=NOW, ttl=timedelta(minutes=5), nonce=NONCE)
    assert claims["submods"]["cpu0"]["sealroom.freshness"] == "nonce"


def test_cli_nonce_given_but_policy_does_not_bind_it(sim: SimAuthority, tmp_path: Path) -> None:
    ev = tmp_path / "evidence.json"
    ev.write_text(EvidenceBundle.single(_item(sim, NONCE + bytes(32))).to_json())
    root = tmp_path / "root.pem"
    root.write_bytes(sim.root_pem())
    unbound = tmp_path / "unbound.json"
    unbound.write_text(json.dumps({"version": 1, "allow_simulated": True, "snp": {}}))
    args = ["attest", "verify", str(ev), "--root", str(root), "--now", NOW.isoformat()]
    r = sealroom(*args, "--policy", str(unbound), "--nonce", NONCE.hex(), home=tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "nonce-not-bound" in r.stderr
    # The starter binds it (mode: nonce) ...
    starter = tmp_path / "starter.yaml"
    starter.write_text(
        starter_policy(["snp"]).replace("allow_simulated: false", "allow_simulated: true")
    )
    r = sealroom(*args, "--policy", str(starter), "--nonce", NONCE.hex(), home=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "freshness NOT checked" not in r.stdout
    # ... and without --nonce says plainly that freshness was not checked.
    r = sealroom(*args, "--policy", str(starter), "--ear", str(tmp_path / "t.jwt"), home=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "freshness NOT checked" in r.stdout
    payload = (tmp_path / "t.jwt").read_text().split(".")[1]
    tok = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert tok["submods"]["cpu0"]["sealroom.freshness"] == "not-checked"

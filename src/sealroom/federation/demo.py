"""In-process adapter: a SIMULATED three-site federation and one federated averaging round.

Each site runs in its own sim enclave: a :class:`SimTeeService` (the host side, which fixes
the MEASUREMENT at launch) and a :class:`SimProvider` (the guest side, which picks only
REPORT_DATA). Each site has its own channel key, policy, verifier and core; peers exchange
tokens that answer each verifier's own challenge. One site runs a different measurement:
the others exclude it, and only mutually accepted sites exchange model updates.

Sim evidence proves nothing about confidentiality (ADR 0004): everything here is SIMULATED.
"""

from __future__ import annotations

import hashlib
import random
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

import sealroom
from sealroom.attestation.policy import Policy
from sealroom.attestation.sim.authority import SimAuthority, measure_tree
from sealroom.attestation.sim.service import SimTeeService
from sealroom.errors import SealroomError
from sealroom.federation.core import (
    DeployRequested,
    FederationCore,
    JobBlocked,
    JobReady,
    PeerRefused,
    PeerVerified,
)
from sealroom.federation.site import TokenIssuer
from sealroom.federation.token import channel_key_digest
from sealroom.federation.verify import Expectation, PeerVerifier
from sealroom.tee.sim import SimProvider

FEDERATION = "sealroom-demo"
JOB = "fedavg-round-1"


@dataclass(frozen=True)
class Verdict:
    verifier: str
    peer: str
    accepted: bool
    code: str
    detail: str
    simulated: bool


@dataclass
class SiteOutcome:
    name: str
    measurement: str
    data: list[float]
    verdicts: list[Verdict] = field(default_factory=list)
    participants: tuple[str, ...] = ()
    model: float | None = None
    blocked: str | None = None


def _policy(measurement: bytes, site: str) -> Policy:
    return Policy.from_dict(
        {
            "version": 1,
            "id": f"{site}-federation-policy",
            "allow_simulated": True,
            "max_evidence_age": 300,
            "require": ["snp"],
            "snp": {
                "measurements": [measurement.hex()],
                # REPORT_DATA is checked against the token binding by the verifier itself.
                "report_data": {"mode": "any"},
                "vmpl": [0],
                "allow_debug": False,
            },
        },
        f"{site} policy",
    )


def run_demo(
    *,
    sites: tuple[str, ...] = ("hospital-a", "hospital-b", "hospital-c"),
    bad_site: str = "hospital-c",
    min_participants: int = 2,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> list[SiteOutcome]:
    """Run the federation; returns each site's verdicts, participants and model."""
    good = measure_tree(Path(sealroom.__file__).resolve().parent)
    bad = hashlib.sha384(b"a modified training runtime").digest()
    data = {s: [float(i + 3 * n) for i in range(1, 3 + n)] for n, s in enumerate(sites)}
    authority = SimAuthority.ephemeral(clock())
    rng = random.SystemRandom()
    with tempfile.TemporaryDirectory(prefix="srfed-") as tmp:
        services: list[SimTeeService] = []
        try:
            issuers: dict[str, TokenIssuer] = {}
            keys: dict[str, str] = {}
            for s in sites:
                measurement = bad if s == bad_site else good
                svc = SimTeeService(
                    authority,
                    measurement=measurement,
                    host_data=hashlib.sha256(f"{FEDERATION}/{s}".encode()).digest(),
                    socket_path=Path(tmp) / f"{len(services)}.sock",
                )
                svc.start()
                services.append(svc)
                channel = ed25519.Ed25519PrivateKey.generate().public_key()
                keys[s] = channel_key_digest(
                    channel.public_bytes(
                        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
                    )
                )
                issuers[s] = TokenIssuer(
                    federation=FEDERATION,
                    site=s,
                    channel_key=keys[s],
                    providers=[SimProvider(svc.socket_path)],
                    clock=clock,
                )
            outcomes = {
                s: SiteOutcome(s, (bad if s == bad_site else good).hex(), data[s]) for s in sites
            }
            cores: dict[str, FederationCore] = {}
            for me in sites:
                # Each site's own trust inputs: its policy (the measurement it expects), the
                # sim root it chose to trust, its own challenges.
                verifier = PeerVerifier(
                    _policy(good, me), extra_roots=(authority.root,), clock=clock
                )
                peers = [p for p in sites if p != me]
                core = FederationCore(peers, min_participants=max(1, min_participants - 1))
                cores[me] = core
                for peer in peers:
                    now = int(clock().timestamp())
                    token = issuers[peer].answer(JOB, verifier.challenge())
                    try:
                        v = verifier.verify(
                            token, Expectation(FEDERATION, JOB, site=peer, channel_key=keys[peer])
                        )
                    except SealroomError as e:
                        core.handle(PeerRefused(peer, now, e.code, e.message))
                        outcomes[me].verdicts.append(
                            Verdict(me, peer, False, e.code, e.message, True)
                        )
                        continue
                    core.handle(PeerVerified(peer, now, v.expires_at, rng.random()))
                    outcomes[me].verdicts.append(
                        Verdict(me, peer, True, "accepted", _summary(v.result.submods), v.simulated)
                    )
            # Mutual: updates flow only between sites that accepted each other.
            for me in sites:
                core = cores[me]
                mutual = tuple(p for p in core.accepted() if me in cores[p].accepted())
                for d in core.handle(DeployRequested(mutual)):
                    if isinstance(d, JobBlocked):
                        outcomes[me].blocked = d.reason
                    elif isinstance(d, JobReady):
                        outcomes[me].participants = (me, *d.participants)
            for me in sites:
                out = outcomes[me]
                if out.blocked is not None:
                    continue
                # Toy federated averaging: each site's update is (mean, count) of its data.
                updates = [(sum(data[p]) / len(data[p]), len(data[p])) for p in out.participants]
                total = sum(n for _, n in updates)
                out.model = sum(m * n for m, n in updates) / total
        finally:
            for svc in services:
                svc.stop()
    return [outcomes[s] for s in sites]


def _summary(submods: tuple[object, ...]) -> str:
    parts = []
    for sub in submods:
        claims = getattr(sub, "claims", None)
        m = getattr(claims, "measurement", None)
        if isinstance(m, bytes):
            parts.append(f"MEASUREMENT {m.hex()[:16]}... matches policy")
    return "; ".join(parts) or "policy passed"

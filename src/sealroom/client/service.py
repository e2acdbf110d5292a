"""Client of an attested service (docs/adr/0032): verify the enclave behind an HTTPS port,
then talk to it only over connections whose TLS key is the attested one.

``attest()`` opens a fresh TLS connection, asks ``/.well-known/sealroom/attestation`` with a
fresh nonce, and on that very connection's peer certificate checks that its key is the
TLS key the evidence binds: a proxy that terminates TLS with any other key (a
man-in-the-middle, however it obtained the evidence) is refused. Then: evidence signature
and chain, REPORT_DATA = binding(spec hash, enclave keys, nonce), HOST_DATA = spec hash
where the TEE has it, the spec hash against the verifier's own spec (``spec=``), the
verifier's policy. ``request()`` afterwards pins that key on every connection.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509

from sealroom.attestation.appraise import AppraisalResult
from sealroom.attestation.binding import ReportDataInputs, sealroom_report_data
from sealroom.attestation.collateral import CollateralSource, NoCollateral
from sealroom.attestation.evidence import parse_envelope
from sealroom.attestation.kinds import VerifyContext
from sealroom.attestation.policy import Policy
from sealroom.attestation.verifier import appraise, verify_bundle
from sealroom.client.enclave import PinnedHTTPSConnection
from sealroom.crypto.canonical import canonical_json
from sealroom.errors import (
    AttestationError,
    InvalidInputError,
    SealroomError,
    UnavailableError,
    error_from_problem,
)
from sealroom.protocol.enclave import EnclavePublicKeys
from sealroom.protocol.receipt import check_binding
from sealroom.protocol.service import (
    SPEC_DOMAIN,
    WELL_KNOWN_ATTESTATION,
    ServiceSpec,
    parse_service_answer,
)

MAX_ANSWER = 4 << 20


@dataclass(frozen=True)
class AttestedService:
    url: str
    keys: EnclavePublicKeys
    appraisal: AppraisalResult
    spec_hash: bytes
    spec_checked: bool  # the verifier gave its own spec and the hash matched it
    measured_spec: dict[str, Any]
    attested_at: datetime
    evidence: dict[str, Any]  # as the enclave sent it (kept for offline re-verification)
    nonce: bytes

    @property
    def simulated(self) -> bool:
        return any(s.claims.simulated for s in self.appraisal.submods)


@dataclass(frozen=True)
class ServiceResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


def appraise_bound_evidence(
    evidence: dict[str, Any],
    keys: EnclavePublicKeys,
    bound_hash: bytes,
    nonce: bytes,
    policy: Policy,
    *,
    now: datetime,
    collateral: CollateralSource,
    extra_roots: tuple[x509.Certificate, ...] = (),
) -> AppraisalResult:
    """Signature and chain of ``evidence``, REPORT_DATA = binding(``bound_hash``, keys,
    ``nonce``), HOST_DATA = ``bound_hash`` where the TEE has it, then ``policy``. Raises
    for what is not authentic; returns the appraisal (``require_ok()`` is the caller's)."""
    ctx = VerifyContext(
        now=now,
        collateral=collateral,
        nonce=nonce,
        extra_roots=extra_roots,
        report_data_inputs=ReportDataInputs(bound_hash, keys.digest),
    )
    bundle = parse_envelope(json.dumps(evidence).encode())
    verified = verify_bundle(bundle, ctx)
    bound = check_binding(
        verified=verified,
        manifest_hash=bound_hash,
        expected_report_data=sealroom_report_data(ReportDataInputs(bound_hash, keys.digest), nonce),
    )
    return appraise(verified, policy, ctx, caller_rules=bound)


class ServiceClient:
    #: The domain prefix of the hash the enclave binds (a model server: MODEL_DOMAIN).
    spec_domain = SPEC_DOMAIN

    def __init__(
        self,
        url: str,
        policy: Policy,
        *,
        spec: ServiceSpec | None = None,
        extra_roots: tuple[x509.Certificate, ...] = (),
        collateral: CollateralSource | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        timeout: float = 30.0,
        expected_hash: bytes | None = None,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme != "https" or not parts.hostname or parts.port is None:
            raise InvalidInputError(f"service URL must be https://HOST:PORT, got {url!r}")
        self.url = f"https://{parts.netloc}"
        self.host, self.port = parts.hostname, parts.port
        self.policy = policy
        self.spec = spec
        self.expected_hash = spec.spec_hash if spec is not None else expected_hash
        self.extra_roots = extra_roots
        self.collateral = collateral or NoCollateral()
        self.clock = clock
        self.timeout = timeout
        self.attested: AttestedService | None = None

    def _connection(self, pin: bytes | None) -> PinnedHTTPSConnection:
        return PinnedHTTPSConnection(self.host, self.port, pin, self.timeout)

    def attest(self, nonce: bytes | None = None) -> AttestedService:
        nonce = nonce or secrets.token_bytes(32)
        conn = self._connection(None)
        try:
            conn.request("GET", f"{WELL_KNOWN_ATTESTATION}?nonce={nonce.hex()}")
            resp = conn.getresponse()
            body = resp.read(MAX_ANSWER + 1)
            # The key of the very connection that carried the evidence.
            seen_spki = conn.peer_spki
        except SealroomError:
            raise
        except (OSError, http.client.HTTPException) as e:
            raise UnavailableError(f"service at {self.url} unreachable: {e}") from e
        finally:
            conn.close()
        if resp.status != 200:
            raise error_from_problem(
                resp.status,
                body,
                resp.getheader("content-type") or "",
                prefix=f"service answered {resp.status}: ",
            )
        if len(body) > MAX_ANSWER:
            raise UnavailableError("service attestation answer is too large", code="bad-response")
        return self.verify_answer(body, nonce, seen_spki)

    def verify_answer(self, body: bytes, nonce: bytes, seen_spki: bytes) -> AttestedService:
        """Check an attestation answer fetched with ``nonce`` over a connection whose peer
        key was ``seen_spki``; on success the service counts as attested."""
        answer = parse_service_answer(body)
        keys = answer.enclave_keys.keys()
        claimed = bytes.fromhex(answer.spec_hash)
        if keys.tls_spki != seen_spki:
            raise AttestationError(
                "the TLS key of this connection is not the attested key: something between "
                "you and the enclave terminates TLS (man-in-the-middle); refusing",
                code="tls-pin-mismatch",
            )
        if bytes.fromhex(answer.keys_digest) != keys.digest:
            raise AttestationError("keys_digest does not match the keys", code="binding-mismatch")
        if hashlib.sha256(self.spec_domain + canonical_json(answer.spec)).digest() != claimed:
            raise AttestationError(
                "the measured spec shown does not hash to the spec hash", code="binding-mismatch"
            )
        if self.expected_hash is not None and self.expected_hash != claimed:
            raise AttestationError(
                f"the service runs spec {claimed.hex()}, not yours ({self.expected_hash.hex()})",
                code="spec-mismatch",
            )
        if answer.nonce != nonce.hex():
            raise AttestationError("the answer is for another nonce", code="stale-nonce")
        result = appraise_bound_evidence(
            answer.evidence,
            keys,
            claimed,
            nonce,
            self.policy,
            now=self.clock(),
            collateral=self.collateral,
            extra_roots=self.extra_roots,
        )
        self.attested = AttestedService(
            self.url,
            keys,
            result,
            claimed,
            self.expected_hash is not None,
            answer.spec,
            self.clock(),
            answer.evidence,
            nonce,
        )
        result.require_ok()
        return self.attested

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> ServiceResponse:
        """One request over a connection pinned to the attested TLS key."""
        if self.attested is None or not self.attested.appraisal.ok:
            self.attest()
        assert self.attested is not None
        if not path.startswith("/"):
            raise InvalidInputError(f"path must start with '/': {path!r}")
        conn = self._connection(self.attested.keys.tls_spki)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            data = resp.read()
            return ServiceResponse(resp.status, resp.getheaders(), data)
        except SealroomError:
            raise
        except (OSError, http.client.HTTPException) as e:
            raise UnavailableError(f"service at {self.url} unreachable: {e}") from e
        finally:
            conn.close()

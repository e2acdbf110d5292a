"""The guest side of Trustee's KBS protocol (RCAR 0.4.0), as guest-components speaks it.

Importable by the enclave runtime: httpx, pyca/cryptography and the protocol models only
(no web framework, no database). The flow (guest-components ``rcar_client.rs``):

1. ``POST /kbs/v0/auth`` ``{"version": "0.4.0", "tee", "extra-params":
   {"supported-hash-algorithms": [...]}}`` → Challenge + cookie;
2. a fresh ephemeral TEE key; runtime data ``{"nonce", "tee-pubkey"}``; its digest
   (RFC 8785, SHA-384 unless the challenge's ``selected-hash-algorithm`` says otherwise)
   goes into the evidence through the caller's ``evidence`` function;
3. ``POST /kbs/v0/attest`` → ``{"token"}``;
4. ``GET /kbs/v0/resource/<repo>/<type>/<tag>`` → JWE, decrypted with the TEE key exactly
   as ``keypair.rs::decrypt_response`` does.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx

from sealroom.attestation.evidence import EvidenceBundle
from sealroom.errors import AccessDeniedError, InvalidInputError, NotFoundError, UnavailableError
from sealroom.kbs.jwe import JweFailure, TeeKeyPair, decrypt_like_guest
from sealroom.kbs.protocol import (
    HASH_ALGORITHMS,
    KBS_PREFIX,
    PROTOCOL_VERSION,
    SESSION_COOKIE,
    Challenge,
    ErrorInformation,
    JweResponse,
    regularize,
    runtime_data_digest,
)

#: (runtime-data digest) -> Trustee ``primary_evidence`` JSON value. For SNP/TDX the
#: evidence's REPORT_DATA must be ``regularize(digest)`` (see :func:`report_data`).
EvidenceFunction = Callable[[bytes], Any]


class KbsRefused(AccessDeniedError):
    """The KBS refused (Trustee error shape); ``variant`` is its error type suffix."""

    code = "kbs-refused"

    def __init__(self, status: int, info: ErrorInformation | None, text: str) -> None:
        self.status = status
        self.variant = info.type.rsplit("/", 1)[-1] if info else "unknown"
        detail = info.detail if info else text[:500]
        super().__init__(f"KBS answered {status} {self.variant}: {detail}")


class KbsNotFound(NotFoundError):
    code = "kbs-not-found"


def report_data(digest: bytes) -> bytes:
    """REPORT_DATA for SNP/TDX: the digest zero-padded/truncated to 64 bytes."""
    return regularize(digest, 64)


def envelope_evidence(bundle: EvidenceBundle) -> Any:
    """A sealroom evidence envelope as a ``primary_evidence`` JSON value."""
    return json.loads(bundle.to_json())


class KbsClient:
    """One guest's RCAR session with one KBS. ``tee`` is the Trustee TEE name."""

    def __init__(
        self,
        url: str,
        tee: str,
        evidence: EvidenceFunction,
        *,
        key_algorithm: str = "ECDH-ES+A256KW-P256",
        http: httpx.Client | None = None,
        timeout: float = 30.0,
        version: str = PROTOCOL_VERSION,
    ) -> None:
        self.url = url.rstrip("/")
        self.tee = tee
        self._evidence = evidence
        self._key_algorithm = key_algorithm
        self._http = http or httpx.Client(timeout=timeout)
        self._own_http = http is None
        self._version = version
        self._cookie: str | None = None
        self.token: str | None = None
        self.tee_key: TeeKeyPair | None = None

    def close(self) -> None:
        if self._own_http:
            self._http.close()

    def __enter__(self) -> KbsClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _post(self, path: str, body: Any) -> httpx.Response:
        headers = {"Content-Type": "application/json"}
        if self._cookie is not None:
            headers["Cookie"] = f"{SESSION_COOKIE}={self._cookie}"
        try:
            resp = self._http.post(f"{self.url}{KBS_PREFIX}{path}", json=body, headers=headers)
        except httpx.HTTPError as e:
            raise UnavailableError(f"KBS {self.url} unreachable: {e}") from e
        _check(resp)
        return resp

    def auth(self) -> Challenge:
        body = {
            "version": self._version,
            "tee": self.tee,
            "extra-params": {"supported-hash-algorithms": sorted(HASH_ALGORITHMS)},
        }
        resp = self._post("/auth", body)
        sid = resp.cookies.get(SESSION_COOKIE)
        if not sid:
            raise InvalidInputError("KBS answered auth without a kbs-session-id cookie")
        self._cookie = sid
        return Challenge.model_validate(resp.json())

    def attest(self) -> str:
        """The whole handshake; returns (and keeps) the attestation token."""
        challenge = self.auth()
        algorithm = "sha384"
        params = challenge.extra_params
        if isinstance(params, dict) and "selected-hash-algorithm" in params:
            algorithm = str(params["selected-hash-algorithm"]).lower()
            if algorithm not in HASH_ALGORITHMS:
                raise InvalidInputError(f"KBS selected unknown hash algorithm {algorithm!r}")
        self.tee_key = TeeKeyPair.generate(self._key_algorithm)
        pub = self.tee_key.public()
        digest = runtime_data_digest(challenge.nonce, pub, "", algorithm)
        attestation = {
            "runtime-data": {"nonce": challenge.nonce, "tee-pubkey": pub.members()},
            "tee-evidence": {
                "primary_evidence": self._evidence(digest),
                "additional_evidence": "",
            },
        }
        resp = self._post("/attest", attestation)
        token = resp.json().get("token")
        if not isinstance(token, str):
            raise InvalidInputError("KBS attest answer has no token")
        self.token = token
        return token

    def get_resource(self, path: str) -> bytes:
        """``<repository>/<type>/<tag>``; attests first if this client has no session."""
        if self.tee_key is None or self._cookie is None:
            self.attest()
        assert self.tee_key is not None
        headers = {"Cookie": f"{SESSION_COOKIE}={self._cookie}"}
        try:
            resp = self._http.get(f"{self.url}{KBS_PREFIX}/resource/{path}", headers=headers)
        except httpx.HTTPError as e:
            raise UnavailableError(f"KBS {self.url} unreachable: {e}") from e
        _check(resp)
        try:
            return decrypt_like_guest(self.tee_key, JweResponse.model_validate(resp.json()))
        except (JweFailure, ValueError) as e:
            raise InvalidInputError(f"KBS resource {path}: {e}", code="kbs-jwe") from e


def _check(resp: httpx.Response) -> None:
    if resp.status_code == 200:
        return
    info: ErrorInformation | None
    try:
        info = ErrorInformation.model_validate(resp.json())
    except ValueError:
        info = None
    if resp.status_code == 404:
        raise KbsNotFound(f"KBS answered 404: {info.detail if info else resp.text[:300]}")
    raise KbsRefused(resp.status_code, info, resp.text)

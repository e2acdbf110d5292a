"""``SealroomAuthorizer``: NVFlare's ``CCAuthorizer`` on sealroom's tokens and policies.

NVFlare calls ``generate()`` with no argument and ``verify(token)`` with the token only: no
verifier challenge reaches the presenter, and the verifier is not told which connection
delivered the token. So the plugin binds what NVFlare does give it:

- the **site name** and the site's **startup-kit certificate** (``startup/client.crt`` or
  ``server.crt``): the token carries the certificate, REPORT_DATA binds the digest of its
  key, and the verifier checks that it was issued by the project's root CA (its own
  ``startup/rootCA.pem``) to exactly the site the token names;
- a **time window** (a beacon, ``window`` seconds) instead of a challenge, plus an expiry
  (``token_lifetime``) and a cache of token ids seen by this verifier;
- the **project** as the federation id (NVFlare tokens are per site, not per job, so the
  job is the fixed ``nvflare-cc``).

What that stops and what it does not is in ADR 0029 and the README.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID
from nvflare.app_opt.confidential_computing.cc_authorizer import (
    CCAuthorizer,
    CCTokenGenerateError,
)

from sealroom.attestation.policy import Policy
from sealroom.errors import SealroomError
from sealroom.federation.site import TokenIssuer
from sealroom.federation.token import FederationToken, channel_key_digest
from sealroom.federation.verify import Expectation, PeerVerifier
from sealroom.tee.base import open_provider

NAMESPACE = "x-sealroom"
JOB = "nvflare-cc"
log = logging.getLogger(__name__)


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise ValueError(f"sealroom authorizer: cannot read {what} {path}: {e}") from e


@dataclass(frozen=True)
class Verdict:
    """One verification, for listeners (the manager's core) and the verdict log. ``site``
    of a refusal is what the refused token claims (None if unreadable): a claim."""

    verifier: str
    site: str | None
    ok: bool
    code: str
    detail: str
    expires_at: int


def _claimed_site(token: str) -> str | None:
    """The site a refused token names (a claim, for the log only)."""
    try:
        return FederationToken.decode(token).binding.site
    except SealroomError:
        return None


class SealroomAuthorizer(CCAuthorizer):  # type: ignore[misc]  # nvflare ships no type hints
    """Arguments (resources.json ``args``; paths absolute or relative to the process's
    working directory):

    - ``federation``: the federation id every token must carry (use the project name);
    - ``policy``: this site's own appraisal policy (YAML/JSON file);
    - ``tee``: this site's evidence provider (``sim:/path.sock``, ``configfs-tsm``,
      ``sev-guest``, ``tpm2:...``);
    - ``certificate``, ``root_ca``: this site's startup-kit certificate and the project's
      root CA (the channel identity tokens are bound to and checked against);
    - ``extra_roots``: further evidence roots this site trusts (e.g. a sim root);
    - ``window`` (s): the beacon window; ``token_lifetime`` (s): token expiry;
    - ``verdict_log``: optional file (0600, JSON lines) that records every verdict.
    """

    def __init__(
        self,
        federation: str,
        policy: str,
        tee: str,
        certificate: str,
        root_ca: str,
        extra_roots: list[str] | None = None,
        window: int = 60,
        token_lifetime: int = 120,
        verdict_log: str | None = None,
    ) -> None:
        super().__init__()
        cert_pem = _read(certificate, "certificate")
        cert = x509.load_pem_x509_certificate(cert_pem)
        cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        if not cns:
            raise ValueError(f"sealroom authorizer: {certificate} has no common name")
        self.site = str(cns[0].value)
        self.federation = federation
        self.window = int(window)
        self.listeners: list[Callable[[Verdict], None]] = []
        self.verdict_log = verdict_log
        roots = [
            x509.load_pem_x509_certificate(_read(p, "extra root")) for p in (extra_roots or [])
        ]
        self.verifier = PeerVerifier(
            Policy.load(Path(policy)),
            extra_roots=roots,
            channel_roots=[x509.load_pem_x509_certificate(_read(root_ca, "root CA"))],
            beacon_window=self.window,
            max_lifetime=int(token_lifetime),
        )
        self.issuer = TokenIssuer(
            federation=federation,
            site=self.site,
            channel_key=channel_key_digest(cert),
            providers=[open_provider(tee)],
            lifetime=int(token_lifetime),
            certificate=cert.public_bytes(serialization.Encoding.PEM).decode(),
        )

    def get_namespace(self) -> str:
        return NAMESPACE

    def generate(self) -> str:
        try:
            return self.issuer.beacon(JOB, self.window)
        except SealroomError as e:
            raise CCTokenGenerateError(f"sealroom: {e.code}: {e.message}") from e

    def verify(self, token: str) -> bool:
        try:
            verdict = self.verifier.verify(token, Expectation(self.federation, JOB))
        except SealroomError as e:
            # CCManager only sees a bool: the typed reason goes to the log and verdict log.
            claimed = _claimed_site(token)
            log.error(
                "sealroom: %s refused a CC token (claimed site %s): %s: %s",
                self.site,
                claimed,
                e.code,
                e.message,
            )
            self._record(Verdict(self.site, claimed, False, e.code, e.message, 0))
            return False
        sim = " (SIMULATED)" if verdict.simulated else ""
        log.info("sealroom: %s accepted site %s%s", self.site, verdict.site, sim)
        self._record(
            Verdict(
                self.site,
                verdict.site,
                True,
                "accepted",
                f"token {verdict.token_id}{sim}",
                verdict.expires_at,
            )
        )
        return True

    def _record(self, verdict: Verdict) -> None:
        for listener in self.listeners:
            try:
                listener(verdict)
            except Exception:  # a listener's bug must not turn a verdict into a crash
                log.exception("sealroom: verdict listener failed")
        if self.verdict_log is None:
            return
        entry: dict[str, Any] = {
            "at": datetime.now(UTC).isoformat(),
            "unix": time.time(),
            "verifier": verdict.verifier,
            "site": verdict.site,
            "ok": verdict.ok,
            "code": verdict.code,
            "detail": verdict.detail,
        }
        fd = os.open(self.verdict_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, (json.dumps(entry) + "\n").encode())
        finally:
            os.close(fd)

"""The control plane checks receipts itself before it believes a run completed.

A host agent only relays what an enclave wrote; what it says on its own ("completed")
is a claim. A receipt is evidence: signed by the enclave's receipt key, with TEE evidence
binding that key to the manifest. The control plane verifies it with the same code every
party uses (``verify_receipt``), against the manifest's own policy, with trust anchors
it chose itself (vendor roots; a sim authority root only if the operator configured one).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509

from sealroom import paths
from sealroom.attestation.kinds import VerifyContext
from sealroom.controlplane.config import Settings
from sealroom.errors import AttestationError, InvalidInputError
from sealroom.manifest import Manifest
from sealroom.protocol.receipt import VerifiedReceipt, verify_receipt


@dataclass(frozen=True)
class ReceiptFacts:
    """What a verified receipt establishes."""

    ok: bool
    reason: str
    tee_kinds: tuple[str, ...]  # "snp", "tdx", ...; "sim" for simulated evidence


def facts_of(v: VerifiedReceipt) -> ReceiptFacts:
    kinds = sorted({"sim" if s.claims.simulated else s.claims.kind for s in v.appraisal.submods})
    exit_ = v.payload.get("exit") or {}
    return ReceiptFacts(v.ok, str(exit_.get("reason") or ""), tuple(kinds))


class ReceiptVerifier:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def sim_authority_dir(self) -> Path:
        return self.settings.sim_authority or paths.sim_authority()

    def roots(self) -> tuple[x509.Certificate, ...]:
        """The configured sim authority's root, read when needed (an agent on this machine
        may create the authority after the control plane started); none if absent."""
        ark = self.sim_authority_dir() / "ark.pem"
        try:
            return (x509.load_pem_x509_certificate(ark.read_bytes()),)
        except FileNotFoundError:
            return ()
        except (OSError, ValueError) as e:
            raise InvalidInputError(f"sim authority root {ark} is unreadable: {e}") from e

    def verify(self, manifest_doc: dict[str, Any], data: bytes) -> ReceiptFacts:
        """Raises AttestationError (not JSON, forged, unbound, wrong manifest) or
        PolicyViolationError (authentic, but the manifest's policy rejects the evidence)."""
        try:
            doc = json.loads(data)
        except ValueError as e:
            raise AttestationError(f"receipt is not JSON: {e}", code="receipt-malformed") from e
        m = Manifest.from_dict(manifest_doc)
        verified = verify_receipt(
            doc,
            manifest_hash=m.manifest_hash,
            algorithm_sha256=m.algorithm.sha256.hex(),
            dataset_sha256s={d.name: d.sha256.hex() for d in m.datasets},
            policy=m.policy(),
            ctx=VerifyContext(now=self.settings.clock(), extra_roots=self.roots()),
        )
        return facts_of(verified)

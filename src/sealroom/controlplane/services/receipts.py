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
from sealroom.attestation.appraise import AppraisalResult
from sealroom.attestation.kinds import VerifyContext
from sealroom.controlplane.config import Settings
from sealroom.errors import AttestationError, InvalidInputError, PolicyViolationError, SealroomError
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


@dataclass(frozen=True)
class ReceiptCheck:
    """A receipt checked for a person to read (the dashboard): never raises. ``appraisal``
    is every rule (field, got, want, pass) when the evidence was authentic enough to
    appraise, also when the policy rejected it; ``error`` says why it did not verify."""

    ok: bool
    error: str
    error_code: str
    appraisal: AppraisalResult | None
    payload: dict[str, Any] | None

    @property
    def simulated(self) -> bool:
        return self.appraisal is not None and any(
            s.claims.simulated for s in self.appraisal.submods
        )


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

    def check(self, manifest_doc: dict[str, Any], data: bytes) -> ReceiptCheck:
        """``verify`` for display: the same checks, the outcome as data."""
        payload: dict[str, Any] | None = None
        try:
            doc = json.loads(data)
            if isinstance(doc, dict) and isinstance(doc.get("payload"), dict):
                payload = doc["payload"]
            verified = self._verify(manifest_doc, doc)
        except PolicyViolationError as e:
            return ReceiptCheck(False, e.message, e.code, e.result, payload)
        except SealroomError as e:
            return ReceiptCheck(False, e.message, e.code, None, payload)
        except ValueError as e:
            return ReceiptCheck(False, f"receipt is not JSON: {e}", "receipt-malformed", None, None)
        except (KeyError, TypeError, AttributeError) as e:  # a document of the wrong shape
            return ReceiptCheck(
                False, f"receipt is malformed: {e!r}", "receipt-malformed", None, payload
            )
        return ReceiptCheck(True, "", "", verified.appraisal, verified.payload)

    def verify(self, manifest_doc: dict[str, Any], data: bytes) -> ReceiptFacts:
        """Raises AttestationError (not JSON, forged, unbound, wrong manifest) or
        PolicyViolationError (authentic, but the manifest's policy rejects the evidence)."""
        try:
            doc = json.loads(data)
        except ValueError as e:
            raise AttestationError(f"receipt is not JSON: {e}", code="receipt-malformed") from e
        return facts_of(self._verify(manifest_doc, doc))

    def _verify(self, manifest_doc: dict[str, Any], doc: Any) -> VerifiedReceipt:
        m = Manifest.from_dict(manifest_doc)
        return verify_receipt(
            doc,
            manifest_hash=m.manifest_hash,
            algorithm_sha256=m.algorithm.sha256.hex(),
            dataset_sha256s={d.name: d.sha256.hex() for d in m.datasets},
            policy=m.policy(),
            ctx=VerifyContext(now=self.settings.clock(), extra_roots=self.roots()),
        )

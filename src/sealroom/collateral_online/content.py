"""What a downloaded item is, until when it is current, and what it says about rollback.

Every response is parsed before it is cached, so the cache only ever holds the kind of
item that was asked for (a CRL for a CRL, certificates for a VCEK or a chain, a signed
PCS JSON document for TCB info / QE identity). Parsing here is the attestation layer's
own; signatures are checked later, by verification, as for any other collateral.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sealroom.attestation.collateral import CollateralRequest, SeenMark
from sealroom.attestation.tdx import collateral as dcap
from sealroom.attestation.x509util import load_certificates, load_crl
from sealroom.errors import SealroomError, UnavailableError


@dataclass(frozen=True)
class Facts:
    """``valid_until``: CRL / TCB info / QE identity ``nextUpdate``, or the earliest
    certificate ``notAfter``. ``series`` names the sequence the item belongs to
    (``crl:<issuer>``, ``tcbinfo:TDX:<fmspc>``, ``qeidentity:TD_QE``) and ``issued`` /
    ``number`` order items within it (CRL ``thisUpdate``; ``tcbEvaluationDataNumber``)."""

    form: str  # "crl" | "certificates" | "tcb_info" | "qe_identity"
    valid_until: datetime | None
    series: str | None = None
    issued: datetime | None = None
    number: int | None = None

    def older_than(self, seen: SeenMark) -> str | None:
        """Why this item is older than one already seen in its series, or None."""
        return SeenMark(self.number, self.issued).older_than(seen)


def expected_form(request: CollateralRequest) -> str:
    item = request.item.lower()
    if item.endswith("crl"):
        return "crl"
    if item == "tcb info":
        return "tcb_info"
    if item == "qe identity":
        return "qe_identity"
    return "certificates"


def _crl(data: bytes) -> Facts:
    der = dcap.parse_crl_item(data)  # DER, PEM or PCCS hex
    crl = load_crl(der)
    return Facts(
        "crl",
        crl.next_update_utc,
        series=f"crl:{crl.issuer.rfc4514_string()}",
        issued=crl.last_update_utc,
    )


def _certificates(data: bytes) -> Facts:
    certs = load_certificates(data, "downloaded certificates")
    return Facts("certificates", min(c.not_valid_after_utc for c in certs))


def _pcs_json(data: bytes, form: str) -> Facts:
    got = dcap.parse_pcs_response(data)
    if form == "tcb_info" and got.tcb_info is not None:
        t = got.tcb_info
        return Facts(
            "tcb_info",
            t.next_update,
            series=f"tcbinfo:{t.id}:{t.fmspc.hex()}",
            issued=t.issue_date,
            number=t.tcb_evaluation_data_number,
        )
    if form == "qe_identity" and got.qe_identity is not None:
        q = got.qe_identity
        return Facts(
            "qe_identity",
            q.next_update,
            series=f"qeidentity:{q.id}",
            issued=q.issue_date,
            number=q.tcb_evaluation_data_number,
        )
    raise ValueError(f"a PCS document, but not {form.replace('_', ' ')}")


def inspect(request: CollateralRequest, data: bytes, url: str) -> Facts:
    """Facts about ``data`` fetched from ``url`` for ``request``; UnavailableError when the
    service answered with something that is not the item asked for."""
    form = expected_form(request)
    try:
        if form == "crl":
            return _crl(data)
        if form == "certificates":
            return _certificates(data)
        return _pcs_json(data, form)
    except (SealroomError, ValueError) as e:
        msg = e.message if isinstance(e, SealroomError) else str(e)
        raise UnavailableError(
            f"{url} answered with something that is not the {request.item} asked for: {msg}",
            code="collateral-response-invalid",
        ) from e

"""Reading a sealroom transparency log over HTTP (public endpoints, no credential). What
comes back is only data: every checkpoint and proof is verified by ``sealroom.tlog`` with
the verifier's own log key (docs/adr/0031)."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from sealroom.client.http import ApiClient
from sealroom.errors import UnavailableError
from sealroom.protocol.tlog import Appended, ConsistencyProofOut, InclusionProofOut


def _hashes(items: list[str]) -> list[bytes]:
    try:
        return [base64.b64decode(h, validate=True) for h in items]
    except binascii.Error as e:
        raise UnavailableError(
            f"log answered a proof hash that is not base64: {e}", code="bad-response"
        ) from e


class LogClient(ApiClient):
    """``base_url`` is the control plane's URL (the log lives under ``/log``)."""

    def __init__(self, base_url: str, admin_key: str | None = None, timeout: float = 30.0) -> None:
        super().__init__(base_url, admin_key, timeout=timeout, what="transparency log")

    def __enter__(self) -> LogClient:
        return self

    def append(self, kind: str, payload: dict[str, Any]) -> Appended:
        """Append one entry as the operator (needs the admin key given at construction);
        for components outside the control plane process, e.g. a key broker's audit hook.
        PUBLIC FOREVER: hashes, identifiers, verdicts and times only."""
        # the control plane validates (EntryIn) and answers a typed problem
        return self.model(
            "POST", "/api/v1/log/entries", Appended, json={"kind": kind, "payload": payload}
        )

    def entry(self, index: int) -> bytes:
        """The logged bytes of entry ``index`` (a claim until proven against a checkpoint)."""
        return self.request("GET", f"/log/entries/{index}", auth=False).content

    def checkpoint(self) -> bytes:
        return self.request("GET", "/log/checkpoint", auth=False).content

    def inclusion(self, index: int, size: int) -> list[bytes]:
        out = self.model(
            "GET", f"/log/proof/inclusion?index={index}&size={size}", InclusionProofOut, auth=False
        )
        return _hashes(out.hashes)

    def consistency(self, old: int, new: int) -> list[bytes]:
        out = self.model(
            "GET", f"/log/proof/consistency?old={old}&new={new}", ConsistencyProofOut, auth=False
        )
        return _hashes(out.hashes)

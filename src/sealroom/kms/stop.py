"""Stopping computations in a lockdown's scope through the control plane.

The key manager knows, from its audit trail, which enclaves received a key in scope: each
release records the evidence's HOST_DATA, which for a sealroom enclave is its manifest
hash. The control plane's cancel (``POST /api/v1/computations/{id}/cancel``, an admin
may cancel any) stops those computations: the host agent tears the enclave down and the
runtime wipes its storage, so the keys it held in memory go with it (ADR 0027).

What is *not* reached: an enclave in scope that never received a key from this KMS (the
KMS cannot tell it from evidence it never saw), and enclaves that a control plane other
than the one given runs. Both are reported as ``not_reached`` rather than silently left.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from sealroom.errors import SealroomError
from sealroom.kms.lockdown import Scope
from sealroom.protocol.api import ComputationOut, StateOut
from sealroom.protocol.lifecycle import LIVE


class CancellingClient(Protocol):
    """The part of :class:`sealroom.client.controlplane.ControlPlaneClient` used here."""

    def computations(self) -> list[ComputationOut]: ...

    def cancel(self, cid: str) -> StateOut: ...


class ControlPlaneStopper:
    """A :class:`sealroom.kms.lockdown.Stopper` over the control plane's typed client."""

    def __init__(self, client: CancellingClient) -> None:
        self.client = client

    def __call__(
        self, scope: Scope, released: Sequence[Mapping[str, Any]], /
    ) -> tuple[list[str], list[str]]:
        hashes = {
            str(f["host_data"]).lower()
            for r in released
            for f in r.get("facts", [])
            if f.get("host_data")
        }
        stopped: list[str] = []
        not_reached: list[str] = []
        for comp in self.client.computations():
            if comp.state not in LIVE:
                continue
            if comp.manifest_hash.lower() not in hashes:
                continue
            try:
                self.client.cancel(comp.id)
                stopped.append(comp.id)
            except SealroomError as e:
                not_reached.append(f"{comp.id}: {e.message}")
        if scope.account is None and not hashes:
            not_reached.append(
                "no release in scope recorded: enclaves in scope that never got a key from "
                "this KMS are not identified and keep running"
            )
        return stopped, not_reached

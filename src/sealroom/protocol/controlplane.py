"""The control plane's wire constants and the bytes a consumer signs to fetch a result;
shared by the control plane, its clients and the host agent."""

from __future__ import annotations

import struct

from sealroom.protocol.enclave import PUBLIC_EVENT_TYPES

RESULT_REQUEST_DOMAIN = b"sealroom/cp-result-request/v1"
PARTY_VIEW_DOMAIN = b"sealroom/cp-party-view/v1"
H_CHALLENGE = "X-Sealroom-Challenge"
H_SIGNATURE = "X-Sealroom-Signature"
H_SEALED_SHA256 = "X-Sealroom-Sealed-Sha256"
H_BLOB_SHA256 = "X-Sealroom-Sha256"

USER_KEY_PREFIX = "srk_"
AGENT_CREDENTIAL_PREFIX = "sra_"
JOIN_TOKEN_PREFIX = "srj_"  # noqa: S105 - a prefix, not a secret

#: Enclave events a host agent may relay: the runtime's public lifecycle events (one
#: list, the runtime's). Algorithm output is never one; states come from heartbeats and
#: receipts.
FORWARDABLE_EVENTS = PUBLIC_EVENT_TYPES


def _field(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def result_request_message(
    computation_id: str, manifest_hash: bytes, consumer: str, challenge: bytes
) -> bytes:
    """What a consumer signs (Ed25519) to fetch its sealed result or the receipt from the
    control plane: length-prefixed domain, computation id, manifest hash, consumer name and
    the one-time server challenge, so a signature cannot be replayed elsewhere."""
    return _request_message(
        RESULT_REQUEST_DOMAIN, computation_id, manifest_hash, consumer, challenge
    )


def _request_message(
    domain: bytes, computation_id: str, manifest_hash: bytes, party: str, challenge: bytes
) -> bytes:
    return b"".join(
        _field(x)
        for x in (domain, computation_id.encode(), manifest_hash, party.encode(), challenge)
    )


def party_view_message(
    computation_id: str, manifest_hash: bytes, party: str, challenge: bytes
) -> bytes:
    """What a party named in a manifest signs (Ed25519) to see that computation's public
    state without an account (docs/adr/0037): like ``result_request_message`` under its own
    domain, so neither signature is accepted for the other."""
    return b"".join(
        _field(x)
        for x in (
            PARTY_VIEW_DOMAIN,
            computation_id.encode(),
            manifest_hash,
            party.encode(),
            challenge,
        )
    )

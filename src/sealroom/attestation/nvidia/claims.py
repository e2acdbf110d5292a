"""Claims from NVIDIA SPDM evidence (one GPU or NVSwitch)."""

from __future__ import annotations

from dataclasses import dataclass, field

from sealroom.attestation.claims import Claims


@dataclass(frozen=True, kw_only=True)
class NvidiaClaims(Claims):
    #: "gpu" or "nvswitch" (from the certified chip name), "unknown" otherwise.
    device_kind: str
    #: "HOPPER", "LS10", ... ("unknown" for a chip sealroom does not know).
    arch: str
    #: Chip name from the device certificates ("GH100", "LS_10"); "" when no chain.
    chip: str
    spdm_version: str
    #: Measurement index -> DMTF measurement value (hex).
    measurements: dict[int, str]
    #: The verifier's nonce as sent in the signed GET_MEASUREMENTS request.
    nonce: bytes | None
    #: The device's own nonce from the MEASUREMENTS response.
    responder_nonce: bytes
    driver_version: str | None
    vbios_version: str | None
    project: str | None
    project_sku: str | None
    chip_sku: str | None
    #: Every opaque-data field, decoded (names from abi.OpaqueFieldId, lower case).
    opaque: dict[str, str] = field(default_factory=dict)
    #: Subjects of the presented chain, leaf first (RFC 4514).
    cert_chain: tuple[str, ...] = ()
    leaf_fingerprint: str = ""
    #: SHA-256 fingerprint of the root that anchored the chain ("" when not verified).
    root_fingerprint: str = ""
    #: True when the root is an embedded NVIDIA root, False for a caller-supplied one.
    vendor_rooted: bool = False
    #: FWID from the leaf's tcg-dice-TcbInfo extension (hex), and its hash algorithm.
    fwid: str | None = None
    fwid_alg: str | None = None
    #: Device name from the leaf's subjectAltName ("NVIDIA:GH100:48B02D92494BADF4").
    device_name: str | None = None
    #: Unsigned bytes found after the signature (ignored; reported).
    trailing_bytes: int = 0

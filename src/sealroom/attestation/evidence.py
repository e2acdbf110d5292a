"""The evidence envelope: what a party hands a verifier.

A bundle holds one or more items (a CPU report and GPU evidence, say); each item is one
piece of evidence of one kind plus named attachments (certificates, collateral, AK,
PCR values). The JSON form is ``sealroom-evidence/v1``::

    {"format": "sealroom-evidence/v1",
     "items": [{"kind": "snp", "name": "cpu0", "data": "<base64>",
                "attachments": {"vcek": "<base64>"}, "collected_at": "2026-11-21T08:00:00Z"}]}

Foreign formats (a raw SNP report, hex, vendor JSON) are recognised by each evidence
kind's ``sniff``/``load`` (see ``kinds.py``).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any

from sealroom.errors import MalformedEvidenceError

FORMAT = "sealroom-evidence/v1"


@dataclass(frozen=True)
class EvidenceItem:
    """One piece of evidence of one kind."""

    kind: str
    data: bytes
    attachments: Mapping[str, bytes] = field(default_factory=lambda: MappingProxyType({}))
    # Submodule name in appraisal results and EAR tokens ("cpu0", "gpu3"); None = kind default.
    name: str | None = None
    # When the presenter says the evidence was collected. Unauthenticated: freshness proper
    # comes from a verifier nonce bound into the evidence.
    collected_at: datetime | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.attachments, MappingProxyType):
            object.__setattr__(self, "attachments", MappingProxyType(dict(self.attachments)))

    def with_attachments(self, extra: Mapping[str, bytes]) -> EvidenceItem:
        merged = dict(self.attachments)
        merged.update(extra)
        return EvidenceItem(self.kind, self.data, merged, self.name, self.collected_at)

    def to_json_obj(self) -> dict[str, Any]:
        obj: dict[str, Any] = {
            "kind": self.kind,
            "data": base64.b64encode(self.data).decode(),
            "attachments": {
                k: base64.b64encode(v).decode() for k, v in sorted(self.attachments.items())
            },
        }
        if self.name is not None:
            obj["name"] = self.name
        if self.collected_at is not None:
            obj["collected_at"] = self.collected_at.isoformat()
        return obj


@dataclass(frozen=True)
class EvidenceBundle:
    items: tuple[EvidenceItem, ...]

    def __post_init__(self) -> None:
        if not self.items:
            raise MalformedEvidenceError("evidence bundle holds no items")

    def to_json(self) -> str:
        return json.dumps(
            {"format": FORMAT, "items": [i.to_json_obj() for i in self.items]}, indent=2
        )

    @staticmethod
    def single(item: EvidenceItem) -> EvidenceBundle:
        return EvidenceBundle((item,))


def _b64(value: object, where: str) -> bytes:
    if not isinstance(value, str):
        raise MalformedEvidenceError(f"{where} must be a base64 string, got {type(value).__name__}")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as e:
        raise MalformedEvidenceError(f"{where} is not valid base64: {e}") from e


def _time(value: object, where: str) -> datetime:
    if not isinstance(value, str):
        raise MalformedEvidenceError(f"{where} must be an ISO 8601 string")
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as e:
        raise MalformedEvidenceError(f"{where} is not an ISO 8601 time: {value!r}") from e
    if t.tzinfo is None:
        raise MalformedEvidenceError(f"{where} has no time zone: {value!r}")
    return t


def is_envelope(data: bytes) -> bool:
    head = data.lstrip()[:200]
    return head.startswith(b"{") and FORMAT.encode() in head


def parse_envelope(data: bytes) -> EvidenceBundle:
    """Parse ``sealroom-evidence/v1`` JSON. Strict: unknown keys are errors."""
    try:
        obj = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise MalformedEvidenceError(f"evidence envelope is not JSON: {e}") from e
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        got = obj.get("format") if isinstance(obj, dict) else type(obj).__name__
        raise MalformedEvidenceError(f"evidence format is {got!r}, expected {FORMAT!r}")
    extra = set(obj) - {"format", "items"}
    if extra:
        raise MalformedEvidenceError(f"evidence envelope has unknown keys {sorted(extra)}")
    raw_items = obj.get("items")
    if not isinstance(raw_items, list):
        raise MalformedEvidenceError("evidence envelope 'items' must be a list")
    items = []
    for n, raw in enumerate(raw_items):
        where = f"items[{n}]"
        if not isinstance(raw, dict):
            raise MalformedEvidenceError(f"{where} must be an object")
        extra = set(raw) - {"kind", "name", "data", "attachments", "collected_at"}
        if extra:
            raise MalformedEvidenceError(f"{where} has unknown keys {sorted(extra)}")
        kind = raw.get("kind")
        if not isinstance(kind, str) or not kind:
            raise MalformedEvidenceError(f"{where}.kind must be a non-empty string")
        name = raw.get("name")
        if name is not None and not isinstance(name, str):
            raise MalformedEvidenceError(f"{where}.name must be a string")
        atts_raw = raw.get("attachments", {})
        if not isinstance(atts_raw, dict):
            raise MalformedEvidenceError(f"{where}.attachments must be an object")
        atts = {str(k): _b64(v, f"{where}.attachments.{k}") for k, v in atts_raw.items()}
        collected = raw.get("collected_at")
        items.append(
            EvidenceItem(
                kind=kind,
                data=_b64(raw.get("data"), f"{where}.data"),
                attachments=atts,
                name=name,
                collected_at=None
                if collected is None
                else _time(collected, f"{where}.collected_at"),
            )
        )
    return EvidenceBundle(tuple(items))

"""The key manager's audit trail: append-only, hash-chained, exportable, verifiable.

Every creation, rotation, revocation, destruction, release, refusal, lockdown and lift is
one line of ``audit.jsonl``::

    {"seq": N, "time": ISO-8601, "prev": HEX, "event": {...}, "hash": HEX}

``hash = SHA-256(DOMAIN || canonical_json({seq, time, prev, event}))`` (RFC 8785) and
``prev`` is the previous line's ``hash`` (64 zeros for the first). A rewritten line breaks
its own hash; a dropped or reordered line breaks the next ``prev``/``seq``; a dropped tail
is caught against ``audit.head`` (the last seq and hash, rewritten 0600 after every
append), which an exporter copies alongside and an auditor may pin elsewhere.

The event says who acted (``actor``), what (``action``, ``key_id``, ``version``), on which
evidence (``evidence_digest``: SHA-256 of the canonical EAR claims), under which policy
(``policy``) and with what result (``result``: ok / released / refused), plus ``detail``.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sealroom.crypto.canonical import canonical_json
from sealroom.errors import AttestationError, InvalidInputError
from sealroom.files import exclusive_lock, write_private

DOMAIN = b"sealroom/kms-audit/v1\0"
GENESIS = "0" * 64
LOG_NAME = "audit.jsonl"
HEAD_NAME = "audit.head"

ACTIONS = frozenset(
    {
        "key-create",
        "key-rotate",
        "key-revoke",
        "key-destroy",
        "kek-rotate",
        "release",
        "refusal",
        "lockdown",
        "lockdown-lift",
        "lockdown-stop",
    }
)


def evidence_digest(claims: Mapping[str, Any]) -> str:
    """SHA-256 of the EAR claims as sorted compact JSON (what the audit names as
    evidence). Not RFC 8785: claims carry 64-bit integers (an SNP TCB's raw value) that
    I-JSON cannot hold."""
    text = json.dumps(dict(claims), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def _entry_hash(seq: int, time: str, prev: str, event: Mapping[str, Any]) -> str:
    body = canonical_json({"seq": seq, "time": time, "prev": prev, "event": dict(event)})
    return hashlib.sha256(DOMAIN + body).hexdigest()


@dataclass(frozen=True)
class AuditHead:
    seq: int  # -1 for an empty log
    hash: str


class AuditLog:
    """An append-only hash-chained log in ``directory`` (one writer at a time, flock)."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.path = self.directory / LOG_NAME
        self.head_path = self.directory / HEAD_NAME

    def _locked(self) -> AbstractContextManager[None]:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        return exclusive_lock(self.directory / ".audit.lock")

    def head(self) -> AuditHead:
        try:
            doc = json.loads(self.head_path.read_text())
        except FileNotFoundError:
            return AuditHead(-1, GENESIS)
        return AuditHead(int(doc["seq"]), str(doc["hash"]))

    def append(
        self,
        action: str,
        *,
        actor: str,
        result: str = "ok",
        key_id: str | None = None,
        version: int | None = None,
        evidence_digest: str | None = None,
        policy: str | None = None,
        detail: Mapping[str, Any] | None = None,
        now: datetime | None = None,
    ) -> AuditHead:
        if action not in ACTIONS:
            raise ValueError(f"unknown audit action {action!r}")
        event: dict[str, Any] = {
            "action": action,
            "actor": actor,
            "result": result,
            "key_id": key_id,
            "version": version,
            "evidence_digest": evidence_digest,
            "policy": policy,
            "detail": dict(detail or {}),
        }
        with self._locked():
            head = self.head()
            seq = head.seq + 1
            time = (now or datetime.now(UTC)).isoformat()
            digest = _entry_hash(seq, time, head.hash, event)
            line = json.dumps(
                {"seq": seq, "time": time, "prev": head.hash, "event": event, "hash": digest},
                sort_keys=True,
                separators=(",", ":"),
            )
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line.encode() + b"\n")
                os.fsync(fd)
            finally:
                os.close(fd)
            new = AuditHead(seq, digest)
            write_private(
                self.head_path,
                json.dumps({"seq": seq, "hash": digest}).encode(),
                overwrite=True,
                what="audit head",
            )
            return new

    def entries(self) -> list[dict[str, Any]]:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def export(self, dest: Path) -> AuditHead:
        """Write the log (verified first) to ``dest`` and its head to ``dest.head``."""
        with self._locked():
            head = verify_log(self.path, self.head())
            data = self.path.read_bytes() if self.path.exists() else b""
        write_private(Path(dest), data, overwrite=True, what="audit export")
        write_private(
            Path(f"{dest}.head"),
            json.dumps({"seq": head.seq, "hash": head.hash}).encode(),
            overwrite=True,
            what="audit export head",
        )
        return head


def _broken(seq: int, why: str) -> AttestationError:
    return AttestationError(f"audit log entry {seq}: {why}", code="kms-audit-chain-broken")


def verify_lines(lines: list[str], head: AuditHead | None = None) -> AuditHead:
    """Check the chain of ``lines``; with ``head``, also that nothing after it was dropped.
    Returns the last seq and hash; AttestationError(code=kms-audit-chain-broken) names the
    first entry that does not fit."""
    prev, expect = GENESIS, 0
    for n, raw in enumerate(lines):
        if not raw.strip():
            continue
        try:
            entry = json.loads(raw)
            seq, time, event, got = entry["seq"], entry["time"], entry["event"], entry["hash"]
            claimed_prev = entry["prev"]
        except (ValueError, KeyError, TypeError) as e:
            raise _broken(n, f"not an audit entry ({e})") from e
        if set(entry) != {"seq", "time", "prev", "event", "hash"}:
            raise _broken(seq, f"fields {sorted(entry)}")
        if seq != expect:
            raise _broken(seq, f"seq is {seq}, want {expect} (an entry was dropped or moved)")
        if claimed_prev != prev:
            raise _broken(seq, "prev does not match the hash of the entry before it")
        if _entry_hash(seq, time, prev, event) != got:
            raise _broken(seq, "its hash does not match its content (the entry was rewritten)")
        prev, expect = got, expect + 1
    last = AuditHead(expect - 1, prev)
    if head is not None and (head.seq, head.hash) != (last.seq, last.hash):
        raise AttestationError(
            f"audit log ends at entry {last.seq} but its head says {head.seq} "
            "(entries were dropped from the end or the head does not belong to it)",
            code="kms-audit-chain-broken",
        )
    return last


def verify_log(path: Path, head: AuditHead | None = None) -> AuditHead:
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        text = ""
    return verify_lines(text.splitlines(), head)


def load_head(path: Path) -> AuditHead:
    try:
        doc = json.loads(Path(path).read_text())
        return AuditHead(int(doc["seq"]), str(doc["hash"]))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise InvalidInputError(f"audit head {path}: {e}") from e

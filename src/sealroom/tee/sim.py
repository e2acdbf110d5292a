"""The GUEST side of the sim TEE: ask the host's sim authority for a report over a Unix socket.

The host (``sealroom.attestation.sim.service.SimTeeService``) fixed MEASUREMENT and
HOST_DATA when it launched this runtime; the guest sends only REPORT_DATA. The answer is a
real-layout SNP report signed by the sim VCEK plus the VCEK and ASK, i.e. an ``snp`` item
that the production SNP verifier checks against the sim root (and flags ``simulated``).
Sim evidence proves nothing about confidentiality (design.md, "Trust model").
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import socket
import time
from datetime import UTC, datetime
from pathlib import Path

from sealroom.attestation.evidence import EvidenceItem
from sealroom.attestation.snp.abi import parse_report
from sealroom.errors import AttestationError, MalformedEvidenceError, UnavailableError
from sealroom.tee.base import require_report_data

#: Largest answer accepted: a report and two certificates in base64 are a few KiB.
MAX_RESPONSE = 256 * 1024
_ATTACHMENT_NAMES = frozenset({"vcek", "vlek", "ask", "asvk", "ark", "certtable"})


class SimProvider:
    """Collects ``snp`` evidence from a :class:`SimTeeService` listening on ``socket_path``."""

    kind = "snp"

    def __init__(self, socket_path: Path, timeout: float = 10) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be > 0")
        self.socket_path = Path(socket_path)
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"SimProvider({str(self.socket_path)!r})"

    def collect(self, report_data: bytes) -> EvidenceItem:
        wanted = require_report_data(report_data)
        raw = self._exchange(json.dumps({"report_data": wanted.hex()}).encode() + b"\n")
        item = _decode_answer(raw, self.socket_path)
        report = parse_report(item.data)
        if report.report_data != wanted:
            raise AttestationError(
                f"sim TEE answered with REPORT_DATA {report.report_data.hex()[:32]}..., "
                f"expected {wanted.hex()[:32]}... (the answer is not for this request)",
                code="tee-report-data-mismatch",
            )
        return item

    def _exchange(self, request: bytes) -> bytes:
        deadline = time.monotonic() + self.timeout
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            try:
                sock.connect(os.fspath(self.socket_path))
                sock.sendall(request)
                sock.shutdown(socket.SHUT_WR)
                buf = bytearray()
                while True:
                    if time.monotonic() > deadline:
                        raise TimeoutError
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    buf += chunk
                    if len(buf) > MAX_RESPONSE:
                        raise MalformedEvidenceError(
                            f"sim TEE answer is larger than {MAX_RESPONSE} bytes",
                            code="sim-tee-bad-answer",
                        )
            except TimeoutError as e:
                raise UnavailableError(
                    f"sim TEE at {self.socket_path} did not answer within {self.timeout}s",
                    code="sim-tee-unavailable",
                ) from e
            except OSError as e:
                raise UnavailableError(
                    f"sim TEE at {self.socket_path} is unreachable: {e.strerror or e}",
                    code="sim-tee-unavailable",
                ) from e
        finally:
            sock.close()
        return bytes(buf)


def _b64(value: object, where: str) -> bytes:
    if not isinstance(value, str):
        raise MalformedEvidenceError(
            f"sim TEE answer: {where} must be a base64 string", code="sim-tee-bad-answer"
        )
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as e:
        raise MalformedEvidenceError(
            f"sim TEE answer: {where} is not base64: {e}", code="sim-tee-bad-answer"
        ) from e


def _decode_answer(raw: bytes, where: Path) -> EvidenceItem:
    line = raw.rstrip(b"\n")
    if not line:
        raise UnavailableError(
            f"sim TEE at {where} closed the connection without an answer",
            code="sim-tee-unavailable",
        )
    if b"\n" in line:
        raise MalformedEvidenceError(
            "sim TEE answer holds more than one line", code="sim-tee-bad-answer"
        )
    try:
        obj = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise MalformedEvidenceError(
            f"sim TEE answer is not JSON: {e}", code="sim-tee-bad-answer"
        ) from e
    if not isinstance(obj, dict):
        raise MalformedEvidenceError(
            "sim TEE answer is not a JSON object", code="sim-tee-bad-answer"
        )
    if "error" in obj:
        message = obj["error"] if isinstance(obj["error"], str) else repr(obj["error"])
        raise UnavailableError(f"sim TEE refused: {message[:500]}", code="sim-tee-refused")
    extra = sorted(set(obj) - {"report", "attachments"})
    if extra:
        raise MalformedEvidenceError(
            f"sim TEE answer has unknown keys {extra}", code="sim-tee-bad-answer"
        )
    report = _b64(obj.get("report"), "report")
    atts_raw = obj.get("attachments", {})
    if not isinstance(atts_raw, dict):
        raise MalformedEvidenceError(
            "sim TEE answer: attachments must be an object", code="sim-tee-bad-answer"
        )
    attachments: dict[str, bytes] = {}
    for name, value in atts_raw.items():
        if name not in _ATTACHMENT_NAMES:
            raise MalformedEvidenceError(
                f"sim TEE answer: unexpected attachment {name!r} "
                f"(expected some of {sorted(_ATTACHMENT_NAMES)})",
                code="sim-tee-bad-answer",
            )
        attachments[name] = _b64(value, f"attachments.{name}")
    return EvidenceItem(
        kind="snp", data=report, attachments=attachments, collected_at=datetime.now(UTC)
    )

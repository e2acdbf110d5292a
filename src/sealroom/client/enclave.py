"""Party-side client for an enclave: verify first, then talk only to the attested key.

``attest()`` sends a fresh nonce, verifies the evidence (signatures, chain, the party's
policy), checks that REPORT_DATA binds the manifest hash, the enclave's three public
keys and the nonce, and that the TLS key of this very connection is the attested one.
Every later request pins that TLS key; a different key aborts the connection.
"""

from __future__ import annotations

import hashlib
import http.client
import io
import json
import os
import secrets
import select
import ssl
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, NoReturn
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from sealroom.attestation.appraise import AppraisalResult
from sealroom.attestation.binding import ReportDataInputs, sealroom_report_data
from sealroom.attestation.collateral import CollateralSource, NoCollateral
from sealroom.attestation.evidence import parse_envelope
from sealroom.attestation.kinds import VerifyContext
from sealroom.attestation.policy import Policy
from sealroom.attestation.verifier import appraise, verify_bundle
from sealroom.crypto.keys import PartyKeys
from sealroom.crypto.sealing import open_bytes, open_stream, sealed_size
from sealroom.crypto.signing import upload_message
from sealroom.errors import (
    AttestationError,
    InvalidInputError,
    MalformedEvidenceError,
    NotFoundError,
    RunFailedError,
    SealroomError,
    UnavailableError,
    error_from_problem,
)
from sealroom.manifest import Manifest
from sealroom.protocol.enclave import (
    H_CHALLENGE,
    H_RESULT_SHA256,
    H_SHA256,
    H_SIGNATURE,
    MAX_RUN_LOG_BYTES,
    EnclavePublicKeys,
    log_info,
    log_request_message,
    result_info,
    result_request_message,
)
from sealroom.protocol.enclave_api import (
    AttestationAnswer,
    ChallengeAnswer,
    EnclaveEvent,
    EventsAnswer,
    StatusAnswer,
    UploadAnswer,
    parse_answer,
)
from sealroom.protocol.receipt import VerifiedReceipt, check_binding, verify_receipt
from sealroom.runtime.archive import archive_dir, safe_extract

CHUNK = 1 << 20


class PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to an enclave's self-signed key: no CA, but the SPKI must equal the pin
    (when one is set). The SPKI of the connection is kept for the attestation check."""

    def __init__(self, host: str, port: int, pin: bytes | None, timeout: float) -> None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE  # trust comes from attestation + the pin below
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        super().__init__(host, port, timeout=timeout, context=ctx)
        self.pin = pin
        self.peer_spki = b""

    def connect(self) -> None:
        super().connect()
        assert isinstance(self.sock, ssl.SSLSocket)
        der = self.sock.getpeercert(binary_form=True)
        if der is None:
            self.close()
            raise AttestationError("enclave presented no TLS certificate", code="tls-pin-mismatch")
        self.peer_spki = (
            x509.load_der_x509_certificate(der)
            .public_key()
            .public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        if self.pin is not None and self.peer_spki != self.pin:
            self.close()
            raise AttestationError(
                "the enclave's TLS key is not the attested key (pinned after verification): "
                "refusing to talk to it",
                code="tls-pin-mismatch",
            )


@dataclass(frozen=True)
class AttestedEnclave:
    url: str
    keys: EnclavePublicKeys
    appraisal: AppraisalResult
    manifest_hash: bytes

    @property
    def simulated(self) -> bool:
        return any(s.claims.simulated for s in self.appraisal.submods)


def _raise_problem(resp: http.client.HTTPResponse, body: bytes) -> None:
    raise error_from_problem(
        resp.status,
        body,
        resp.getheader("content-type") or "",
        prefix=f"enclave answered {resp.status}: ",
    )


class EnclaveClient:
    def __init__(
        self,
        url: str,
        manifest: Manifest,
        *,
        policy: Policy | None = None,
        extra_roots: tuple[x509.Certificate, ...] = (),
        collateral: CollateralSource | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        timeout: float = 60.0,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme != "https" or not parts.hostname or parts.port is None:
            raise InvalidInputError(f"enclave URL must be https://HOST:PORT, got {url!r}")
        self.url = url
        self.host, self.port = parts.hostname, parts.port
        self.manifest = manifest
        self.policy = policy or manifest.policy()
        self.extra_roots = extra_roots
        self.collateral = collateral or NoCollateral()
        self.clock = clock
        self.timeout = timeout
        self.attested: AttestedEnclave | None = None

    # ---- plumbing ---------------------------------------------------------------------
    @contextmanager
    def _conn(self, pinned: bool = True) -> Iterator[PinnedHTTPSConnection]:
        pin = None
        if pinned:
            if self.attested is None:
                raise RuntimeError("attest() first")
            pin = self.attested.keys.tls_spki
        conn = PinnedHTTPSConnection(self.host, self.port, pin, self.timeout)
        try:
            yield conn
        except (ConnectionError, TimeoutError, OSError) as e:
            if isinstance(e, SealroomError):
                raise
            raise UnavailableError(f"enclave at {self.url} unreachable: {e}") from e
        finally:
            conn.close()

    def _get(self, path: str) -> bytes:
        with self._conn() as conn:
            conn.request("GET", path)
            resp = conn.getresponse()
            body = resp.read()
            if resp.status != 200:
                _raise_problem(resp, body)
            return body

    def _ctx(self, nonce: bytes, keys: EnclavePublicKeys) -> VerifyContext:
        return VerifyContext(
            now=self.clock(),
            collateral=self.collateral,
            nonce=nonce,
            extra_roots=self.extra_roots,
            report_data_inputs=ReportDataInputs(self.manifest.manifest_hash, keys.digest),
        )

    # ---- verification -------------------------------------------------------------------
    def attest(self) -> AttestedEnclave:
        nonce = secrets.token_bytes(32)
        with self._conn(pinned=False) as conn:
            conn.request("GET", f"/attestation?nonce={nonce.hex()}")
            resp = conn.getresponse()
            body = resp.read()
            if resp.status != 200:
                _raise_problem(resp, body)
            seen_spki = conn.peer_spki
        answer = parse_answer(AttestationAnswer, body, "GET /attestation")
        keys = answer.enclave_keys.keys()
        bundle = parse_envelope(json.dumps(answer.evidence).encode())
        claimed_hash = bytes.fromhex(answer.manifest_hash)
        mh = self.manifest.manifest_hash
        if claimed_hash != mh:
            raise AttestationError(
                f"the enclave runs manifest {claimed_hash.hex()}, not ours ({mh.hex()})",
                code="binding-mismatch",
            )
        if keys.tls_spki != seen_spki:
            raise AttestationError(
                "the attested TLS key is not the key of this connection", code="tls-pin-mismatch"
            )
        ctx = self._ctx(nonce, keys)
        verified = verify_bundle(bundle, ctx)
        bound = check_binding(
            verified=verified,
            manifest_hash=mh,
            expected_report_data=sealroom_report_data(ReportDataInputs(mh, keys.digest), nonce),
        )
        result = appraise(verified, self.policy, ctx, caller_rules=bound)
        self.attested = AttestedEnclave(self.url, keys, result, mh)
        result.require_ok()
        return self.attested

    def _require_attested(self) -> AttestedEnclave:
        if self.attested is None or not self.attested.appraisal.ok:
            return self.attest()
        return self.attested

    # ---- queries ---------------------------------------------------------------------------
    def status(self) -> StatusAnswer:
        self._require_attested()
        return parse_answer(StatusAnswer, self._get("/status"), "GET /status")

    def events(self, after: int = 0, wait: float = 0.0) -> list[EnclaveEvent]:
        self._require_attested()
        path = f"/events?after={after}&wait={wait}"
        return parse_answer(EventsAnswer, self._get(path), f"GET {path}").events

    # ---- uploads ------------------------------------------------------------------------------
    def upload(
        self,
        slot: str,
        source: Path,
        party: PartyKeys,
        progress: Callable[[int, int], None] | None = None,
    ) -> UploadAnswer:
        """Stream a file (or a directory, archived deterministically) into a slot."""
        enclave = self._require_attested()
        with _as_file(source) as path:
            size = path.stat().st_size
            # The manifest names the data this slot takes: sign that (the enclave hashes
            # what arrives and refuses a mismatch) instead of reading the file twice. A
            # directory's archive is hashed, as its bytes are only known now.
            sha = self._slot_sha256(slot) if path == source else _sha256_file(path)
            message = upload_message(enclave.manifest_hash, slot, sha, size, enclave.keys.digest)
            headers = {
                "Content-Length": str(size),
                H_SHA256: sha.hex(),
                H_SIGNATURE: party.sign(message).hex(),
                "Content-Type": "application/octet-stream",
            }
            with path.open("rb") as f:
                return self._put(f"/slots/{slot}", headers, f, size, progress)

    def _slot_sha256(self, slot: str) -> bytes:
        return self.manifest.slot(slot).sha256

    def _put(
        self,
        path: str,
        headers: dict[str, str],
        body: io.BufferedIOBase,
        size: int,
        progress: Callable[[int, int], None] | None,
    ) -> UploadAnswer:
        with self._conn() as conn:
            conn.putrequest("PUT", path)
            for k, v in headers.items():
                conn.putheader(k, v)
            conn.endheaders()
            sent = 0
            sock = conn.sock
            assert sock is not None
            # One buffer for the whole upload, refilled in place: no allocation per chunk.
            buf = memoryview(bytearray(CHUNK))
            try:
                while sent < size:
                    # The enclave may refuse from the headers alone (signature, size): it
                    # answers at once, and we stop sending instead of streaming gigabytes.
                    if select.select([sock], [], [], 0)[0]:
                        break
                    n = body.readinto(buf)
                    if not n:
                        break
                    sock.sendall(buf[:n])
                    sent += n
                    if progress:
                        progress(sent, size)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the enclave closed early; its answer says why
            resp = conn.getresponse()
            data = resp.read()
            if resp.status != 201:
                _raise_problem(resp, data)
            return parse_answer(UploadAnswer, data, f"PUT {path}")

    # ---- results ------------------------------------------------------------------------------
    def receipt(self) -> dict[str, Any]:
        """The signed receipt as sent (its signature covers exactly this content; see
        ``verify_receipt`` for its typed, verified form)."""
        self._require_attested()
        try:
            doc = json.loads(self._get("/receipt"))
        except ValueError as e:
            raise UnavailableError(
                f"enclave answer to GET /receipt is not JSON: {e}", code="bad-response"
            ) from e
        if not isinstance(doc, dict):
            raise UnavailableError(
                f"enclave answer to GET /receipt is a JSON {type(doc).__name__}, not an object",
                code="bad-response",
            )
        return doc

    def verify_receipt(self, doc: Any) -> VerifiedReceipt:
        m = self.manifest
        return verify_receipt(
            doc,
            manifest_hash=m.manifest_hash,
            algorithm_sha256=_hexstr(m.algorithm.sha256),
            dataset_sha256s={d.name: _hexstr(d.sha256) for d in m.datasets},
            policy=self.policy,
            ctx=VerifyContext(
                now=self.clock(), collateral=self.collateral, extra_roots=self.extra_roots
            ),
        )

    def _challenge_signed(
        self, party: PartyKeys, message: Callable[[bytes, bytes, str, bytes], bytes]
    ) -> dict[str, str]:
        enclave = self._require_attested()
        challenge = parse_answer(ChallengeAnswer, self._get("/challenge"), "GET /challenge").nonce
        sig = party.sign(
            message(enclave.manifest_hash, enclave.keys.digest, party.public.name, challenge)
        )
        return {H_CHALLENGE: challenge.hex(), H_SIGNATURE: sig.hex()}

    def _download(self, path: str, headers: dict[str, str], sink: Path) -> str:
        """GET a sealed blob into ``sink``; returns the sha256 header."""
        with self._conn() as conn:
            conn.request("GET", path, headers=headers)
            resp = conn.getresponse()
            if resp.status != 200:
                _raise_problem(resp, resp.read())
            with sink.open("wb") as f:
                while chunk := resp.read(CHUNK):
                    f.write(chunk)
            return resp.getheader(H_RESULT_SHA256, "")

    def verified_receipt(self) -> VerifiedReceipt:
        """The receipt, verified offline, and signed by the enclave we attested."""
        enclave = self._require_attested()
        receipt = self.verify_receipt(self.receipt())
        if receipt.enclave_keys != enclave.keys:
            raise AttestationError(
                "the receipt was signed by another enclave", code="receipt-mismatch"
            )
        return receipt

    def fetch_log(
        self, reader: PartyKeys, receipt: VerifiedReceipt | None = None
    ) -> tuple[VerifiedReceipt, RunLog]:
        """The run log sealed to ``reader`` (a consumer or a log reader), checked against
        the verified receipt and decrypted. Completed and failed runs both have one."""
        receipt = receipt or self.verified_receipt()
        headers = self._challenge_signed(
            reader,
            lambda mh, kd, name, ch: log_request_message(mh, name, kd, ch),
        )
        with tempfile.TemporaryDirectory(prefix="sealroom-log-") as tmp:
            sealed = Path(tmp) / "sealed"
            sha = self._download(f"/log/{reader.public.name}", headers, sealed)
            log = open_log(
                sealed=sealed,
                sealed_sha256=sha,
                receipt=receipt,
                reader=reader,
                manifest=self.manifest,
            )
        return receipt, log

    def fetch_result(self, consumer: PartyKeys, out_dir: Path) -> VerifiedReceipt:
        """Fetch, check and decrypt the consumer's result into ``out_dir``.

        Checks: the receipt verifies offline and names this sealed blob; the blob's hash;
        the AEAD stream. Nothing is written to ``out_dir`` unless all of them pass. A
        failed run raises RunFailedError carrying the decrypted run log."""
        receipt = self.verified_receipt()
        if not receipt.ok:
            raise_run_failed(receipt, lambda: self.fetch_log(consumer, receipt)[1])
        headers = self._challenge_signed(
            consumer,
            lambda mh, kd, name, ch: result_request_message(mh, name, kd, ch),
        )
        with tempfile.TemporaryDirectory(prefix="sealroom-result-") as tmp:
            sealed = Path(tmp) / "sealed"
            header_sha = self._download(f"/result/{consumer.public.name}", headers, sealed)
            open_result(
                sealed=sealed,
                sealed_sha256=header_sha,
                receipt=receipt,
                consumer=consumer,
                manifest=self.manifest,
                out_dir=out_dir,
                tmp=Path(tmp),
            )
        return receipt


@dataclass(frozen=True)
class RunLog:
    """A decrypted run log (docs/adr/0017): what the algorithm printed, in order, and
    the detailed reason behind the receipt's public one."""

    ok: bool
    reason: str
    detail: str
    truncated: bool
    entries: tuple[tuple[str, str], ...]  # (stream: stdout | stderr | sealroom, text)

    @property
    def text(self) -> str:
        return "".join(t for _, t in self.entries)


def open_log(
    *,
    sealed: Path,
    sealed_sha256: str | None,
    receipt: VerifiedReceipt,
    reader: PartyKeys,
    manifest: Manifest,
) -> RunLog:
    """Check a sealed run log against its (already verified) receipt and decrypt it."""
    name = reader.public.name
    entry = receipt.payload.get("logs", {}).get(name)
    if entry is None:
        raise NotFoundError(
            f"the receipt lists no run log for {name!r} (readers: "
            f"{', '.join(receipt.payload.get('logs', {})) or 'none'})",
            code="no-run-log",
        )
    if sealed.stat().st_size > sealed_size(MAX_RUN_LOG_BYTES):
        raise AttestationError("sealed run log is larger than any log the runtime writes")
    data = sealed.read_bytes()
    got = hashlib.sha256(data).hexdigest()
    if got != entry["sha256"] or (sealed_sha256 and sealed_sha256 != got):
        raise AttestationError(
            f"sealed run log hashes to {got}, the receipt says {entry['sha256']}",
            code="sealed-data-invalid",
        )
    plain = open_bytes(data, reader.x25519, info=log_info(manifest.manifest_hash, name))
    try:
        doc = json.loads(plain)
        entries = tuple((str(e["stream"]), str(e["text"])) for e in doc["entries"])
        return RunLog(
            ok=bool(doc["ok"]),
            reason=str(doc["reason"]),
            detail=str(doc["detail"]),
            truncated=bool(doc["truncated"]),
            entries=entries,
        )
    except (ValueError, KeyError, TypeError) as e:
        raise MalformedEvidenceError(f"run log is malformed: {e}") from e


def raise_run_failed(receipt: VerifiedReceipt, fetch: Callable[[], RunLog]) -> NoReturn:
    """A verified receipt says the run failed: raise RunFailedError with the decrypted
    log (or, if the log cannot be had, with why not in the message)."""
    reason = str(receipt.payload["exit"]["reason"])
    try:
        log: RunLog | None = fetch()
        note = ""
    except SealroomError as e:
        log, note = None, f" (run log unavailable: {e.message})"
    raise RunFailedError(f"failed: {reason}{note}", log=log)


def open_result(
    *,
    sealed: Path,
    sealed_sha256: str | None,
    receipt: VerifiedReceipt,
    consumer: PartyKeys,
    manifest: Manifest,
    out_dir: Path,
    tmp: Path,
) -> None:
    """Check a sealed result against its (already verified) receipt, decrypt it and
    unpack it into ``out_dir``. Nothing reaches ``out_dir`` unless every check passed."""
    name = consumer.public.name
    entry = receipt.payload.get("results", {}).get(name)
    if not receipt.ok:
        raise RunFailedError(f"failed: {receipt.payload['exit']['reason']}")
    if entry is None:
        raise NotFoundError(f"the receipt lists no result for {name!r}", code="no-result")
    got = _sha256_file(sealed).hex()
    if got != entry["sha256"] or (sealed_sha256 is not None and sealed_sha256 != got):
        raise AttestationError(
            f"sealed result hashes to {got}, the receipt says {entry['sha256']}",
            code="sealed-data-invalid",
        )
    plain = tmp / "results.tar"
    with sealed.open("rb") as src, plain.open("wb") as dst:
        open_stream(src, dst, consumer.x25519, info=result_info(manifest.manifest_hash, name))
    staging = tmp / "out"
    safe_extract(
        plain, "tar", staging, max_total_bytes=max(64 << 20, 4 * manifest.limits.max_result_bytes)
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    for item in sorted(staging.iterdir()):
        if (out_dir / item.name).exists():
            raise InvalidInputError(f"{out_dir / item.name} exists; not overwriting it")
    for item in sorted(staging.iterdir()):
        os.replace(item, out_dir / item.name)


def _hexstr(value: Any) -> str:
    return value.hex() if isinstance(value, bytes) else str(value).lower()


def _sha256_file(path: Path) -> bytes:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.digest()


@contextmanager
def _as_file(source: Path) -> Iterator[Path]:
    if not source.exists():
        raise InvalidInputError(f"{source} does not exist")
    if source.is_file():
        yield source
        return
    with tempfile.TemporaryDirectory(prefix="sealroom-upload-") as tmp:
        archive = Path(tmp) / "upload.tar"
        with archive.open("wb") as f:
            archive_dir(source, f)
        yield archive


def sha256_of(source: Path) -> bytes:
    """The hash a manifest must name for ``source`` (directories: their deterministic tar)."""
    return content_digest(source)[0]


def content_digest(source: Path) -> tuple[bytes, int, Literal["tar"] | None]:
    """What a manifest names for ``source`` and `upload` sends: the SHA-256 and size of
    the file, or of a directory's deterministic tar (then ``archive`` is "tar")."""
    with _as_file(source) as path:
        return _sha256_file(path), path.stat().st_size, (None if path == source else "tar")

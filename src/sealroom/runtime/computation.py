"""One computation inside the enclave: uploads, the sandboxed run, sealing, the receipt.

The I/O shell around the pure state machine (state.py). Everything the enclave holds
lives under ``workdir`` (enclave storage) and is wiped by ``close()``.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import io
import json
import os
import secrets
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sealroom.attestation.binding import ReportDataInputs, sealroom_report_data
from sealroom.attestation.evidence import EvidenceBundle
from sealroom.crypto.canonical import canonical_json
from sealroom.crypto.keys import PartyPublic
from sealroom.crypto.sealing import seal_stream
from sealroom.crypto.signing import upload_message
from sealroom.errors import (
    AccessDeniedError,
    AttestationError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
    SealroomError,
)
from sealroom.files import WipeReport, wipe_tree
from sealroom.manifest import Manifest, Slot
from sealroom.protocol.enclave import (
    ALGORITHM_SLOT,
    MAX_RUN_LOG_BYTES,
    PUBLIC_EVENT_FIELDS,
    PUBLIC_EVENT_TYPES,
    kbs_filled_message,
    log_info,
    log_request_message,
    receipt_nonce,
    result_info,
    result_request_message,
    upload_accepted_message,
)
from sealroom.protocol.enclave_api import (
    AttestationAnswer,
    PublicKeysWire,
    StatusAnswer,
    UploadAnswer,
)
from sealroom.protocol.receipt import receipt_core, sign_receipt
from sealroom.runtime import ingest
from sealroom.runtime import state as sm
from sealroom.runtime.archive import archive_dir, safe_extract
from sealroom.runtime.enclave_keys import EnclaveKeys
from sealroom.runtime.sandbox import Limits, RunOutcome, run_algorithm
from sealroom.tee.base import EvidenceProvider

MAX_EVENTS = 10_000
MAX_EVENT_TEXT = 4096
EXTRACT_FACTOR = 10  # an archive may unpack to at most 10x its declared maximum size
STOP_TIMEOUT = 60.0  # on stop, how long the cancelled run may take to sign its receipt
RESULT_FILES_PAGES = 10_000 * 4096  # the sandbox's result entry limit, a page each
LOG_STORAGE_BYTES = 1 << 20
STORAGE_SLACK = 16 << 20


class Events:
    """Ordered, bounded log of public lifecycle events; readers ask for everything after
    a sequence number and may wait for more (a reconnecting reader misses nothing).

    It holds only what :func:`public_event` lets through, so no endpoint can serve more:
    it lives in enclave memory (never on enclave storage)."""

    def __init__(self, listener: Callable[[dict[str, Any]], None] | None = None) -> None:
        self._items: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        self._listener = listener

    def emit(self, kind: str, message: str, **data: Any) -> None:
        with self._cond:
            if len(self._items) >= MAX_EVENTS:
                return
            view = public_event(
                {"seq": len(self._items) + 1, "type": kind, "message": message, **data}
            )
            if view is None:
                raise ValueError(f"event type {kind!r} is not public: it must not be emitted")
            item = {"time": datetime.now(UTC).isoformat(), **view}
            self._items.append(item)
            if self._listener is not None:
                self._listener(item)  # must not block (the runtime queues it)
            self._cond.notify_all()

    def after(self, seq: int, wait: float = 0.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + max(0.0, min(wait, 30.0))
        with self._cond:
            while len(self._items) <= seq:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            return self._items[max(0, seq) :]


def public_event(item: dict[str, Any]) -> dict[str, Any] | None:
    """The public view of an enclave event, or None (not public at all).

    Only allow-listed types, and only seq/type/message plus the runtime-chosen fields in
    PUBLIC_EVENT_FIELDS. A rejected upload's message may name the hash of bytes a party
    sent by mistake: the public view says only slot and code (the uploader got the
    details in its own answer)."""
    kind = str(item.get("type", ""))
    if kind not in PUBLIC_EVENT_TYPES:
        return None
    message = str(item.get("message", ""))[:MAX_EVENT_TEXT]
    if kind == "upload_rejected":
        message = f"slot {item.get('slot')!r}: upload rejected ({item.get('code', 'error')})"
    view: dict[str, Any] = {"seq": item["seq"], "type": kind, "message": message}
    for k in PUBLIC_EVENT_FIELDS:
        if k in item:
            view[k] = item[k]
    return view


#: Public failure reasons by error code, for failures after the algorithm ran: their
#: messages may quote what the algorithm wrote (file names, sizes), so only the code's
#: fixed text is public; the message goes into the sealed log.
_ERROR_REASONS = {
    "unsafe-archive": "results hold a link or special file (only files and directories)",
    "result-too-large": "results archive exceeds the manifest's max_result_bytes",
    "results-too-deep": "results tree is nested deeper than the runtime archives",
    "sandbox-unavailable": "the sandbox could not be set up",
    "results-unreadable": "results could not be read (permissions or path length)",
}


#: Sandbox reasons that are fixed text (limits of the manifest or of the sandbox).
_FIXED_SANDBOX_REASONS = frozenset(
    {
        "wasm fuel exhausted",
        "cpu time limit exceeded",
        "file size limit exceeded",
        "result size limit exceeded",
        "stopped: the runtime was stopped during the run",
    }
)


def public_reason(outcome: RunOutcome) -> str:
    """The receipt's (public) reason for how the algorithm ended: a fixed category, never
    a value the algorithm chose (its exit status and signal number are in the sealed log
    only: they would be a few bits of a channel out of the enclave)."""
    if outcome.ok:
        return "ok"
    r = outcome.reason
    if outcome.timed_out:
        return r  # "wall time limit (Ns) exceeded": the manifest's number
    if r.startswith("memory limit ") and r.endswith(" MiB exceeded"):
        return r  # the manifest's memory_mb (the sandbox's text: OOM kill or MemoryError)
    if r.startswith("exit "):
        return "the algorithm exited with a non-zero status"
    if r.startswith("killed by signal"):
        return "the algorithm was killed by a signal"
    if r.startswith("results directory cannot be inspected"):
        return "results directory cannot be inspected"
    if r.startswith("result file count limit exceeded"):
        return "result file count limit exceeded"
    if r.startswith("result tree depth limit exceeded"):
        return "result tree depth limit exceeded"
    if r in _FIXED_SANDBOX_REASONS:
        return r
    return "the algorithm failed"  # an unknown wording: the detail is in the sealed log


def public_error_reason(e: SealroomError) -> str:
    return _ERROR_REASONS.get(e.code, f"the run failed ({e.code})")


class Computation:
    def __init__(
        self,
        manifest: Manifest,
        workdir: Path,
        provider: EvidenceProvider,
        keys: EnclaveKeys | None = None,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        on_event: Callable[[dict[str, Any]], None] | None = None,
        on_state: Callable[[sm.State], None] | None = None,
    ) -> None:
        self.manifest = manifest
        self.manifest_hash: bytes = manifest.manifest_hash
        self.specs: dict[str, Slot] = {s.name: s for s in manifest.slots()}
        self.workdir = workdir
        self.provider = provider
        self.keys = keys or EnclaveKeys(f"sealroom enclave {manifest.id}")
        self.clock = clock
        for sub in ("incoming", "inputs", "algorithm", "results", "sealed"):
            (workdir / sub).mkdir(parents=True, exist_ok=True, mode=0o700)
        self.events = Events(on_event)
        self._lock = threading.Lock()
        self._state = sm.State(slots=tuple(self.specs))
        self._on_state = on_state
        self._notified = self._state.phase  # the initial phase: the caller knows it
        self._notify_lock = threading.Lock()
        self._challenges: dict[bytes, float] = {}
        self._receipt: dict[str, Any] | None = None
        self._sealed: dict[str, tuple[Path, str]] = {}
        self._run_thread: threading.Thread | None = None
        self._output: list[tuple[str, bytes]] = []
        self._output_truncated = False
        self._logs: dict[str, tuple[Path, str]] = {}
        self._cancel = threading.Event()
        self._detail = ""
        self.events.emit(
            "started", f"enclave runtime started for manifest {self.manifest_hash.hex()}"
        )

    # ---- evidence -----------------------------------------------------------------
    @property
    def report_data_inputs(self) -> ReportDataInputs:
        return ReportDataInputs(self.manifest_hash, self.keys.public.digest)

    def evidence(self, nonce: bytes) -> EvidenceBundle:
        report_data = sealroom_report_data(self.report_data_inputs, nonce)
        item = self.provider.collect(report_data)
        if item.collected_at is None:
            # The presenter's statement of when (policies may bound the age); freshness
            # proper comes from the verifier's nonce inside REPORT_DATA.
            item = replace(item, collected_at=self.clock())
        return EvidenceBundle.single(item)

    def attestation(self, nonce: bytes) -> AttestationAnswer:
        if not 8 <= len(nonce) <= 64:
            raise InvalidInputError(f"nonce must be 8 to 64 bytes, got {len(nonce)}")
        return AttestationAnswer(
            evidence=json.loads(self.evidence(nonce).to_json()),
            enclave_keys=PublicKeysWire.of(self.keys.public),
            keys_digest=self.keys.public.digest.hex(),
            manifest_hash=self.manifest_hash.hex(),
            manifest=self.manifest.to_json_obj(),
            nonce=nonce.hex(),
        )

    # ---- status / events ------------------------------------------------------------
    def _notify(self) -> None:
        """Tell the observer (the runtime's stdout lines) about a phase change, once per
        phase, in order."""
        if self._on_state is None:
            return
        with self._notify_lock:
            st = self.state
            if st.phase is self._notified:
                return
            self._notified = st.phase
            self._on_state(st)

    @property
    def state(self) -> sm.State:
        with self._lock:
            return self._state

    def status(self) -> StatusAnswer:
        st = self.state
        return StatusAnswer(
            manifest_hash=self.manifest_hash.hex(),
            state=st.phase,
            reason=st.reason,
            slots={
                n: ("filled" if n in st.filled else "uploading" if n in st.reserved else "empty")
                for n in st.slots
            },
            limits=self.manifest.limits.model_dump(mode="json"),
        )

    # ---- uploads ----------------------------------------------------------------------
    def upload(
        self, slot: str, *, size: int, sha256_hex: str, signature_hex: str, body: ingest.Readable
    ) -> UploadAnswer:
        """Stream one upload into enclave storage. Nothing is kept unless it verified."""
        spec = self.specs.get(slot)
        if spec is not None and spec.kbs is not None:
            raise AccessDeniedError(
                f"slot {slot!r} is filled by the enclave from the key broker "
                f"({spec.kbs.resource}), not by upload",
                code="slot-kbs-sourced",
            )
        with self._lock:
            self._state = sm.reserve(self._state, slot)
        spec = self.specs[slot]
        partial = self.workdir / "incoming" / f"{slot}.partial"
        try:
            self._check_upload_claims(spec, size, sha256_hex, signature_hex)
            digest = self._receive(spec, size, body, partial)
            if not hmac.compare_digest(digest, spec.sha256):
                raise AttestationError(
                    f"slot {slot!r}: received data hashes to {digest.hex()}, the manifest and "
                    f"the signature say {spec.sha256.hex()}",
                    code="upload-hash-mismatch",
                )
            self._install(spec, partial)
        except BaseException as e:
            partial.unlink(missing_ok=True)
            with self._lock:
                self._state = sm.release(self._state, slot)
            if isinstance(e, SealroomError):
                self.events.emit(
                    "upload_rejected", f"slot {slot!r}: {e.message}", slot=slot, code=e.code
                )
            raise
        with self._lock:
            self._state, effects = sm.fill(self._state, slot)
        self.events.emit(
            "upload_accepted",
            upload_accepted_message(slot, size),
            slot=slot,
            sha256=spec.sha256.hex(),
            size=size,
        )
        self._notify()
        if sm.Effect.START_RUN in effects:
            self._start_run()
        return UploadAnswer(slot=slot, sha256=spec.sha256.hex(), size=size)

    def fill_from_kbs(self, slot: str, fetch: Callable[[Slot, Path], None]) -> bool:
        """Fill a KBS-sourced slot: ``fetch(spec, partial)`` writes the decrypted dataset
        to ``partial`` (key from the broker, ciphertext from the source; bounded by the
        slot's max_size); its SHA-256 must be the manifest's, as for an upload. On any
        failure the slot stays empty and the computation fails with the reason (no one
        is waiting to retry: the provider is offline by design). Returns True if filled."""
        spec = self.specs[slot]
        if spec.kbs is None:
            raise ValueError(f"slot {slot!r} is not KBS-sourced")
        with self._lock:
            self._state = sm.reserve(self._state, slot)
        partial = self.workdir / "incoming" / f"{slot}.partial"
        try:
            fetch(spec, partial)
            digest = _file_sha256(partial)
            if not hmac.compare_digest(digest, spec.sha256):
                raise AttestationError(
                    # (not the hash it has: the reason is public, the data the provider's)
                    f"slot {slot!r}: the decrypted dataset does not hash to the manifest's "
                    f"sha256 {spec.sha256.hex()}",
                    code="kbs-dataset-hash-mismatch",
                )
            size = partial.stat().st_size
            self._install(spec, partial)
        except Exception as e:  # no one waits to retry: the run fails, and says why
            partial.unlink(missing_ok=True)
            if isinstance(e, SealroomError):
                why, code = e.message, e.code
            else:
                why, code = f"internal error ({type(e).__name__})", "internal"
            reason = f"dataset {slot!r} from the key broker: {why}"
            with self._lock:
                self._state = sm.abort(sm.release(self._state, slot), reason)
            self.events.emit("kbs_fill_failed", reason, slot=slot, code=code)
            self._notify()
            return False
        except BaseException:
            partial.unlink(missing_ok=True)
            with self._lock:
                self._state = sm.release(self._state, slot)
            raise
        with self._lock:
            self._state, effects = sm.fill(self._state, slot)
        self.events.emit(
            "kbs_filled",
            kbs_filled_message(slot, size, spec.kbs.resource),
            slot=slot,
        )
        self._notify()
        if sm.Effect.START_RUN in effects:
            self._start_run()
        return True

    def _check_upload_claims(
        self, spec: Slot, size: int, sha256_hex: str, signature_hex: str
    ) -> None:
        if size < 0:
            raise InvalidInputError("upload size is negative")
        if size > spec.max_size:
            raise InvalidInputError(
                f"slot {spec.name!r}: upload is {size} bytes, the manifest allows at most "
                f"{spec.max_size}",
                code="upload-too-large",
            )
        try:
            claimed = bytes.fromhex(sha256_hex)
            signature = bytes.fromhex(signature_hex)
        except ValueError as e:
            raise InvalidInputError(f"upload sha256/signature header is not hex: {e}") from e
        if claimed != spec.sha256:
            raise AttestationError(
                f"slot {spec.name!r}: upload claims sha256 {claimed.hex()}, the manifest "
                f"says {spec.sha256.hex()}",
                code="upload-hash-mismatch",
            )
        message = upload_message(
            self.manifest_hash, spec.name, claimed, size, self.keys.public.digest
        )
        try:
            spec.provider.verify(signature, message)
        except AttestationError as e:
            raise AccessDeniedError(
                f"slot {spec.name!r}: the upload signature is not {spec.provider.name!r}'s "
                "signature for this computation, slot, data and enclave (wrong signer, or a "
                "signature made for another enclave, slot or computation)",
                code="upload-signature-invalid",
            ) from e

    def _receive(self, spec: Slot, size: int, body: ingest.Readable, partial: Path) -> bytes:
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            return ingest.receive(body, size, fd)
        except ingest.Truncated as e:
            raise InvalidInputError(
                f"slot {spec.name!r}: upload ended after {e.received} of {size} bytes (truncated)",
                code="upload-truncated",
            ) from None
        finally:
            os.close(fd)

    def _install(self, spec: Slot, partial: Path) -> None:
        if spec.name == ALGORITHM_SLOT:
            dest = self.workdir / "algorithm"
            name = self._algorithm_file_name()
        else:
            dest = self.workdir / "inputs"
            name = spec.name
        if spec.archive:
            target = dest / spec.name if spec.name != ALGORITHM_SLOT else dest / "pkg"
            try:
                safe_extract(
                    partial,
                    spec.archive,
                    target,
                    max_total_bytes=EXTRACT_FACTOR * spec.max_size,
                )
            finally:
                partial.unlink(missing_ok=True)
        else:
            final = dest / name
            partial.replace(final)
            if spec.name == ALGORITHM_SLOT and self.manifest.algorithm.kind == "binary":
                final.chmod(0o500)
            else:
                final.chmod(0o400)

    def _algorithm_file_name(self) -> str:
        alg = self.manifest.algorithm
        if alg.entrypoint:
            return Path(alg.entrypoint).name
        return {"python": "main.py", "wasm": "module.wasm", "binary": "algorithm"}[alg.kind]

    def _algorithm_path(self) -> tuple[Path, str | None]:
        alg = self.manifest.algorithm
        if alg.archive:
            return self.workdir / "algorithm" / "pkg", alg.entrypoint
        return self.workdir / "algorithm" / self._algorithm_file_name(), None

    # ---- the run ----------------------------------------------------------------------
    def _start_run(self) -> None:
        self._run_thread = threading.Thread(target=self._run, name="sealroom-run", daemon=True)
        self._run_thread.start()

    def wait(self, timeout: float | None = None) -> bool:
        t = self._run_thread
        if t is not None:
            t.join(timeout)
        return self.state.finished

    def _run(self) -> None:
        started = self.clock()
        results: dict[str, dict[str, Any]] = {}
        try:
            lim = self.manifest.limits
            limits = Limits(
                vcpus=lim.vcpus,
                memory_bytes=lim.memory_mb * 2**20,
                wall_seconds=float(lim.wall_seconds),
                max_result_bytes=lim.max_result_bytes,
            )
            algorithm, entrypoint = self._algorithm_path()
            self.events.emit("run_started", "all slots filled; running the algorithm sandboxed")
            outcome = run_algorithm(
                self.manifest.algorithm.kind,
                algorithm,
                entrypoint=entrypoint,
                args=list(self.manifest.algorithm.args),
                inputs=self.workdir / "inputs",
                results=self.workdir / "results",
                limits=limits,
                on_output=self._on_output,
                cancel=self._cancel,
            )
            ok, detail = outcome.ok, outcome.reason
            self._output_truncated = outcome.output_truncated
            reason = public_reason(outcome)
            started = outcome.started_at
            ended = outcome.ended_at
            self.events.emit("run_ended", f"algorithm ended: {reason}", ok=ok)
            if ok:
                results = self._seal_results()
        except SealroomError as e:
            ok, ended, results = False, self.clock(), {}
            reason, detail = public_error_reason(e), e.message
            self.events.emit("run_failed", reason, code=e.code)
        except Exception as e:  # the receipt must say why, whatever happened
            ok, ended, results = False, self.clock(), {}
            reason, detail = "internal error of the runtime", f"{type(e).__name__}: {e}"
            self.events.emit("run_failed", reason)
        self._detail = detail
        self._finish(ok, 0 if ok else None, reason, started, ended, results)

    def _on_output(self, stream: str, chunk: bytes) -> None:
        """The algorithm's stdout/stderr (bounded by the sandbox): enclave memory only,
        never an event; it leaves the enclave sealed (docs/adr/0017)."""
        with self._lock:
            self._output.append((stream, chunk))

    def _seal_results(self) -> dict[str, dict[str, Any]]:
        archive = self.workdir / "sealed" / "results.tar"
        with archive.open("wb") as f:
            archive_dir(self.workdir / "results", f)
        size = archive.stat().st_size
        if size > self.manifest.limits.max_result_bytes:
            archive.unlink()
            raise InvalidInputError(
                f"results archive is {size} bytes, the manifest allows "
                f"{self.manifest.limits.max_result_bytes}",
                code="result-too-large",
            )
        out: dict[str, dict[str, Any]] = {}
        for party in self.manifest.consumers:
            target = self.workdir / "sealed" / f"{party.name}.sealed"
            with archive.open("rb") as src, target.open("wb") as dst:
                summary = seal_stream(
                    src, dst, party.x25519_key(), info=result_info(self.manifest_hash, party.name)
                )
            self._sealed[party.name] = (target, summary.sha256)
            out[party.name] = {"sha256": summary.sha256, "size": summary.size}
        archive.unlink()
        wipe_tree(self.workdir / "results", keep_root=True)
        return out

    def _finish(
        self,
        ok: bool,
        code: int | None,
        reason: str,
        started: datetime | None,
        ended: datetime,
        results: dict[str, dict[str, Any]],
    ) -> None:
        try:
            logs = self._seal_logs(ok, reason)
        except Exception as e:  # the receipt comes first: it says the logs are missing
            logs = {}
            self.events.emit("run_failed", f"run log not sealed ({type(e).__name__})")
        core = receipt_core(
            manifest_hash=self.manifest_hash,
            algorithm_sha256=self.specs[ALGORITHM_SLOT].sha256.hex(),
            datasets={n: s.sha256.hex() for n, s in self.specs.items() if n != ALGORITHM_SLOT},
            results=results,
            logs=logs,
            ok=ok,
            code=code,
            reason=reason,
            started_at=started,
            ended_at=ended,
            enclave_keys=self.keys.public,
        )
        try:
            evidence = self.evidence(receipt_nonce(canonical_json(core))).to_json()
        except SealroomError as e:
            evidence = json.dumps({"format": "sealroom-evidence/v1", "items": []})
            self.events.emit("evidence_failed", f"receipt evidence unavailable: {e.message}")
        receipt = sign_receipt(core, evidence, self.keys.receipt_key)
        with self._lock:
            self._receipt = receipt
            if self._state.phase is sm.Phase.RUNNING:  # not aborted by a stop that gave up
                self._state = sm.finish(self._state, ok, reason)
        self.events.emit("completed" if ok else "failed", reason, ok=ok)
        self._notify()

    def run_log(self, ok: bool, reason: str) -> bytes:
        """The run log's plaintext (docs/adr/0017): the algorithm's stdout and stderr in
        the order they arrived, a visible marker where the sandbox cut them, and the
        detailed reason (the exit status, a refused file's name) behind the public one."""
        with self._lock:
            chunks = list(self._output)
        entries: list[dict[str, str]] = []
        for stream, data in chunks:
            text = data.decode("utf-8", "replace")
            if entries and entries[-1]["stream"] == stream:
                entries[-1]["text"] += text
            else:
                entries.append({"stream": stream, "text": text})
        kept = sum(len(d) for _, d in chunks)
        if self._output_truncated:
            sep = "\n" if entries and not entries[-1]["text"].endswith("\n") else ""
            entries.append(
                {
                    "stream": "sealroom",
                    "text": f"{sep}[sealroom: output truncated after {kept} bytes; the "
                    "sandbox keeps at most this much of stdout and stderr together]\n",
                }
            )
        doc = {
            "version": 1,
            "ok": ok,
            "reason": reason,
            "detail": self._detail[:MAX_EVENT_TEXT],
            "truncated": self._output_truncated,
            "output_bytes": kept,
            "entries": entries,
        }
        data = json.dumps(doc, ensure_ascii=False).encode()
        if len(data) > MAX_RUN_LOG_BYTES:  # only if the sandbox kept more than it does now
            doc["entries"] = [{"stream": "sealroom", "text": "[sealroom: output too large]\n"}]
            doc["truncated"] = True
            data = json.dumps(doc, ensure_ascii=False).encode()
        return data

    def _seal_logs(self, ok: bool, reason: str) -> dict[str, dict[str, Any]]:
        plain = self.run_log(ok, reason)
        out: dict[str, dict[str, Any]] = {}
        for party in self.manifest.log_recipients:
            target = self.workdir / "sealed" / f"log.{party.name}.sealed"
            with io.BytesIO(plain) as src, target.open("wb") as dst:
                summary = seal_stream(
                    src, dst, party.x25519_key(), info=log_info(self.manifest_hash, party.name)
                )
            self._logs[party.name] = (target, summary.sha256)
            out[party.name] = {"sha256": summary.sha256, "size": summary.size}
        return out

    # ---- results ----------------------------------------------------------------------
    def receipt(self) -> dict[str, Any]:
        with self._lock:
            if self._receipt is None:
                raise ConflictError(
                    f"no receipt yet: the computation is {self._state.phase.value}",
                    code="not-finished",
                )
            return self._receipt

    def challenge(self) -> bytes:
        nonce = secrets.token_bytes(32)
        now = time.monotonic()
        with self._lock:
            self._challenges = {k: t for k, t in self._challenges.items() if now - t < 300}
            if len(self._challenges) > 1000:
                raise ConflictError("too many outstanding challenges", code="busy")
            self._challenges[nonce] = now
        return nonce

    def _authorize(
        self,
        party: PartyPublic,
        challenge_hex: str,
        signature_hex: str,
        message: Callable[[bytes], bytes],
    ) -> None:
        """The request is signed by ``party`` over a one-time challenge we issued."""
        try:
            challenge = bytes.fromhex(challenge_hex)
            signature = bytes.fromhex(signature_hex)
        except ValueError as e:
            raise InvalidInputError(f"challenge/signature is not hex: {e}") from e
        with self._lock:
            issued = self._challenges.pop(challenge, None)
        if issued is None or time.monotonic() - issued > 300:
            raise AccessDeniedError(
                "unknown or expired challenge: ask GET /challenge again", code="challenge-invalid"
            )
        try:
            party.verify(signature, message(challenge))
        except AttestationError as e:
            raise AccessDeniedError(
                f"the request is not signed by {party.name!r}", code="not-a-consumer"
            ) from e

    def sealed_result(
        self, consumer: str, challenge_hex: str, signature_hex: str
    ) -> tuple[Path, str]:
        """The consumer's sealed result, only to the consumer (signature over a one-time
        challenge), only after completion."""
        party = next((c for c in self.manifest.consumers if c.name == consumer), None)
        if party is None:
            raise AccessDeniedError(
                f"{consumer!r} is not a result consumer of this computation", code="not-a-consumer"
            )
        digest = self.keys.public.digest
        self._authorize(
            party,
            challenge_hex,
            signature_hex,
            lambda ch: result_request_message(self.manifest_hash, consumer, digest, ch),
        )
        st = self.state
        if st.phase is sm.Phase.FAILED and self._receipt is not None:
            raise ConflictError(
                f"no result: the run failed: {st.reason} (the receipt and the sealed run "
                "log say more)",
                code="run-failed",
            )
        if st.phase is not sm.Phase.COMPLETED:
            raise ConflictError(
                f"no result: the computation is {st.phase.value}"
                + (f" ({st.reason})" if st.reason else ""),
                code="not-finished",
            )
        entry = self._sealed.get(consumer)
        if entry is None:
            raise NotFoundError(f"no sealed result for {consumer!r}")
        return entry

    def sealed_log(self, reader: str, challenge_hex: str, signature_hex: str) -> tuple[Path, str]:
        """The run log sealed to ``reader`` (a consumer or a log reader of the manifest),
        only to that party, once the run ended (completed or failed)."""
        try:
            party = self.manifest.log_recipient(reader)
        except NotFoundError as e:
            raise AccessDeniedError(e.message, code="not-a-log-reader") from e
        digest = self.keys.public.digest
        self._authorize(
            party,
            challenge_hex,
            signature_hex,
            lambda ch: log_request_message(self.manifest_hash, reader, digest, ch),
        )
        with self._lock:
            entry = self._logs.get(reader) if self._receipt is not None else None
            phase = self._state.phase
        if entry is None:
            raise ConflictError(
                f"no run log: the computation is {phase.value}", code="not-finished"
            )
        return entry

    # ---- the outbox (host-visible ciphertext) --------------------------------------------
    def write_outbox(self, outbox: Path) -> list[str]:
        """After a final state: hand the host what it may hold, ciphertext and signed
        metadata only: ``receipt.json``, ``result.<consumer>.sealed`` (completed runs),
        then an empty ``DONE`` last. Each file appears atomically (temporary name, then
        rename), so a reader that sees ``DONE`` sees every other file whole."""
        with self._lock:
            receipt = self._receipt
            sealed = dict(self._sealed) if self._state.phase is sm.Phase.COMPLETED else {}
            logs = dict(self._logs) if receipt is not None else {}
        if receipt is None:
            raise ConflictError("no receipt yet: the computation has not finished")
        outbox.mkdir(parents=True, exist_ok=True)
        written: list[str] = []

        def place(name: str, fill: Callable[[Path], object]) -> None:
            tmp = outbox / f".{name}.{secrets.token_hex(4)}.tmp"
            try:
                fill(tmp)
                os.chmod(tmp, 0o600)
                tmp.replace(outbox / name)
            finally:
                tmp.unlink(missing_ok=True)
            written.append(name)

        body = json.dumps(receipt, indent=2).encode()
        place("receipt.json", lambda t: t.write_bytes(body))
        for consumer, (path, _sha) in sorted(sealed.items()):
            place(f"result.{consumer}.sealed", functools.partial(_link_or_copy, path))
        for reader, (path, _sha) in sorted(logs.items()):
            place(f"log.{reader}.sealed", functools.partial(_link_or_copy, path))
        place("DONE", lambda t: t.write_bytes(b""))
        return written

    # ---- end of life --------------------------------------------------------------------
    def close(self) -> WipeReport:
        """Stop: a run in progress is cancelled (its sandbox killed; it ends failed, with a
        signed receipt and outbox like any failed run), then enclave storage (inputs,
        algorithm, results, sealed blobs) is wiped. Never raises."""
        self._cancel.set()
        t = self._run_thread
        if t is not None:
            t.join(STOP_TIMEOUT)
        with self._lock:
            self._state = sm.abort(self._state, "runtime stopped")
        self._notify()
        return wipe_tree(self.workdir, keep_root=True)


def _file_sha256(path: Path) -> bytes:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(functools.partial(f.read, 1 << 20), b""):
            h.update(block)
    return h.digest()


def _link_or_copy(src: Path, target: Path) -> None:
    try:
        os.link(src, target)
    except OSError:  # another filesystem (enclave storage is a tmpfs): copy the ciphertext
        shutil.copyfile(src, target)


def storage_bytes(manifest: Manifest, recipients: int | None = None) -> int:
    """An upper bound of what enclave storage holds at once for this manifest: every
    slot's upload (an archive next to what it unpacks to), the results with their tar
    and one sealed copy per recipient (tmpfs counts a page per small file), the logs."""
    lim = manifest.limits
    slots = sum(s.max_size * (1 + EXTRACT_FACTOR if s.archive else 1) for s in manifest.slots())
    n = recipients if recipients is not None else len(manifest.log_recipients)
    results = lim.max_result_bytes * (2 + n) + RESULT_FILES_PAGES
    return slots + results + (n + 1) * LOG_STORAGE_BYTES + STORAGE_SLACK

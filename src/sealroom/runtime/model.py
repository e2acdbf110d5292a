"""The model-serving enclave (docs/adr/0040): a service (ADR 0032) whose workload is
sealroom's own inference worker (``model_worker.py``, onnxruntime in the sandbox) and
whose spec is the model spec, so the evidence binds the weights' hash.

Trusted here, in the runtime: the weights' SHA-256 is checked against the pinned hash
while they are copied into enclave storage (any other hash: the enclave does not start);
requests are opened with the enclave's X25519 key (HPKE), passed to the worker in the
sandbox, and every answer is signed with the enclave's Ed25519 key and sealed to the
requester. Plaintext prompts and answers exist only in enclave memory and the sandbox.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import queue
import socket
import struct
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey
from pydantic import ValidationError

from sealroom.crypto.sealing import open_bytes, seal_bytes
from sealroom.crypto.signing import signed_json
from sealroom.errors import (
    AttestationError,
    InvalidInputError,
    NotFoundError,
    SealroomError,
    UnavailableError,
)
from sealroom.protocol.model import (
    ANSWER_DOMAIN,
    ANSWER_INFO,
    INFER_PATH,
    MODEL_FILE,
    REQUEST_INFO,
    AnswerStatement,
    ModelSpec,
    RequestPlain,
    request_aad,
)
from sealroom.protocol.service import (
    Resources,
    RestartPolicy,
    ServiceSpec,
    SpecFile,
)
from sealroom.runtime.enclave_keys import EnclaveKeys
from sealroom.runtime.sandbox import ServiceNet
from sealroom.runtime.service import Health, Service
from sealroom.tee.base import EvidenceProvider

WORKER_SOURCE = Path(__file__).with_name("model_worker.py")
WORKER_PORT = 8080
WORKER_PACKAGES = ("numpy", "onnxruntime")
MAX_WORKER_FRAME = 64 << 20
WORKER_TIMEOUT = 120.0


class ModelHashMismatchError(AttestationError):
    """The weights offered to the enclave are not the pinned ones: it does not serve."""

    code = "model-hash-mismatch"


def worker_spec(spec: ModelSpec) -> ServiceSpec:
    """The service the model server runs: the worker, nothing else, no egress."""
    r = spec.resources
    return ServiceSpec(
        name="model-server",
        kind="python",
        command=[WORKER_SOURCE.name],
        port=WORKER_PORT,
        files={
            WORKER_SOURCE.name: SpecFile(
                content_b64=base64.b64encode(WORKER_SOURCE.read_bytes()).decode()
            )
        },
        resources=Resources(
            vcpus=r.vcpus, memory_mb=r.memory_mb, max_processes=r.max_processes, state_mb=16
        ),
        restart=RestartPolicy(policy="on-failure", max_restarts=5),
    )


def install_weights(spec: ModelSpec, weights: Path, target: Path) -> None:
    """Copy the weights into enclave storage, hashing as they pass; refuse (and remove
    what was copied) unless size and SHA-256 are the pinned ones."""
    h = hashlib.sha256()
    size = 0
    try:
        with weights.open("rb") as src, target.open("xb") as dst:
            while chunk := src.read(1 << 20):
                h.update(chunk)
                size += len(chunk)
                if size > spec.size:
                    break
                dst.write(chunk)
    except OSError as e:
        target.unlink(missing_ok=True)
        raise InvalidInputError(f"cannot read the model weights: {e.strerror or e}") from e
    if size != spec.size or h.hexdigest() != spec.sha256:
        target.unlink(missing_ok=True)
        got = "more bytes than pinned" if size > spec.size else f"sha256 {h.hexdigest()}"
        raise ModelHashMismatchError(
            f"the model weights offered are not model {spec.name}: {got}, {size} bytes; "
            f"the spec pins sha256 {spec.sha256}, {spec.size} bytes; refusing to serve"
        )
    os.chmod(target, 0o600)


class ModelService(Service):
    def __init__(
        self,
        model: ModelSpec,
        weights: Path,
        workdir: Path,
        provider: EvidenceProvider,
        keys: EnclaveKeys | None = None,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        on_health: Callable[[Health], None] | None = None,
        on_breach: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        super().__init__(
            worker_spec(model),
            workdir,
            provider,
            keys or EnclaveKeys(f"sealroom model {model.name}"),
            clock=clock,
            on_health=on_health,
            on_breach=on_breach,
        )
        install_weights(model, weights, workdir / "inputs" / MODEL_FILE)
        self.model = model
        # What the evidence binds (HOST_DATA, REPORT_DATA): the model spec, not the
        # worker's service spec (that is sealroom's code, measured with the runtime).
        self.spec_hash = model.spec_hash
        self._aad = request_aad(self.spec_hash, self.keys.public.digest)
        self._idle: queue.SimpleQueue[socket.socket] = queue.SimpleQueue()

    def measured_spec(self) -> dict[str, Any]:
        return self.model.to_json_obj()

    def _net(self) -> ServiceNet:
        net = super()._net()
        return ServiceNet(
            bridge_dir=net.bridge_dir,
            port=net.port,
            packages=WORKER_PACKAGES,
            on_interfaces=net.on_interfaces,
        )

    # ---- requests ----------------------------------------------------------------------
    def handle_enclave_post(self, path: str, body: bytes) -> bytes:
        if path != INFER_PATH:
            raise NotFoundError(f"no enclave path {path}")
        return self.infer_sealed(body)

    def infer_sealed(self, sealed: bytes) -> bytes:
        self.check_open()
        try:
            plain = open_bytes(sealed, self.keys.x25519_key, info=REQUEST_INFO, aad=self._aad)
        except SealroomError as e:
            raise AttestationError(
                "the request does not open with this enclave's key for this model (sealed "
                "to another enclave, or altered on the way)",
                code="request-not-for-this-enclave",
            ) from e
        try:
            req = RequestPlain.model_validate_json(plain)
        except ValidationError as e:
            raise InvalidInputError(
                f"model request: {e.errors()[0]['msg']}", code="bad-model-request"
            ) from e
        reply_to = X25519PublicKey.from_public_bytes(bytes.fromhex(req.reply_to))
        # The plaintext as it came (the worker reads "inputs"; the rest is a public key and
        # a digest): re-encoding a large tensor as JSON would cost more than the inference.
        response = self._worker_call(plain)
        statement = AnswerStatement(
            model=self.model.name,
            model_version=self.model.model_version,
            model_sha256=self.model.sha256,
            model_spec_hash=self.spec_hash.hex(),
            keys_digest=self.keys.public.digest.hex(),
            evidence_sha256=req.evidence_sha256,
            request_sha256=hashlib.sha256(plain).hexdigest(),
            response_sha256=hashlib.sha256(response).hexdigest(),
            answered_at=self.clock().isoformat(),
        )
        answer = {
            "response_b64": base64.b64encode(response).decode(),
            "statement": signed_json(
                statement.model_dump(mode="json"), self.keys.receipt_key, ANSWER_DOMAIN
            ),
        }
        return seal_bytes(
            json.dumps(answer).encode(),
            reply_to,
            info=ANSWER_INFO,
            aad=hashlib.sha256(sealed).digest(),
        )

    def _worker_call(self, frame: bytes) -> bytes:
        """One request to the worker over a pooled stream through the ingress bridge."""
        for attempt in (0, 1):
            try:
                conn = self._idle.get_nowait()
            except queue.Empty:
                conn = self.connect_workload()
                conn.settimeout(WORKER_TIMEOUT)
            try:
                conn.sendall(struct.pack(">I", len(frame)) + frame)
                head = _recv_exact(conn, 4)
                (size,) = struct.unpack(">I", head)
                if size > MAX_WORKER_FRAME:
                    raise OSError("worker frame too large")
                out = _recv_exact(conn, size)
            except OSError as e:
                conn.close()
                if attempt == 0:
                    continue  # a pooled stream the worker closed (restart): once more
                raise UnavailableError(
                    f"the model worker did not answer ({self.health.state})",
                    code="workload-down",
                ) from e
            self._idle.put(conn)
            return out
        raise AssertionError("unreachable")

    def stop(self, timeout: float = 30.0) -> None:
        super().stop(timeout)
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                break


def _recv_exact(conn: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = conn.recv(min(n - len(buf), 1 << 20))
        if not chunk:
            raise OSError("worker closed the stream")
        buf += chunk
    return bytes(buf)

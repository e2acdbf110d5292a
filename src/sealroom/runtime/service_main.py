"""The enclave runtime in service mode: ``python -m sealroom.runtime --service SPEC.json
--tee TEE [--listen ...]`` (docs/adr/0032), or serving one model: ``--model MODEL.json
--weights FILE`` (docs/adr/0040; ``manifest_hash`` is then the model spec hash).

Prints the ``listening`` line (``workload: service``; ``manifest_hash`` is the spec hash)
once the TLS front listens, then a ``service_health`` line on every change of the
workload's health; serves until SIGTERM/SIGINT, then stops the workload and wipes
enclave storage.
"""

from __future__ import annotations

import argparse
import json
import signal
import threading
from types import FrameType
from typing import Any, Protocol

from sealroom.errors import SealroomError
from sealroom.protocol.model import load_model_spec
from sealroom.protocol.runtime_lines import BreachLine, ErrorLine, Listening, ServiceHealthLine
from sealroom.protocol.service import load_spec
from sealroom.runtime.model import ModelService
from sealroom.runtime.sandbox import check_sandbox
from sealroom.runtime.service import Health, Service
from sealroom.runtime.service_server import bind_service
from sealroom.runtime.storage import EnclaveStorage
from sealroom.tee.base import open_provider

READY_TIMEOUT = 60.0


class LineSink(Protocol):
    """The runtime's stdout line writer (``runtime.computation_main._Lines``)."""

    def put(self, obj: dict[str, Any]) -> None: ...
    def write(self, obj: dict[str, Any]) -> None: ...
    def open(self) -> None: ...
    def close(self, timeout: float = 5.0) -> None: ...


#: The runtime's exit status after a breach of the workload's permission boundary.
BREACH_EXIT = 6


def run_service(args: argparse.Namespace, namespace_note: str | None, lines: LineSink) -> int:
    stop = threading.Event()

    def on_health(h: Health) -> None:
        lines.put(ServiceHealthLine(**h.to_json_obj()).line())

    def on_breach(signed: dict[str, Any]) -> None:
        """docs/adr/0041: the signed event first, then down: the front stops (its
        connections are cut when the process exits), the workload is stopped, enclave
        storage is wiped, and the keys go with the process."""
        lines.write(BreachLine(code=str(signed["payload"]["code"]), signed=signed).line())
        stop.set()

    storage: EnclaveStorage | None = None
    try:
        check_sandbox()
        service: Service
        if args.model is not None:
            model = load_model_spec(args.model)
            provider = open_provider(args.tee)
            storage = EnclaveStorage.create(
                args.workdir,
                model.size + 64 * 2**20,
                mode=args.storage,
                namespace_note=namespace_note,
            )
            service = ModelService(
                model,
                args.weights,
                storage.path,
                provider,
                on_health=on_health,
                on_breach=on_breach,
            )
        else:
            spec = load_spec(args.service)
            provider = open_provider(args.tee)
            r = spec.resources
            storage = EnclaveStorage.create(
                args.workdir,
                (r.state_mb + 16) * 2**20 + sum(len(f.content) for f in spec.files.values()),
                mode=args.storage,
                namespace_note=namespace_note,
            )
            service = Service(
                spec, storage.path, provider, on_health=on_health, on_breach=on_breach
            )
        server = bind_service(args.listen, service)
    except SealroomError as e:
        if storage is not None:
            storage.close()
        print(json.dumps(ErrorLine(code=e.code, message=e.message).line()), flush=True)
        return e.exit_code

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    service.start()
    # Listening only once the workload answers (or the wait ran out: health says why).
    service.wait_ready(READY_TIMEOUT)
    threading.Thread(target=server.serve_forever, name="sealroom-svc-tls", daemon=True).start()
    lines.write(
        Listening(
            url=server.url,
            manifest_hash=service.spec_hash.hex(),
            keys_digest=service.keys.public.digest.hex(),
            storage=storage.describe(),
            workload="service",
        ).line()
    )
    lines.put(ServiceHealthLine(**service.health.to_json_obj()).line())
    lines.open()
    try:
        # Wake up to run signal handlers: a SIGTERM the kernel delivers to another thread
        # does not interrupt a blocking wait here, and the runtime would never stop.
        while not stop.wait(0.5):
            pass
    finally:
        server.shutdown()
        server.server_close()
        service.stop()
        storage.close()
        lines.write(ServiceHealthLine(**service.health.to_json_obj()).line())
        lines.close()
    return BREACH_EXIT if service.breached is not None else 0

"""Launch one enclave runtime as a separate process on this host (the `process` backend).

With the sim TEE the host plays the hardware's part: it runs the sim authority's service
on a private Unix socket, fixes the launch MEASUREMENT (SHA-384 over the runtime code it
launches) and HOST_DATA (the manifest hash). The runtime can choose only REPORT_DATA.
Other TEE specs (configfs-tsm, tpm2:...) are handed to the runtime unchanged, for runs
inside a real confidential VM.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import sealroom
from sealroom.attestation.sim.authority import SimAuthority, measure_tree
from sealroom.attestation.sim.service import SimTeeService
from sealroom.errors import InvalidInputError, UnavailableError
from sealroom.manifest import Manifest
from sealroom.protocol.model import load_model_spec
from sealroom.protocol.service import load_spec

START_TIMEOUT = 60.0
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> Callable[[], None] | None:
    """A preexec hook: the runtime gets SIGTERM when the launching process dies (its sim
    TEE service lives there: without it the enclave is useless). Resolved before the
    fork, so the child only makes one system call. The "parent" is the launching
    thread: call ``launch_local`` from a thread that lives as long as the enclave."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None

    def hook() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)

    return hook


def runtime_code_dir() -> Path:
    """The code the host launches as the enclave runtime (the installed sealroom package)."""
    return Path(sealroom.__file__).resolve().parent


def runtime_measurement() -> bytes:
    return measure_tree(runtime_code_dir())


@dataclass
class LocalEnclave:
    url: str
    manifest_hash: str
    process: subprocess.Popen[str]
    simulated: bool
    measurement: bytes | None
    _service: SimTeeService | None = None
    _tmp: tempfile.TemporaryDirectory[str] | None = None
    lines: list[dict[str, Any]] = field(default_factory=list)
    _reader: threading.Thread | None = None

    def start_reader(self) -> None:
        """Keep reading the runtime's stdout lines (state, events) into ``lines``: an
        unread pipe would fill up and stall the runtime's line writer."""
        stream = self.process.stdout
        if stream is None:
            return

        def pump() -> None:
            for raw in stream:
                try:
                    obj = json.loads(raw)
                except ValueError:
                    continue
                if isinstance(obj, dict):
                    self.lines.append(obj)

        self._reader = threading.Thread(target=pump, name="sealroom-enclave-lines", daemon=True)
        self._reader.start()

    def wait(self, timeout: float | None = None) -> int:
        return self.process.wait(timeout)

    def stop(self, timeout: float = 20.0) -> int | None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._service is not None:
            self._service.stop()
            self._service = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
        return self.process.returncode

    def __enter__(self) -> LocalEnclave:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _read_event(stream: IO[str]) -> dict[str, Any]:
    line = stream.readline()
    if not line:
        raise UnavailableError("the enclave runtime exited before it started listening")
    try:
        obj: dict[str, Any] = json.loads(line)
    except ValueError as e:
        raise UnavailableError(f"the enclave runtime said something unexpected: {line!r}") from e
    return obj


def launch_local(
    manifest_path: Path,
    *,
    tee: str = "sim",
    listen: str = "127.0.0.1:0",
    linger: float | None = None,
    home: Path,
    workdir: Path | None = None,
    outbox: Path | None = None,
    storage: str | None = None,
    is_service: bool = False,
    weights: Path | None = None,
) -> LocalEnclave:
    """Start the runtime for a manifest, or (``is_service=True``) for a service spec
    (docs/adr/0032): HOST_DATA then carries the spec hash; or, with ``weights``, for a
    model spec (docs/adr/0040): HOST_DATA carries the model spec hash."""
    if weights is not None:
        workload_hash = load_model_spec(manifest_path).spec_hash
    elif is_service:
        workload_hash = load_spec(manifest_path).spec_hash
    else:
        workload_hash = Manifest.load(manifest_path).manifest_hash
    tmp = tempfile.TemporaryDirectory(prefix="sealroom-host-")
    os.chmod(tmp.name, 0o700)
    service: SimTeeService | None = None
    measurement: bytes | None = None
    try:
        if tee == "sim":
            authority = SimAuthority.load_or_create(home / "sim-authority")
            measurement = runtime_measurement()
            service = SimTeeService(
                authority,
                measurement=measurement,
                host_data=workload_hash,
                socket_path=Path(tmp.name) / "sim-tee.sock",
            )
            service.start()
            spec = f"sim:{service.socket_path}"
        elif tee.startswith(("configfs-tsm", "tpm2:", "sev-guest")):
            spec = tee
        else:
            raise InvalidInputError(
                f"unknown --tee {tee!r} (sim, configfs-tsm, sev-guest, tpm2:TCTI)"
            )
        cmd = [
            sys.executable,
            "-m",
            "sealroom.runtime",
            *(
                ["--model", str(manifest_path), "--weights", str(weights)]
                if weights is not None
                else ["--service" if is_service else "--manifest", str(manifest_path)]
            ),
            "--tee",
            spec,
            "--listen",
            listen,
        ]
        if linger is not None:
            cmd += ["--linger", str(linger)]
        if workdir is not None:
            cmd += ["--workdir", str(workdir)]
        if outbox is not None:
            cmd += ["--outbox", str(outbox)]
        if storage is not None:
            cmd += ["--storage", storage]
        # The runtime's stdout carries its JSON status lines; stderr goes to ours.
        # Fixed argv: this interpreter and sealroom's own runtime module.
        proc = subprocess.Popen(  # noqa: S603
            cmd,
            stdout=subprocess.PIPE,
            text=True,
            stdin=subprocess.DEVNULL,
            # one prctl call in the child, resolved before the fork
            preexec_fn=_die_with_parent(),
        )
        assert proc.stdout is not None
        first = _read_event(proc.stdout)
        if first.get("event") != "listening":
            proc.wait(10)
            raise UnavailableError(
                f"the enclave runtime did not start: {first.get('message', first)}",
                code=str(first.get("code", "enclave-start-failed")),
            )
    except BaseException:
        if service is not None:
            service.stop()
        tmp.cleanup()
        raise
    enclave = LocalEnclave(
        url=str(first["url"]),
        manifest_hash=str(first["manifest_hash"]),
        process=proc,
        simulated=tee == "sim",
        measurement=measurement,
        _service=service,
        _tmp=tmp,
        lines=[first],
    )
    enclave.start_reader()
    return enclave

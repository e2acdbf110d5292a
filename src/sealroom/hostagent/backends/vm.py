"""A running sealroom guest (ADR 0035): its vTPM (``swtpm``), its QEMU process and the
host channel to the guest's ``/init``.

The vTPM is provisioned before the first boot: the host starts the swtpm on loopback
TCP, creates the endorsement key and a restricted attestation key, makes the AK
persistent at :data:`AK_HANDLE` and keeps the AK's public area. That AK is the host's
statement of which TPM belongs to this VM; the guest only asks the TPM to quote with it
(the TPM signs; nothing in the guest holds the key). The swtpm then serves QEMU over a
Unix socket, and the firmware and the kernel's EFI stub measure the boot into it.

Every process is started with an argv (no shell), in its own session, and stopped by
its pid (SIGTERM, then SIGKILL): nothing is found by name.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sealroom.attestation import kinds
from sealroom.attestation.evidence import EvidenceItem
from sealroom.attestation.kinds import VerifyContext
from sealroom.attestation.policy import Policy
from sealroom.attestation.tpm.abi import HASH_BY_NAME, HASH_SIZES
from sealroom.attestation.tpm.claims import TpmClaims
from sealroom.attestation.tpm.formats import pcrs_json
from sealroom.errors import AttestationError, InvalidInputError, UnavailableError
from sealroom.hostagent.backends.qemu import OVMF, Accel, VmSpec, build_argv, default_accel
from sealroom.hostagent.backends.vtpm_ca import VtpmCa
from sealroom.image.build import GuestImage
from sealroom.image.measure import FIRMWARE_PCRS, TpmExpectation, expected_tpm, file_sha256
from sealroom.tee.tpm2 import Tpm2Config, Tpm2Provider

AK_HANDLE = 0x81010002
BOOT_TIMEOUT = 600.0
# Every message of /init starts with this: the firmware writes to all serial ports before
# the kernel runs, and that noise is skipped (it carries no trust either way: evidence is
# checked by its signature, never by where it came from).
PREFIX = b"sealroom1 "  # TCG on two shared cores: generous, never a wall-clock assertion


def free_port_pair() -> tuple[int, int]:
    """Two consecutive free ports (server P, control P+1) on 127.0.0.1, for swtpm."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port >= 65535:
            continue
        try:
            with socket.socket() as s2:
                s2.bind(("127.0.0.1", port + 1))
        except OSError:
            continue
        return port, port + 1
    raise UnavailableError("no two consecutive free ports on 127.0.0.1 for swtpm")


def _stop(proc: subprocess.Popen[bytes], wait: float = 10.0) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=wait)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def _need(tool: str, package: str) -> str:
    found = shutil.which(tool)
    if found is None:
        raise UnavailableError(f"{tool} not found (Debian: apt-get install {package})",
                               code="vm-tool-missing")  # fmt: skip
    return found


def provision_vtpm(state: Path, timeout: float = 120.0) -> bytes:
    """Create the vTPM state in ``state`` with a persistent restricted AK; its
    TPMT_PUBLIC. Idempotent: an already provisioned state returns the same AK."""
    swtpm = _need("swtpm", "swtpm")
    state.mkdir(parents=True, exist_ok=True, mode=0o700)
    log = state.parent / "swtpm-provision.log"
    for _ in range(5):
        port, ctrl = free_port_pair()
        with log.open("ab") as err:
            proc = subprocess.Popen(  # noqa: S603 - swtpm, argv built here
                [
                    swtpm, "socket", "--tpm2",
                    "--server", f"type=tcp,port={port},bindaddr=127.0.0.1",
                    "--ctrl", f"type=tcp,port={ctrl},bindaddr=127.0.0.1",
                    "--tpmstate", f"dir={state}", "--flags", "startup-clear",
                ],
                stdout=subprocess.DEVNULL, stderr=err, start_new_session=True,
            )  # fmt: skip
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and proc.poll() is None:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    time.sleep(0.05)
            if proc.poll() is not None:
                continue  # the port was taken meanwhile: another pair
            tpm = Tpm2Provider(
                Tpm2Config(
                    tcti=f"swtpm:host=127.0.0.1,port={port}",
                    state_dir=state.parent / "ak",
                    ak_handle=AK_HANDLE,
                )
            )
            return tpm.ak_public()
        finally:
            _stop(proc)
    raise UnavailableError(f"swtpm did not start: {log.read_text(errors='replace')[-300:]}")


@dataclass
class GuestVm:
    spec: VmSpec
    qemu: subprocess.Popen[bytes]
    swtpm: subprocess.Popen[bytes] | None
    ak_pub: bytes | None
    started: float
    ak_cert: bytes | None = None
    _sock: socket.socket | None = None
    _buf: bytes = b""

    # ---------------------------------------------------------------- start / stop

    @classmethod
    def start(cls, spec: VmSpec, *, vtpm: bool = True, qemu_bin: str | None = None,
              ca: VtpmCa | None = None) -> GuestVm:  # fmt: skip
        """Provision the vTPM (if asked; its AK certified by ``ca`` if given), start swtpm
        and QEMU; returns at once (the guest boots meanwhile; :meth:`wait_ready` waits for
        its ``/init``)."""
        qemu = _need(qemu_bin or "qemu-system-x86_64", "qemu-system-x86")
        argv = build_argv(spec, qemu)  # a bad spec is refused before anything starts
        spec.run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        ak_pub = ak_cert = None
        swtpm_proc = None
        if vtpm:
            if spec.tpm_socket is None:
                raise InvalidInputError("vtpm=True needs spec.tpm_socket")
            state = spec.run_dir / "tpm" / "state"
            ak_pub = provision_vtpm(state)
            ak_cert = ca.certify_ak(ak_pub, spec.name) if ca is not None else None
            with (spec.run_dir / "swtpm.log").open("ab") as err:
                swtpm_proc = subprocess.Popen(  # noqa: S603 - swtpm, argv built here
                    [
                        _need("swtpm", "swtpm"), "socket", "--tpm2",
                        "--tpmstate", f"dir={state}",
                        "--ctrl", f"type=unixio,path={spec.tpm_socket}", "--terminate",
                    ],
                    stdout=subprocess.DEVNULL, stderr=err, start_new_session=True,
                )  # fmt: skip
            deadline = time.monotonic() + 60
            while not spec.tpm_socket.exists():
                if swtpm_proc.poll() is not None or time.monotonic() > deadline:
                    _stop(swtpm_proc)
                    raise UnavailableError("swtpm did not create its control socket")
                time.sleep(0.02)
        try:
            (spec.run_dir / "qemu.argv").write_text(json.dumps(argv) + "\n")
            with (spec.run_dir / "qemu.log").open("ab") as err:
                proc = subprocess.Popen(  # noqa: S603 - qemu, argv from build_argv
                    argv, stdin=subprocess.DEVNULL, stdout=err, stderr=err, start_new_session=True
                )
        except OSError as e:
            if swtpm_proc is not None:
                _stop(swtpm_proc)
            raise UnavailableError(f"cannot start QEMU: {e}", code="vm-start-failed") from e
        return cls(spec, proc, swtpm_proc, ak_pub, time.monotonic(), ak_cert)

    def alive(self) -> bool:
        return self.qemu.poll() is None

    def stop(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        _stop(self.qemu)
        if self.swtpm is not None:
            _stop(self.swtpm)

    def remove(self) -> None:
        """Stop everything and delete the run directory (vTPM state, sockets, logs)."""
        self.stop()
        shutil.rmtree(self.spec.run_dir, ignore_errors=True)

    def console(self) -> str:
        try:
            return self.spec.console_log.read_text(errors="replace")
        except OSError:
            return ""

    # ---------------------------------------------------------------- channel

    def _connect(self, deadline: float) -> socket.socket:
        while self._sock is None:
            if not self.alive():
                raise UnavailableError(self._died("before its channel opened"))
            try:
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.connect(str(self.spec.channel))
                self._sock = s
            except OSError:
                s.close()
                if time.monotonic() > deadline:
                    raise UnavailableError("the VM's channel did not open") from None
                time.sleep(0.05)
        return self._sock

    def _died(self, when: str) -> str:
        try:  # a channel that broke because QEMU died: let it be reaped to show its code
            self.qemu.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        tail = " | ".join(self.console().strip().splitlines()[-5:])
        try:  # QEMU's own complaint (a firmware or kernel it cannot load, a bad option)
            qemu_log = (self.spec.run_dir / "qemu.log").read_text(errors="replace")
        except OSError:
            qemu_log = ""
        said = " | ".join(qemu_log.strip().splitlines()[-3:])
        return (
            f"VM {self.spec.name} exited (code {self.qemu.poll()}) {when}; "
            f"qemu: {said or '-'}; console: {tail or '-'}"
        )

    def send(self, obj: dict[str, Any], timeout: float = BOOT_TIMEOUT) -> None:
        s = self._connect(time.monotonic() + timeout)
        try:
            s.sendall((json.dumps(obj) + "\n").encode())
        except OSError as e:
            raise UnavailableError(self._died(f"(channel: {e.strerror or e})")) from e

    def receive(self, timeout: float = BOOT_TIMEOUT) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        s = self._connect(deadline)
        while b"\n" not in self._buf:
            if time.monotonic() > deadline:
                raise UnavailableError(f"no message from VM {self.spec.name} in {timeout:.0f}s")
            s.settimeout(0.5)
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                if not self.alive():
                    raise UnavailableError(self._died("while the host waited")) from None
                continue
            except OSError as e:  # reset: the VM's end went away
                raise UnavailableError(self._died(f"(channel: {e.strerror or e})")) from e
            if not chunk:
                raise UnavailableError(self._died("and closed its channel"))
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        start = line.find(PREFIX)
        if start < 0:
            return self.receive(max(deadline - time.monotonic(), 0.1))  # firmware noise
        line = line[start + len(PREFIX) :]
        try:
            msg = json.loads(line)
        except ValueError as e:
            raise UnavailableError(f"VM {self.spec.name} sent an unreadable line") from e
        if not isinstance(msg, dict):
            raise UnavailableError(f"VM {self.spec.name} sent a non-object message")
        return msg

    def wait_ready(self, timeout: float = BOOT_TIMEOUT) -> dict[str, Any]:
        msg = self.receive(timeout)
        if msg.get("type") != "ready":
            raise UnavailableError(f"VM {self.spec.name}: expected 'ready', got {msg!r:.200}")
        return msg

    def quote(self, nonce: bytes, pcrs: list[int], timeout: float = BOOT_TIMEOUT) -> EvidenceItem:
        """A TPM quote from inside the guest, as an evidence item of kind ``tpm``
        (attachments ``signature``, ``pcrs``, ``ak_pub`` and the guest's ``eventlog``).
        The ``ak_pub`` attached is the host's provisioning record, still only a claim to
        a verifier that does not pin it."""
        self.send({"op": "quote", "nonce": nonce.hex(), "pcrs": pcrs})
        msg = self.receive(timeout)
        if msg.get("type") == "error":
            raise UnavailableError(f"the guest could not quote: {msg.get('message')}")
        if msg.get("type") != "evidence":
            raise UnavailableError(f"VM {self.spec.name}: expected evidence, got {msg!r:.200}")
        try:
            quote = base64.b64decode(msg["quote"], validate=True)
            sig = base64.b64decode(msg["signature"], validate=True)
            values = base64.b64decode(msg["pcrs"], validate=True)
            log = base64.b64decode(msg.get("eventlog", ""), validate=True)
            indices = [int(i) for i in msg["indices"]]
        except (KeyError, ValueError, TypeError) as e:
            raise UnavailableError(f"VM {self.spec.name}: malformed evidence message") from e
        size = HASH_SIZES[HASH_BY_NAME["sha256"]]
        if len(values) != size * len(indices):
            raise UnavailableError(f"VM {self.spec.name}: PCR values do not match the indices")
        pcr_map = {i: values[n * size : (n + 1) * size] for n, i in enumerate(indices)}
        att = {"signature": sig, "pcrs": pcrs_json({HASH_BY_NAME["sha256"]: pcr_map})}
        if self.ak_pub is not None:
            att["ak_pub"] = self.ak_pub
        if self.ak_cert is not None:
            att["ak_cert"] = self.ak_cert
        if log:
            att["eventlog"] = log
        return EvidenceItem(kind="tpm", data=quote, attachments=att, collected_at=datetime.now(UTC))

    def poweroff(self, timeout: float = 120.0) -> int:
        """Ask ``/init`` to power off; the QEMU exit code (QEMU exits on poweroff)."""
        try:
            self.send({"op": "poweroff"})
        except UnavailableError:
            pass
        try:
            return self.qemu.wait(timeout=timeout)
        finally:
            self.stop()


# ----------------------------------------------------------------------------- one-shot use

#: the PCRs a guest quote covers: firmware (0-7) and the EFI stub's (9)
QUOTED_PCRS = [0, 1, 2, 3, 4, 5, 6, 7, 9]


def guest_spec(image: GuestImage, run_dir: Path, name: str, *, firmware: Path = OVMF,
               accel: Accel | None = None, memory_mb: int = 512) -> VmSpec:  # fmt: skip
    """A TEE-less VM with a vTPM booting ``image`` (this machine's path)."""
    return VmSpec(
        name=name, kernel=image.kernel, initrd=image.initrd, cmdline=image.cmdline,
        firmware=firmware, run_dir=run_dir, memory_mb=memory_mb,
        accel=accel or default_accel(), tpm_socket=run_dir / "swtpm.sock",
    )  # fmt: skip


@dataclass(frozen=True)
class GuestQuote:
    item: EvidenceItem
    ak_pub: bytes
    ready_after: float  # seconds from launch to the guest's "ready"
    quoted_after: float
    guest_uptime: str


def boot_and_quote(spec: VmSpec, nonce: bytes, pcrs: list[int] | None = None, *,
                   ca: VtpmCa | None = None) -> GuestQuote:  # fmt: skip
    """Boot ``spec`` with a fresh vTPM, take one quote from inside the guest, power off.
    The VM and its swtpm are gone when this returns (also on error)."""
    vm = GuestVm.start(spec, ca=ca)
    try:
        ready = vm.wait_ready()
        t_ready = time.monotonic() - vm.started
        item = vm.quote(nonce, pcrs or QUOTED_PCRS)
        t_quote = time.monotonic() - vm.started
        vm.poweroff()
    finally:
        vm.stop()
    assert vm.ak_pub is not None  # vtpm=True above
    return GuestQuote(item, vm.ak_pub, t_ready, t_quote, str(ready.get("uptime", "")))


def tpm_policy(expectation: TpmExpectation, policy_id: str = "sealroom-guest") -> Policy:
    return Policy.from_dict({"version": 1, "id": policy_id, "tpm": expectation.policy_section()})


def reference_expectation(image: GuestImage, run_dir: Path, *, firmware: Path = OVMF,
                          accel: Accel | None = None) -> TpmExpectation:  # fmt: skip
    """Expected PCRs 0-7 and 9 of ``image`` from one reference boot (ADR 0035): its quote
    must verify with the AK the host provisioned, its event log must replay to the quote,
    and its PCR 9 must equal the one computed from the artifacts; else refused."""
    computed = expected_tpm(image)
    nonce = os.urandom(32)
    q = boot_and_quote(guest_spec(image, run_dir, "reference", firmware=firmware, accel=accel),
                       nonce)  # fmt: skip
    claims = kinds.get("tpm").verify(
        q.item, VerifyContext(now=datetime.now(UTC), nonce=nonce, ak_pins=(q.ak_pub,))
    )
    if not isinstance(claims, TpmClaims) or claims.event_log is None:
        raise AttestationError("the reference boot's quote carries no event log")
    quoted = claims.pcrs.get("sha256", {})
    replayed = set(claims.event_log.replayed.get("sha256", ()))
    missing = [i for i in QUOTED_PCRS if i not in replayed and quoted.get(i) != bytes(32)]
    if missing:
        raise AttestationError(f"the reference boot's event log does not replay PCRs {missing}")
    for idx, want in computed.pcrs.items():
        if quoted.get(idx) != want:
            got = quoted.get(idx, b"").hex() or "not quoted"
            raise AttestationError(
                f"reference boot: PCR {idx} is {got}, the artifacts give {want.hex()}: the "
                f"firmware measured something else than this image"
            )
    pcrs = {i: quoted[i] for i in FIRMWARE_PCRS if i in quoted} | computed.pcrs
    return TpmExpectation(pcrs, computed.computed, file_sha256(firmware))

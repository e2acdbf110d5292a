"""TPM 2.0 evidence provider: fresh ``tpm`` quotes through tpm2-tools subprocesses.

The TPM is reached through a TCTI string (``device:/dev/tpmrm0`` on a guest,
``swtpm:host=127.0.0.1,port=P`` for a software TPM in tests), passed to every tool in
``TPM2TOOLS_TCTI``. On first use the provider creates an endorsement key and an
attestation key under it (``tpm2_createek``, ``tpm2_createak``: a restricted signing key),
makes the AK persistent at ``ak_handle`` (``tpm2_evictcontrol``) and flushes transient
objects, so later quotes need no object slots. Each ``quote(nonce)`` runs ``tpm2_quote``
with the nonce as qualifying data over the configured PCRs and returns an item of kind
``tpm``: ``data`` = TPMS_ATTEST, attachments ``signature`` (TPMT_SIGNATURE), ``pcrs`` (the
PCR values the tool read with the quote) and ``ak_pub`` (the AK's TPMT_PUBLIC). A verifier
pins the AK it trusts (``ak_public()`` obtained out of band, or an AK certificate);
evidence never pins itself.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from sealroom.attestation.evidence import EvidenceItem
from sealroom.attestation.tpm.abi import HASH_BY_NAME, HASH_SIZES, parse_attest, parse_public_area
from sealroom.attestation.tpm.formats import pcrs_json
from sealroom.errors import InvalidInputError, MalformedEvidenceError, UnavailableError

MAX_NONCE = 64  # TPM2B_DATA holds at most a TPMT_HA's digest
DEFAULT_AK_HANDLE = 0x81010002
_AK_SCHEMES = {
    # algorithm -> (tpm2_createak -G, -s, default hash)
    "rsa": ("rsa", "rsassa", "sha256"),
    "rsapss": ("rsa", "rsapss", "sha256"),
    "ecc": ("ecc", "ecdsa", "sha256"),
    "ecc384": ("ecc384", "ecdsa", "sha384"),
}


@dataclass(frozen=True)
class Tpm2Config:
    tcti: str
    #: Where the EK/AK context files are written (created if absent).
    state_dir: Path
    ak_handle: int = DEFAULT_AK_HANDLE
    ak_algorithm: Literal["rsa", "rsapss", "ecc", "ecc384"] = "rsa"
    pcr_bank: Literal["sha1", "sha256", "sha384", "sha512"] = "sha256"
    pcrs: tuple[int, ...] = tuple(range(24))
    #: Directory holding the tpm2_* binaries (None: search PATH).
    tools_dir: Path | None = None
    timeout: float = 60.0
    extra_env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.pcrs or any(not 0 <= i <= 23 for i in self.pcrs):
            raise InvalidInputError(f"pcrs must be PCR indices 0..23, got {list(self.pcrs)}")
        if not 0x81000000 <= self.ak_handle <= 0x81FFFFFF:
            raise InvalidInputError(f"ak_handle {self.ak_handle:#x} is not a persistent handle")


class Tpm2Provider:
    def __init__(self, config: Tpm2Config) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._ak_pub: bytes | None = None

    # ------------------------------------------------------------------ tools

    def _tool(self, name: str) -> str:
        if self.config.tools_dir is not None:
            path = self.config.tools_dir / name
            if path.is_file():
                return str(path)
        found = shutil.which(name)
        if found is None:
            raise UnavailableError(
                f"{name} not found: install tpm2-tools (Debian: apt-get install tpm2-tools)",
                code="tpm2-tools-missing",
            )
        return found

    def run(self, name: str, args: Sequence[str], cwd: Path | None = None) -> str:
        """Run one tpm2-tools command against the configured TPM; stdout on success."""
        env = dict(os.environ)
        env.update(self.config.extra_env)
        env["TPM2TOOLS_TCTI"] = self.config.tcti
        try:
            proc = subprocess.run(  # noqa: S603 - fixed tool, arguments built here
                [self._tool(name), *args],
                cwd=cwd,
                env=env,
                capture_output=True,
                text=True,
                timeout=self.config.timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as e:
            raise UnavailableError(
                f"{name} timed out after {self.config.timeout}s (TCTI {self.config.tcti})",
                code="tpm-unavailable",
            ) from e
        except OSError as e:
            raise UnavailableError(f"cannot run {name}: {e}", code="tpm-unavailable") from e
        if proc.returncode != 0:
            tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
            raise UnavailableError(
                f"{name} failed (exit {proc.returncode}, TCTI {self.config.tcti}): {tail}",
                code="tpm-unavailable",
            )
        return proc.stdout

    # ------------------------------------------------------------------ AK

    def _read_ak(self, work: Path) -> bytes | None:
        try:
            self.run(
                "tpm2_readpublic",
                ["-c", f"{self.config.ak_handle:#x}", "-o", "ak.pub", "-f", "tss"],
                cwd=work,
            )
        except UnavailableError:
            return None
        return (work / "ak.pub").read_bytes()

    def ensure_ak(self) -> bytes:
        """The AK's TPMT_PUBLIC, creating and persisting the AK on first use."""
        with self._lock:
            if self._ak_pub is not None:
                return self._ak_pub
            state = self.config.state_dir
            state.mkdir(parents=True, exist_ok=True)
            raw = self._read_ak(state)
            if raw is None:
                key_alg, scheme, hash_alg = _AK_SCHEMES[self.config.ak_algorithm]
                ek_alg = "ecc" if key_alg.startswith("ecc") else "rsa"
                self.run("tpm2_createek", ["-c", "ek.ctx", "-G", ek_alg, "-u", "ek.pub"], state)
                self.run("tpm2_flushcontext", ["-t"], state)
                self.run(
                    "tpm2_createak",
                    [
                        "-C", "ek.ctx", "-c", "ak.ctx", "-G", key_alg, "-g", hash_alg,
                        "-s", scheme, "-u", "ak.pub", "-f", "tss", "-n", "ak.name",
                    ],
                    state,
                )  # fmt: skip
                self.run("tpm2_flushcontext", ["-t"], state)
                self.run(
                    "tpm2_evictcontrol",
                    ["-C", "o", "-c", "ak.ctx", f"{self.config.ak_handle:#x}"],
                    state,
                )
                self.run("tpm2_flushcontext", ["-t"], state)
                raw = (state / "ak.pub").read_bytes()
            try:
                pub = parse_public_area(raw)
            except MalformedEvidenceError as e:
                raise UnavailableError(f"the TPM returned an unreadable AK: {e.message}") from e
            self._ak_pub = pub.raw
            return self._ak_pub

    def ak_public(self) -> bytes:
        return self.ensure_ak()

    # ------------------------------------------------------------------ quote

    def quote(self, nonce: bytes, *, now: datetime | None = None) -> EvidenceItem:
        """A fresh quote over the configured PCRs with ``nonce`` as qualifying data."""
        if not nonce or len(nonce) > MAX_NONCE:
            raise InvalidInputError(f"nonce must be 1..{MAX_NONCE} bytes, got {len(nonce)}")
        ak_pub = self.ensure_ak()
        _, scheme, hash_alg = _AK_SCHEMES[self.config.ak_algorithm]
        bank = self.config.pcr_bank
        indices = sorted(set(self.config.pcrs))
        with self._lock, tempfile.TemporaryDirectory(prefix="sealroom-tpm2-") as tmp:
            work = Path(tmp)
            self.run(
                "tpm2_quote",
                [
                    "-c", f"{self.config.ak_handle:#x}",
                    "-l", f"{bank}:{','.join(map(str, indices))}",
                    "-q", nonce.hex(), "-g", hash_alg, "--scheme", scheme,
                    "-m", "quote.msg", "-s", "quote.sig", "-o", "quote.pcrs", "-F", "values",
                ],
                work,
            )  # fmt: skip
            message = (work / "quote.msg").read_bytes()
            signature = (work / "quote.sig").read_bytes()
            values = (work / "quote.pcrs").read_bytes()
        size = HASH_SIZES[HASH_BY_NAME[bank]]
        if len(values) != size * len(indices):
            raise UnavailableError(
                f"tpm2_quote returned {len(values)} bytes of PCR values, expected "
                f"{len(indices)} x {size}",
                code="tpm-unavailable",
            )
        try:
            parse_attest(message)
        except MalformedEvidenceError as e:
            raise UnavailableError(f"tpm2_quote returned an unreadable quote: {e.message}") from e
        pcrs = {i: values[n * size : (n + 1) * size] for n, i in enumerate(indices)}
        return EvidenceItem(
            kind="tpm",
            data=message,
            attachments={
                "signature": signature,
                "pcrs": pcrs_json({HASH_BY_NAME[bank]: pcrs}),
                "ak_pub": ak_pub,
            },
            collected_at=now or datetime.now(UTC),
        )

    # ------------------------------------------------------------------ provider seam

    @property
    def kind(self) -> str:
        return "tpm"

    def collect(self, report_data: bytes) -> EvidenceItem:
        """The provider interface: a quote whose qualifying data (extraData) is exactly the
        64-byte REPORT_DATA the runtime computed (policy ``extra_data: {mode: sealroom-v1}``)."""
        if not isinstance(report_data, bytes) or len(report_data) != 64:
            raise InvalidInputError(
                "report_data must be exactly 64 bytes", code="report-data-invalid"
            )
        return self.quote(report_data)

    def pcr_extend(self, index: int, digest: bytes) -> None:
        """Extend one PCR of the configured bank (for tests and measured launches)."""
        if not 0 <= index <= 23:
            raise InvalidInputError(f"PCR index {index} is not 0..23")
        self.run("tpm2_pcrextend", [f"{index}:{self.config.pcr_bank}={digest.hex()}"])

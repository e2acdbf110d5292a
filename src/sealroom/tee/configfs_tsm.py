"""Evidence from the Linux configfs-tsm report interface (SEV-SNP and TDX guests).

ABI: Documentation/ABI/testing/configfs-tsm (kernel v6.7+; service_* and manifestblob
v6.10+). An attestation request is one *entry* under ``/sys/kernel/config/tsm/report``:

1. ``mkdir report/<name>``: the kernel populates the entry with its attributes;
2. read ``provider`` ("sev_guest" -> SNP report, "tdx_guest" -> TDX quote) and
   ``generation`` (a counter the kernel bumps on every attribute write);
3. write the options (``privlevel``: SNP VMPL; ``service_provider``/``service_guid``/
   ``service_manifest_version``: a report from an SVSM service), then ``inblob`` (up to
   64 bytes; becomes REPORT_DATA);
4. read ``outblob`` (the kernel produces the report on read), ``auxblob`` (SNP: the GHCB
   certificate table, which the ``snp`` kind parses from ``attachments["certtable"]``) and
   ``manifestblob`` (SVSM), then ``generation`` again: it must have grown by exactly our
   number of writes, otherwise someone else wrote to the entry between our writes and
   reads, and the outblob may answer their inblob. Then the entry is retried afresh;
5. ``rmdir`` the entry, always, also on errors.

A fresh, uniquely named entry per request keeps concurrent requesters apart (the ABI's
recommended way to avoid conflicts); the generation check catches the rest.

Filesystem access goes through :class:`TsmFs`. Production uses :class:`OsTsmFs` (plain
system calls); tests use ``sealroom.testing.fake_tsm``, which implements the same seam
over a real directory tree and behaves like the kernel where a plain directory cannot
(mkdir populates the entry, reading outblob produces the report, writes bump generation).
"""

from __future__ import annotations

import errno
import hashlib
import os
import secrets
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from sealroom.attestation.evidence import EvidenceItem
from sealroom.attestation.snp.abi import parse_report
from sealroom.attestation.snp.certs import parse_cert_table
from sealroom.attestation.tdx.abi import Quote
from sealroom.errors import (
    AttestationError,
    InvalidInputError,
    MalformedEvidenceError,
    UnavailableError,
)
from sealroom.tee.base import require_report_data

DEFAULT_ROOT = Path("/sys/kernel/config/tsm/report")
#: configfs-tsm ``provider`` value -> sealroom evidence kind.
PROVIDER_KINDS = {"sev_guest": "snp", "tdx_guest": "tdx"}
TSM_INBLOB_MAX = 64  # include/linux/tsm.h
TSM_PRIVLEVEL_MAX = 3  # include/linux/tsm.h
TSM_OUTBLOB_MAX = 32 * 1024  # include/linux/tsm.h; a larger answer is not from the kernel
DEFAULT_ATTEMPTS = 3


class TsmFs(Protocol):
    """The five file operations the provider performs on configfs."""

    def is_dir(self, path: Path) -> bool: ...

    def mkdir(self, path: Path) -> None: ...

    def rmdir(self, path: Path) -> None: ...

    def read(self, path: Path) -> bytes:
        """The attribute's content; FileNotFoundError when the attribute is absent."""
        ...

    def write(self, path: Path, data: bytes) -> None:
        """Write an existing attribute in one call (never creates a file)."""
        ...


class OsTsmFs:
    """Plain system calls on the real configfs mount."""

    def is_dir(self, path: Path) -> bool:
        return path.is_dir()

    def mkdir(self, path: Path) -> None:
        os.mkdir(path, 0o700)

    def rmdir(self, path: Path) -> None:
        os.rmdir(path)

    def read(self, path: Path) -> bytes:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            chunks = []
            total = 0
            while chunk := os.read(fd, 65536):
                chunks.append(chunk)
                total += len(chunk)
                if total > TSM_OUTBLOB_MAX + 65536:
                    raise OSError(errno.EFBIG, f"{path.name} is larger than any TSM blob")
            return b"".join(chunks)
        finally:
            os.close(fd)

    def write(self, path: Path, data: bytes) -> None:
        # No O_CREAT: an attribute the kernel did not create is an unsupported option.
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            # configfs buffers attribute writes and commits them on close; one write
            # holds the whole value.
            written = os.write(fd, data)
            if written != len(data):
                raise OSError(errno.EIO, f"short write to {path.name}: {written}/{len(data)}")
        finally:
            os.close(fd)


@dataclass(frozen=True)
class TsmReport:
    """What one configfs-tsm entry produced."""

    provider: str
    outblob: bytes
    auxblob: bytes | None
    manifestblob: bytes | None
    generation: int
    attempts: int


def _errno_name(e: OSError) -> str:
    return errno.errorcode.get(e.errno or 0, str(e.errno))


class ConfigfsTsmProvider:
    """Collects SNP reports or TDX quotes through configfs-tsm.

    ``privlevel`` asks for a report at that SNP VMPL (or the TSM's privilege level);
    ``service_provider`` (e.g. "svsm") asks an SVSM service for the report, in which case
    REPORT_DATA = SHA-512(inblob || manifestblob) (SVSM spec #58019, attestation protocol)
    and the manifest travels as ``attachments["manifestblob"]``.
    """

    def __init__(
        self,
        root: Path = DEFAULT_ROOT,
        *,
        privlevel: int | None = None,
        service_provider: str | None = None,
        service_guid: str | None = None,
        service_manifest_version: int | None = None,
        attempts: int = DEFAULT_ATTEMPTS,
        fs: TsmFs | None = None,
    ) -> None:
        if privlevel is not None and not 0 <= privlevel <= TSM_PRIVLEVEL_MAX:
            raise InvalidInputError(
                f"privlevel is {privlevel}, expected 0..{TSM_PRIVLEVEL_MAX}",
                code="tsm-option-invalid",
            )
        if service_provider is None and (
            service_guid is not None or service_manifest_version is not None
        ):
            raise InvalidInputError(
                "service_guid / service_manifest_version need a service_provider",
                code="tsm-option-invalid",
            )
        if attempts < 1:
            raise ValueError("attempts must be >= 1")
        self.root = Path(root)
        self.privlevel = privlevel
        self.service_provider = service_provider
        self.service_guid = service_guid
        self.service_manifest_version = service_manifest_version
        self.attempts = attempts
        self.fs: TsmFs = fs if fs is not None else OsTsmFs()
        self._kind: str | None = None
        self._kind_lock = threading.Lock()
        if not self.fs.is_dir(self.root):
            raise UnavailableError(
                f"configfs-tsm report interface {self.root} is absent: this is not a "
                "confidential guest, or configfs is not mounted / the TSM driver "
                "(sev-guest, tdx-guest) is not loaded",
                code="tsm-unavailable",
            )

    def __repr__(self) -> str:
        return f"ConfigfsTsmProvider({str(self.root)!r})"

    # ------------------------------------------------------------------ kind

    @property
    def kind(self) -> str:
        """The evidence kind, from the ``provider`` attribute (probed once)."""
        with self._kind_lock:
            if self._kind is None:
                entry = self._make_entry()
                try:
                    self._kind = _kind_of(self._read_text(entry, "provider"))
                finally:
                    self._remove_entry(entry, None)
            return self._kind

    # ------------------------------------------------------------------ collect

    def collect(self, report_data: bytes) -> EvidenceItem:
        wanted = require_report_data(report_data)
        report = self.report(wanted)
        kind = _kind_of(report.provider)
        attachments: dict[str, bytes] = {}
        expected = wanted
        if report.manifestblob is not None:
            attachments["manifestblob"] = report.manifestblob
            expected = hashlib.sha512(wanted + report.manifestblob).digest()
        if kind == "snp":
            got = parse_report(report.outblob).report_data
            if report.auxblob:
                parse_cert_table(report.auxblob)  # malformed tables fail here, at the source
                attachments["certtable"] = report.auxblob
        else:
            got = Quote.from_bytes(report.outblob).body.report_data
        if got != expected:
            raise AttestationError(
                f"configfs-tsm outblob carries REPORT_DATA {got.hex()[:32]}..., expected "
                f"{expected.hex()[:32]}... (the report is not for this request)",
                code="tee-report-data-mismatch",
            )
        return EvidenceItem(
            kind=kind, data=report.outblob, attachments=attachments, collected_at=datetime.now(UTC)
        )

    def report(self, inblob: bytes) -> TsmReport:
        """One raw configfs-tsm round, retried on a generation conflict; the entry is
        removed after every attempt. The ABI takes up to 64 bytes of inblob; the SNP and
        TDX drivers refuse anything but exactly 64 (EINVAL on reading outblob)."""
        if len(inblob) > TSM_INBLOB_MAX:
            raise InvalidInputError(
                f"inblob is {len(inblob)} bytes, at most {TSM_INBLOB_MAX}",
                code="report-data-invalid",
            )
        conflicts: list[str] = []
        for attempt in range(1, self.attempts + 1):
            entry = self._make_entry()
            error: BaseException | None = None
            try:
                result = self._round(entry, inblob, attempt)
            except BaseException as e:
                error = e
                raise
            finally:
                self._remove_entry(entry, error)
            if isinstance(result, TsmReport):
                return result
            conflicts.append(result)
        raise UnavailableError(
            f"configfs-tsm entry was written concurrently on every one of {self.attempts} "
            f"attempts ({'; '.join(conflicts)}); another process is using our entries",
            code="tsm-generation-conflict",
        )

    # ------------------------------------------------------------------ one round

    def _round(self, entry: Path, inblob: bytes, attempt: int) -> TsmReport | str:
        provider = self._read_text(entry, "provider")
        _kind_of(provider)  # refuse before asking an unknown TSM for anything
        before = self._generation(entry)
        writes = 0
        if self.privlevel is not None:
            self._write_option(entry, "privlevel", str(self.privlevel).encode())
            writes += 1
        if self.service_provider is not None:
            self._write_option(entry, "service_provider", self.service_provider.encode())
            writes += 1
            if self.service_guid is not None:
                self._write_option(entry, "service_guid", self.service_guid.encode())
                writes += 1
            if self.service_manifest_version is not None:
                version = str(self.service_manifest_version).encode()
                self._write_option(entry, "service_manifest_version", version)
                writes += 1
        self._write(entry, "inblob", inblob)
        writes += 1
        outblob = self._read(entry, "outblob")
        if not outblob:
            raise UnavailableError(
                f"configfs-tsm {provider} returned an empty outblob", code="tsm-unavailable"
            )
        if len(outblob) > TSM_OUTBLOB_MAX:
            raise MalformedEvidenceError(
                f"configfs-tsm outblob is {len(outblob)} bytes, at most {TSM_OUTBLOB_MAX}",
                code="tsm-bad-attribute",
            )
        auxblob = self._read_optional(entry, "auxblob")
        manifestblob = self._read_optional(entry, "manifestblob") if self.service_provider else None
        after = self._generation(entry)
        if after != before + writes:
            return f"attempt {attempt}: generation {before} -> {after}, expected {before + writes}"
        return TsmReport(provider, outblob, auxblob, manifestblob, after, attempt)

    # ------------------------------------------------------------------ file access

    def _make_entry(self) -> Path:
        for _ in range(8):
            entry = self.root / f"sealroom-{os.getpid()}-{secrets.token_hex(8)}"
            try:
                self.fs.mkdir(entry)
                return entry
            except FileExistsError:
                continue
            except FileNotFoundError as e:
                raise UnavailableError(
                    f"configfs-tsm report interface {self.root} has gone away",
                    code="tsm-unavailable",
                ) from e
            except PermissionError as e:
                raise UnavailableError(
                    f"cannot create a configfs-tsm entry in {self.root}: permission denied "
                    "(the runtime needs CAP_SYS_ADMIN or write access to the directory)",
                    code="tsm-permission-denied",
                ) from e
            except OSError as e:
                raise UnavailableError(
                    f"cannot create a configfs-tsm entry in {self.root}: {_errno_name(e)} "
                    f"{e.strerror or e}",
                    code="tsm-unavailable",
                ) from e
        raise UnavailableError(f"cannot find a free entry name in {self.root}")

    def _remove_entry(self, entry: Path, error: BaseException | None) -> None:
        try:
            self.fs.rmdir(entry)
        except FileNotFoundError:
            return
        except OSError as e:
            message = f"cannot remove configfs-tsm entry {entry}: {_errno_name(e)} {e.strerror}"
            if error is not None:
                error.add_note(message)
                return
            raise UnavailableError(message, code="tsm-unavailable") from e

    def _read(self, entry: Path, attr: str) -> bytes:
        try:
            return self.fs.read(entry / attr)
        except FileNotFoundError as e:
            raise UnavailableError(
                f"configfs-tsm entry has no {attr!r} attribute (kernel too old for this ABI?)",
                code="tsm-unavailable",
            ) from e
        except OSError as e:
            raise UnavailableError(
                f"reading configfs-tsm {attr} failed: {_errno_name(e)} {e.strerror or e}",
                code="tsm-unavailable",
            ) from e

    def _read_optional(self, entry: Path, attr: str) -> bytes | None:
        try:
            data = self.fs.read(entry / attr)
        except FileNotFoundError:
            return None
        except OSError as e:
            raise UnavailableError(
                f"reading configfs-tsm {attr} failed: {_errno_name(e)} {e.strerror or e}",
                code="tsm-unavailable",
            ) from e
        return data

    def _read_text(self, entry: Path, attr: str) -> str:
        raw = self._read(entry, attr)
        try:
            return raw.decode("ascii").strip()
        except UnicodeDecodeError as e:
            raise MalformedEvidenceError(
                f"configfs-tsm {attr} is not ASCII text: {raw[:32]!r}", code="tsm-bad-attribute"
            ) from e

    def _generation(self, entry: Path) -> int:
        text = self._read_text(entry, "generation")
        if not text.isdigit() or not text.isascii():
            raise MalformedEvidenceError(
                f"configfs-tsm generation is {text[:32]!r}, expected a decimal counter",
                code="tsm-bad-attribute",
            )
        return int(text)

    def _write(self, entry: Path, attr: str, data: bytes) -> None:
        try:
            self.fs.write(entry / attr, data)
        except FileNotFoundError as e:
            raise UnavailableError(
                f"configfs-tsm entry has no {attr!r} attribute", code="tsm-unavailable"
            ) from e
        except OSError as e:
            raise UnavailableError(
                f"writing configfs-tsm {attr} failed: {_errno_name(e)} {e.strerror or e}",
                code="tsm-unavailable",
            ) from e

    def _write_option(self, entry: Path, attr: str, data: bytes) -> None:
        try:
            self.fs.write(entry / attr, data)
        except FileNotFoundError as e:
            raise InvalidInputError(
                f"configfs-tsm option {attr} is not supported by this TSM/kernel",
                code="tsm-option-unsupported",
            ) from e
        except OSError as e:
            if e.errno == errno.EINVAL:
                floor = self._read_optional(entry, f"{attr}_floor")
                hint = f" (the TSM's floor is {floor.decode().strip()})" if floor else ""
                raise InvalidInputError(
                    f"configfs-tsm refused {attr}={data.decode(errors='replace')}{hint}",
                    code="tsm-option-invalid",
                ) from e
            raise UnavailableError(
                f"writing configfs-tsm {attr} failed: {_errno_name(e)} {e.strerror or e}",
                code="tsm-unavailable",
            ) from e


def _kind_of(provider: str) -> str:
    kind = PROVIDER_KINDS.get(provider)
    if kind is None:
        raise UnavailableError(
            f"configfs-tsm provider is {provider!r}, supported: {', '.join(PROVIDER_KINDS)}",
            code="tsm-provider-unsupported",
        )
    return kind

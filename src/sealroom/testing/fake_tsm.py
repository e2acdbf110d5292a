"""A fake configfs-tsm "kernel" over a real directory tree, for tests of the provider.

configfs attributes are not plain files: ``mkdir`` makes the kernel populate an entry,
writing an attribute bumps ``generation``, reading ``outblob`` makes the TSM produce a
report for the current ``inblob``, and ``rmdir`` removes an entry with its attributes.
:class:`FakeTsm` implements the provider's :class:`~sealroom.tee.configfs_tsm.TsmFs` seam
with exactly those semantics, on real directories and files under ``root`` (so a test can
look at what is left on disk). The reports are real-layout SNP reports signed by a
:class:`~sealroom.testing.fake_snp.FakeSnpPki` (auxblob: a GHCB certificate table with
VCEK and ASK) or TDX quotes made by a :class:`~sealroom.testing.fake_intel.FakeIntelPki`,
so the production verifiers check them unchanged.

Knobs for negative tests: ``provider`` (any name), ``races`` (how many rounds see a
concurrent writer bump ``generation``), ``outblob_errno`` (reading outblob fails like a
driver error), ``tamper_report_data`` (the TSM reports other REPORT_DATA), ``auxblob``
(override the certificate table), ``privlevel_floor``, ``with_service_provider``.
Production code never imports this module.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from sealroom.attestation.snp import certs as snp_certs
from sealroom.testing.fake_intel import FakeIntelPki
from sealroom.testing.fake_snp import FakeSnpPki

_RW = ("inblob", "privlevel")
_SERVICE_RW = ("service_provider", "service_guid", "service_manifest_version")
#: A made-up SVSM services manifest, for the service_provider path.
FAKE_MANIFEST = b'{"fake-svsm-services": ["vtpm"]}'


@dataclass
class _Entry:
    generation: int = 0
    values: dict[str, bytes] = field(default_factory=dict)
    produced_at: int | None = None
    outblob: bytes = b""
    auxblob: bytes = b""


class FakeTsm:
    """``FakeTsm.snp(root, pki)`` or ``FakeTsm.tdx(root, intel_pki)``; pass as ``fs=``."""

    def __init__(
        self,
        root: Path,
        produce: Callable[[bytes, dict[str, bytes]], tuple[bytes, bytes | None]],
        *,
        provider: str,
    ) -> None:
        self.root = root
        self.produce = produce
        self.provider = provider
        self.races = 0
        self.race_before_outblob = False
        self.outblob_errno: int | None = None
        self.privlevel_floor = 0
        self.with_service_provider = False
        self.entries: dict[str, _Entry] = {}
        self.created: list[str] = []
        self.removed: list[str] = []
        self.reports_made = 0
        self._lock = threading.Lock()
        root.mkdir(parents=True, exist_ok=True)

    # ---- constructors ---------------------------------------------------------------

    @classmethod
    def snp(
        cls,
        root: Path,
        pki: FakeSnpPki,
        *,
        measurement: bytes = b"\x5a" * 48,
        host_data: bytes = bytes(32),
        tamper_report_data: bool = False,
        auxblob: bytes | None = None,
        provider: str = "sev_guest",
    ) -> FakeTsm:
        der = serialization.Encoding.DER
        table = snp_certs.build_cert_table(
            {
                "vcek": pki.issued.keys.vcek.public_bytes(der),
                "ask": pki.ask.public_bytes(der),
            }
        )

        def produce(inblob: bytes, values: dict[str, bytes]) -> tuple[bytes, bytes | None]:
            report_data = inblob
            if values.get("service_provider"):
                report_data = hashlib.sha512(inblob + FAKE_MANIFEST).digest()
            if tamper_report_data:
                report_data = bytes(b ^ 0xFF for b in report_data)
            vmpl = int(values.get("privlevel", b"0").strip() or b"0")
            report = pki.authority.report(
                measurement=measurement, report_data=report_data, host_data=host_data, vmpl=vmpl
            )
            return report.to_bytes(), (table if auxblob is None else auxblob)

        return cls(root, produce, provider=provider)

    @classmethod
    def tdx(cls, root: Path, pki: FakeIntelPki, *, provider: str = "tdx_guest") -> FakeTsm:
        def produce(inblob: bytes, values: dict[str, bytes]) -> tuple[bytes, bytes | None]:
            return pki.quote(pki.td_body(report_data=inblob)), None

        return cls(root, produce, provider=provider)

    # ---- the TsmFs seam ---------------------------------------------------------------

    def _entry(self, path: Path) -> _Entry:
        if path.parent != self.root or path.name not in self.entries:
            raise FileNotFoundError(errno.ENOENT, "no such entry", str(path))
        return self.entries[path.name]

    def _sync(self, path: Path, entry: _Entry) -> None:
        """Mirror the entry's state on disk (for a test to look at)."""
        (path / "generation").write_text(f"{entry.generation}\n")
        for name, value in entry.values.items():
            (path / name).write_bytes(value)

    def is_dir(self, path: Path) -> bool:
        return path.is_dir()

    def mkdir(self, path: Path) -> None:
        if path.parent != self.root:
            raise PermissionError(errno.EPERM, "entries live directly under report/", str(path))
        os.mkdir(path)  # FileExistsError / FileNotFoundError as the kernel would raise
        entry = _Entry()
        with self._lock:
            self.entries[path.name] = entry
            self.created.append(path.name)
        attrs = ["provider", "generation", "inblob", "outblob", "auxblob"]
        attrs += ["privlevel", "privlevel_floor"]
        if self.with_service_provider:
            attrs += [*_SERVICE_RW, "manifestblob"]
        for a in attrs:
            (path / a).touch()
        (path / "provider").write_text(f"{self.provider}\n")
        (path / "privlevel_floor").write_text(f"{self.privlevel_floor}\n")
        self._sync(path, entry)

    def rmdir(self, path: Path) -> None:
        self._entry(path)
        with self._lock:
            del self.entries[path.name]
            self.removed.append(path.name)
        shutil.rmtree(path)

    def write(self, path: Path, data: bytes) -> None:
        entry = self._entry(path.parent)
        name = path.name
        writable = _RW + (_SERVICE_RW if self.with_service_provider else ())
        if not path.exists():
            raise FileNotFoundError(errno.ENOENT, "no such attribute", str(path))
        if name not in writable:
            raise PermissionError(errno.EACCES, "read-only attribute", str(path))
        if name == "inblob" and len(data) > 64:
            raise OSError(errno.EINVAL, "inblob larger than TSM_INBLOB_MAX", str(path))
        if name == "privlevel":
            try:
                level = int(data.decode().strip())
            except ValueError as e:
                raise OSError(errno.EINVAL, "privlevel not a number", str(path)) from e
            if not self.privlevel_floor <= level <= 3:
                raise OSError(errno.EINVAL, "privlevel out of range", str(path))
        entry.values[name] = bytes(data)
        entry.generation += 1
        self._sync(path.parent, entry)

    def read(self, path: Path) -> bytes:
        entry = self._entry(path.parent)
        name = path.name
        if not path.exists():
            raise FileNotFoundError(errno.ENOENT, "no such attribute", str(path))
        if name in ("inblob", "privlevel", *_SERVICE_RW):
            raise PermissionError(errno.EACCES, "write-only attribute", str(path))
        if name in ("outblob", "auxblob", "manifestblob"):
            if name == "outblob" and self.races and self.race_before_outblob:
                self._foreign_write(path.parent, entry)
            self._produce(path.parent, entry)
            if name == "outblob" and self.races and not self.race_before_outblob:
                self._foreign_write(path.parent, entry)
            if name == "outblob":
                return entry.outblob
            if name == "manifestblob":
                return FAKE_MANIFEST if entry.values.get("service_provider") else b""
            return entry.auxblob
        return path.read_bytes()

    # ---- the "TSM" ----------------------------------------------------------------------

    def _produce(self, path: Path, entry: _Entry) -> None:
        if self.outblob_errno is not None:
            raise OSError(self.outblob_errno, os.strerror(self.outblob_errno), str(path))
        if entry.produced_at == entry.generation:
            return  # like the kernel: one report per generation
        inblob = entry.values.get("inblob", b"")
        if len(inblob) != 64:
            # sev_guest and tdx_guest accept exactly 64 bytes of REPORT_DATA
            raise OSError(errno.EINVAL, "inblob must be 64 bytes", str(path))
        outblob, auxblob = self.produce(inblob, dict(entry.values))
        entry.outblob, entry.auxblob = outblob, auxblob or b""
        entry.produced_at = entry.generation
        self.reports_made += 1
        (path / "outblob").write_bytes(entry.outblob)
        (path / "auxblob").write_bytes(entry.auxblob)

    def _foreign_write(self, path: Path, entry: _Entry) -> None:
        """Another process writes our entry's inblob."""
        self.races -= 1
        entry.values["inblob"] = b"\xee" * 64
        entry.generation += 1
        self._sync(path, entry)

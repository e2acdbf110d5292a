"""The provider seam: one protocol for every TEE interface, and ``open_provider`` to pick one.

A provider runs inside the guest. It takes the 64 bytes of REPORT_DATA the runtime computed
(design.md, "Core flow", step 3) and returns one :class:`EvidenceItem` that the matching
evidence kind (``kinds.get(item.kind)``) verifies unchanged. Providers never verify their
own evidence; they only refuse answers that are obviously not for the request (wrong
REPORT_DATA, unparseable bytes), so a broken device fails at the source with a clear error.

Specs accepted by :func:`open_provider`::

    sim:/run/sealroom/sim-tee.sock        the host-side sim TEE over a Unix socket
    configfs-tsm                          /sys/kernel/config/tsm/report (SNP or TDX guest)
    configfs-tsm:/other/tsm/report        the same ABI under another root
    sev-guest[:/dev/sev-guest]            SNP_GET_EXT_REPORT ioctl on the sev-guest device
    tpm2:<tcti>                           a TPM quote through tpm2-tools
                                          (e.g. tpm2:device:/dev/tpmrm0)
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Protocol, runtime_checkable

from sealroom import paths
from sealroom.attestation.evidence import EvidenceItem
from sealroom.errors import InvalidInputError

REPORT_DATA_SIZE = 64

_SPECS = "sim:PATH, configfs-tsm[:ROOT], sev-guest[:DEVICE], tpm2:TCTI"


@runtime_checkable
class EvidenceProvider(Protocol):
    """Obtains fresh evidence binding ``report_data`` from one TEE interface."""

    @property
    def kind(self) -> str:
        """The evidence kind of collected items: "snp" (sim and SNP), "tdx", "tpm"."""
        ...

    def collect(self, report_data: bytes) -> EvidenceItem:
        """Evidence whose REPORT_DATA (or the TEE's equivalent) is exactly ``report_data``.

        ``report_data`` must be 64 bytes (InvalidInputError otherwise). Raises
        UnavailableError when the TEE cannot be reached, MalformedEvidenceError when it
        answers with bytes that do not parse, AttestationError when the answer is not for
        this request.
        """
        ...


def require_report_data(report_data: object) -> bytes:
    """The caller's REPORT_DATA, checked: bytes, exactly 64 of them."""
    if not isinstance(report_data, bytes | bytearray | memoryview):
        raise InvalidInputError(
            f"report_data must be bytes, got {type(report_data).__name__}",
            code="report-data-invalid",
        )
    data = bytes(report_data)
    if len(data) != REPORT_DATA_SIZE:
        raise InvalidInputError(
            f"report_data is {len(data)} bytes, expected exactly {REPORT_DATA_SIZE}",
            code="report-data-invalid",
        )
    return data


class _QuoteAdapter:
    """Gives a provider that only has ``quote(nonce)`` the ``collect`` interface."""

    def __init__(self, inner: object, kind: str) -> None:
        self._inner = inner
        self._kind = kind

    @property
    def kind(self) -> str:
        return self._kind

    def collect(self, report_data: bytes) -> EvidenceItem:
        data = require_report_data(report_data)
        item = self._inner.quote(data)  # type: ignore[attr-defined]
        if not isinstance(item, EvidenceItem):
            raise TypeError(f"{type(self._inner).__name__}.quote returned {type(item).__name__}")
        return item


def _tpm2_state_dir() -> Path:
    return paths.tpm2_state()


def _open_tpm2(tcti: str) -> EvidenceProvider:
    try:
        module = importlib.import_module("sealroom.tee.tpm2")
    except ImportError as e:
        raise InvalidInputError(
            f"TEE provider 'tpm2' is not available in this build: {e}",
            code="tee-provider-unknown",
        ) from e
    config = module.Tpm2Config(tcti=tcti, state_dir=_tpm2_state_dir())
    inner = module.Tpm2Provider(config)
    if isinstance(inner, EvidenceProvider):
        return inner
    return _QuoteAdapter(inner, "tpm")


def open_provider(spec: str) -> EvidenceProvider:
    """The provider a spec names (see the module doc). InvalidInputError for anything else."""
    if not isinstance(spec, str) or not spec.strip():
        raise InvalidInputError(
            f"TEE provider spec is empty; expected one of {_SPECS}", code="tee-provider-unknown"
        )
    name, _, arg = spec.strip().partition(":")
    if name == "sim":
        if not arg:
            raise InvalidInputError(
                "TEE provider 'sim' needs a socket path: sim:/path/to.sock",
                code="tee-provider-unknown",
            )
        from sealroom.tee.sim import SimProvider

        return SimProvider(Path(arg))
    if name == "configfs-tsm":
        from sealroom.tee.configfs_tsm import DEFAULT_ROOT, ConfigfsTsmProvider

        return ConfigfsTsmProvider(Path(arg) if arg else DEFAULT_ROOT)
    if name == "sev-guest":
        from sealroom.tee.sev_guest import DEFAULT_DEVICE, SevGuestProvider

        return SevGuestProvider(Path(arg) if arg else DEFAULT_DEVICE)
    if name == "tpm2":
        if not arg:
            raise InvalidInputError(
                "TEE provider 'tpm2' needs a TCTI: tpm2:device:/dev/tpmrm0",
                code="tee-provider-unknown",
            )
        return _open_tpm2(arg)
    raise InvalidInputError(
        f"unknown TEE provider {spec!r}; expected one of {_SPECS}", code="tee-provider-unknown"
    )

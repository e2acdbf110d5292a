"""Expected measurements of a guest image (ADR 0035).

``--tee tpm`` (measured boot into the VM's vTPM, OVMF + the kernel's EFI stub):

- **PCR 9** is computed from the artifacts alone. The EFI stub (Linux 6.1,
  ``efi_measure_tagged_event``) extends two EV_EVENT_TAG events: the image's load options
  as UCS-2 with their terminating NUL (the command line OVMF passes: ours plus
  `` initrd=initrd``, which OVMF's QEMU kernel loader appends), then the initrd bytes. A
  changed command line (a dm-verity root hash) or initramfs changes PCR 9.
- **PCRs 0-7** are the firmware's (OVMF code and configuration, the boot path, and in
  PCR 4 the kernel's PE image *as QEMU patched its setup header*, which depends on the
  initrd's size): they come from a reference boot of this image with this firmware on
  this QEMU, whose event log must replay to its quote and whose PCR 9 must equal the
  computed one, else the reference is refused.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from sealroom.errors import InvalidInputError
from sealroom.extras import MissingExtraError
from sealroom.image.build import GuestImage

OVMF_INITRD_SUFFIX = " initrd=initrd"  # OvmfPkg QemuKernelLoaderFsDxe / X86QemuLoadImageLib
FIRMWARE_PCRS = tuple(range(8))
PCR_KERNEL_CMDLINE_INITRD = 9


def extend(pcr: bytes, digest: bytes) -> bytes:
    return hashlib.sha256(pcr + digest).digest()


def load_options(cmdline: str) -> bytes:
    """The LoadOptions bytes the stub measures: UCS-2 LE with a terminating NUL."""
    return (cmdline + OVMF_INITRD_SUFFIX).encode("utf-16-le") + b"\0\0"


def pcr9(cmdline: str, initrd: bytes) -> bytes:
    """PCR 9 (sha256 bank) after the EFI stub measured the command line and the initrd."""
    value = bytes(32)
    for event in (load_options(cmdline), initrd):
        value = extend(value, hashlib.sha256(event).digest())
    return value


@dataclass(frozen=True)
class TpmExpectation:
    """Expected sha256 PCR values of a measured boot of one image."""

    pcrs: dict[int, bytes]
    computed: tuple[int, ...]  # which of them come from the artifacts alone
    firmware: str | None = None  # SHA-256 of the firmware the reference boot used

    def policy_section(self) -> dict[str, object]:
        """A ``tpm`` policy section: a restricted AK, pinned (``--ak``) or certified by a
        root the verifier gives (the host's vTPM CA, ``--root``), nonce freshness, these
        PCRs, an event log that replays."""
        return {
            "ak_trust": ["pinned", "certified"],
            "require_restricted_ak": True,
            "extra_data": {"mode": "nonce", "require_nonce": True},
            "pcrs": {"sha256": {i: [v.hex()] for i, v in sorted(self.pcrs.items())}},
            "require_event_log": True,
        }


def expected_tpm(image: GuestImage) -> TpmExpectation:
    """What the artifacts alone determine: PCR 9."""
    value = pcr9(image.cmdline, image.initrd.read_bytes())
    return TpmExpectation({PCR_KERNEL_CMDLINE_INITRD: value}, (PCR_KERNEL_CMDLINE_INITRD,))


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ----------------------------------------------------------------------------- SEV-SNP

SNP_GUEST_FEATURES = 0x1  # sev-snp-measure's default (SNPActive)


@dataclass(frozen=True)
class SnpExpectation:
    """The expected SNP launch MEASUREMENT (48 bytes) and what it covers."""

    measurement: bytes
    covers_kernel: bool
    note: str


def expected_snp(image: GuestImage, ovmf: Path, *, vcpus: int = 1, vcpu_type: str = "EPYC-v4",
                 guest_features: int = SNP_GUEST_FEATURES) -> SnpExpectation:  # fmt: skip
    """The launch digest as the AMD-SP computes it for this image under QEMU, with
    ``sev-snp-measure`` (the launcher uses the same function, so the two cannot disagree).
    Kernel, initrd and command line are covered only when the firmware has the SEV hashes
    table (an AmdSev OVMF built with it): otherwise the firmware alone is measured, and the
    result says so."""
    try:
        from sevsnpmeasure import guest, vcpu_types
        from sevsnpmeasure.ovmf import OVMF, SectionType
        from sevsnpmeasure.sev_mode import SevMode
        from sevsnpmeasure.vmm_types import VMMType
    except ModuleNotFoundError as e:
        raise MissingExtraError("agent", "sevsnpmeasure", "image measure --tee snp") from e
    sig = vcpu_types.CPU_SIGS.get(vcpu_type)
    if sig is None:
        raise InvalidInputError(f"--vcpu-type {vcpu_type!r}: one of {sorted(vcpu_types.CPU_SIGS)}")
    if not 1 <= vcpus <= 512:
        raise InvalidInputError(f"--vcpus {vcpus} is not 1..512")
    try:
        fw = OVMF(str(ovmf))
        covers = fw.has_metadata_section(SectionType.SNP_KERNEL_HASHES)
        kernel, initrd, append = (
            (str(image.kernel), str(image.initrd), image.cmdline) if covers else (None, None, None)
        )
        digest = guest.calc_launch_digest(
            SevMode.SEV_SNP, vcpus, sig, str(ovmf), kernel, initrd, append,
            guest_features, "", VMMType.QEMU,
        )  # fmt: skip
    except (RuntimeError, OSError, ValueError) as e:
        raise InvalidInputError(f"{ovmf}: cannot compute an SNP launch digest: {e}") from e
    note = (
        "covers firmware, kernel, initrd and command line (SEV hashes table)"
        if covers
        else f"covers the FIRMWARE ONLY: {ovmf} has no SNP kernel-hashes table, so kernel, "
        "initrd and command line are NOT in the measurement; use an AmdSev OVMF (or IGVM)"
    )
    return SnpExpectation(bytes(digest), covers, note)

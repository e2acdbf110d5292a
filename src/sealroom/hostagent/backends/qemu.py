"""QEMU command lines for sealroom guests (ADR 0035): one VM per enclave.

``tee`` selects the isolation the launch asks QEMU for:

- ``none``: no hardware isolation (this machine: TCG, or KVM where a probe boot works);
  the guest's evidence is its vTPM's quote (a ``swtpm`` per VM, ``tpm-tis``), firmware
  OVMF (``-bios``), which measures the kernel and hands the EFI stub the TPM that measures
  the command line and the initrd.
- ``snp``: a ``sev-snp-guest`` object (policy, ``cbitpos``, ``reduced-phys-bits``,
  ``kernel-hashes=on`` so the firmware's hashes table covers kernel, initrd and command
  line; ``host-data`` = the manifest hash), guest memory from a ``memory-backend-memfd``,
  firmware an AmdSev OVMF or an IGVM file. QEMU ``qapi/qom.json`` SevSnpGuestProperties.
- ``tdx``: a ``tdx-guest`` object (``mrconfigid`` = the manifest hash, SHA-384 sized,
  ``quote-generation-socket`` for the host's QGS), ``-bios`` TDVF, split irqchip, KVM.
  QEMU ``docs/system/i386/tdx.rst`` and ``qapi/qom.json`` TdxGuestProperties.

Two serial ports: ttyS0 is the console (a file), ttyS1 the host channel (a Unix socket
QEMU listens on). The parties' TLS port is forwarded byte for byte with user-net
``hostfwd`` (TLS ends in the guest). Only the argv is built here; processes live in
:mod:`sealroom.hostagent.backends.vm`.
"""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from sealroom.errors import InvalidInputError

Tee = Literal["none", "snp", "tdx"]
Accel = Literal["tcg", "kvm"]

QEMU = "qemu-system-x86_64"
OVMF = Path("/usr/share/ovmf/OVMF.fd")  # Debian ovmf: measures the boot into the TPM
SNP_DEFAULT_POLICY = 0x30000  # SMT allowed, reserved bit 17 set (SEV-SNP ABI, 4.3)
SNP_CBITPOS = 51
SNP_REDUCED_PHYS_BITS = 1


@dataclass(frozen=True)
class SnpOptions:
    policy: int = SNP_DEFAULT_POLICY
    cbitpos: int = SNP_CBITPOS
    reduced_phys_bits: int = SNP_REDUCED_PHYS_BITS
    #: an IGVM file instead of -bios (QEMU >= 9.2 ``igvm-cfg``); measured as a whole
    igvm: Path | None = None
    vcpu_type: str = "EPYC-v4"


@dataclass(frozen=True)
class TdxOptions:
    #: ``host:port`` of the host's Quote Generation Service (vsock or TCP), optional
    qgs_vsock_port: int | None = None
    sept_ve_disable: bool = True


@dataclass(frozen=True)
class VmSpec:
    name: str
    kernel: Path
    initrd: Path
    cmdline: str
    firmware: Path
    run_dir: Path  # console.log, chan.sock, tpm/ live here
    vcpus: int = 1
    memory_mb: int = 512
    tee: Tee = "none"
    accel: Accel = "tcg"
    #: the manifest hash: SNP HOST_DATA (32 bytes) / TDX MRCONFIGID (48 bytes, zero padded)
    host_data: bytes | None = None
    #: the vTPM's control socket (swtpm ``--ctrl type=unixio``); None: no TPM
    tpm_socket: Path | None = None
    #: (host port on 127.0.0.1, guest port) pairs forwarded by user-net
    forwards: tuple[tuple[int, int], ...] = ()
    snp: SnpOptions = field(default_factory=SnpOptions)
    tdx: TdxOptions = field(default_factory=TdxOptions)

    @property
    def console_log(self) -> Path:
        return self.run_dir / "console.log"

    @property
    def channel(self) -> Path:
        return self.run_dir / "chan.sock"


def _opt(value: str) -> str:
    """A value inside a QEMU ``key=value,...`` option: commas are doubled (QemuOpts)."""
    return value.replace(",", ",,")


def _check(spec: VmSpec) -> None:
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", spec.name):
        raise InvalidInputError(f"VM name {spec.name!r}: letters, digits, '_.-', <= 64")
    if not 1 <= spec.vcpus <= 256:
        raise InvalidInputError(f"vcpus {spec.vcpus} is not 1..256")
    if not 64 <= spec.memory_mb <= 1 << 20:
        raise InvalidInputError(f"memory_mb {spec.memory_mb} is not 64..1048576")
    if spec.tee in ("snp", "tdx") and spec.accel != "kvm":
        raise InvalidInputError(f"tee {spec.tee} needs KVM (hardware isolation), not TCG")
    if spec.host_data is not None:
        limit = {"snp": 32, "tdx": 48, "none": 48}[spec.tee]
        if len(spec.host_data) > limit:
            raise InvalidInputError(
                f"host_data is {len(spec.host_data)} bytes; {spec.tee}: <= {limit}"
            )
    for host, guest in spec.forwards:
        if not (1 <= host <= 65535 and 1 <= guest <= 65535):
            raise InvalidInputError(f"port forward {host}->{guest} is out of range")


def _b64(data: bytes, size: int) -> str:
    return base64.b64encode(data.ljust(size, b"\0")).decode()


def build_argv(spec: VmSpec, qemu: str = QEMU) -> list[str]:
    """The complete ``qemu-system-x86_64`` argv for ``spec`` (no shell involved)."""
    _check(spec)
    machine = ["q35", f"accel={spec.accel}"]
    argv: list[str] = [qemu, "-name", f"sealroom-{spec.name},debug-threads=on"]
    objects: list[str] = []
    cpu = "max" if spec.accel == "tcg" else "host"
    if spec.tee == "snp":
        o = spec.snp
        machine += ["confidential-guest-support=sev0", "memory-backend=ram0"]
        objects.append(f"memory-backend-memfd,id=ram0,size={spec.memory_mb}M,share=true")
        snp = [
            "sev-snp-guest", "id=sev0", f"policy={o.policy:#x}", f"cbitpos={o.cbitpos}",
            f"reduced-phys-bits={o.reduced_phys_bits}",
        ]  # fmt: skip
        if o.igvm is None:
            # the firmware's SEV hashes table then covers kernel, initrd and command line
            snp.append("kernel-hashes=on")
        if spec.host_data is not None:
            snp.append(f"host-data={_b64(spec.host_data, 32)}")
        objects.append(",".join(snp))
        if o.igvm is not None:
            objects.append(f"igvm-cfg,id=igvm0,file={_opt(str(o.igvm))}")
            machine.append("igvm-cfg=igvm0")
        cpu = o.vcpu_type
    elif spec.tee == "tdx":
        t = spec.tdx
        machine += ["confidential-guest-support=tdx0", "kernel-irqchip=split"]
        tdx = ["tdx-guest", "id=tdx0"]
        if t.sept_ve_disable:
            tdx.append("sept-ve-disable=on")
        if spec.host_data is not None:
            tdx.append(f"mrconfigid={_b64(spec.host_data, 48)}")
        if t.qgs_vsock_port is not None:
            tdx += [
                "quote-generation-socket.type=vsock",
                "quote-generation-socket.cid=2",
                f"quote-generation-socket.port={t.qgs_vsock_port}",
            ]
        objects.append(",".join(tdx))
    argv += ["-machine", ",".join(machine), "-cpu", cpu]
    argv += ["-smp", str(spec.vcpus), "-m", f"{spec.memory_mb}M"]
    for obj in objects:
        argv += ["-object", obj]
    if not (spec.tee == "snp" and spec.snp.igvm is not None):
        argv += ["-bios", str(spec.firmware)]
    argv += [
        "-kernel", str(spec.kernel), "-initrd", str(spec.initrd), "-append", spec.cmdline,
        "-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
        "-serial", f"file:{spec.console_log}",
        "-chardev", f"socket,id=chan,path={_opt(str(spec.channel))},server=on,wait=off",
        "-serial", "chardev:chan",
    ]  # fmt: skip
    if spec.tpm_socket is not None:
        argv += [
            "-chardev", f"socket,id=chrtpm,path={_opt(str(spec.tpm_socket))}",
            "-tpmdev", "emulator,id=tpm0,chardev=chrtpm",
            "-device", "tpm-tis,tpmdev=tpm0",
        ]  # fmt: skip
    if spec.forwards:
        fwd = ",".join(f"hostfwd=tcp:127.0.0.1:{h}-:{g}" for h, g in spec.forwards)
        argv += ["-netdev", f"user,id=net0,restrict=on,{fwd}",
                 "-device", "virtio-net-pci,netdev=net0"]  # fmt: skip
    else:
        argv += ["-nic", "none"]
    return argv


# ----------------------------------------------------------------------------- host support


@dataclass(frozen=True)
class HostSupport:
    kvm: bool
    snp: bool
    tdx: bool
    reasons: tuple[str, ...]

    def tees(self) -> list[str]:
        """The TEE kinds this host can launch: ``none`` always; ``snp``/``tdx`` only with
        hardware support detected."""
        return ["none"] + (["snp"] if self.snp else []) + (["tdx"] if self.tdx else [])


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def _cpu_flags(cpuinfo: str) -> set[str]:
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


def detect_host(root: Path = Path("/")) -> HostSupport:
    """What this host can run, from files only (``root`` lets tests supply a fake tree).

    KVM needs ``/dev/kvm`` *and* the CPU's vmx/svm flag: the device node alone exists in
    nested setups whose guests hang (measured on this machine). SNP needs KVM on an AMD
    CPU with ``/sys/module/kvm_amd/parameters/sev_snp`` = Y/1 and ``/dev/sev``; TDX needs
    ``/sys/module/kvm_intel/parameters/tdx`` = Y/1.
    """
    reasons: list[str] = []
    flags = _cpu_flags(_read(root / "proc/cpuinfo"))
    dev_kvm = (root / "dev/kvm").exists()
    kvm = dev_kvm and bool(flags & {"vmx", "svm"})
    if not dev_kvm:
        reasons.append("no /dev/kvm")
    elif not kvm:
        reasons.append("/dev/kvm exists but the CPU shows neither vmx nor svm (nested guest)")
    snp_param = _read(root / "sys/module/kvm_amd/parameters/sev_snp")
    snp = kvm and "svm" in flags and snp_param in ("Y", "1") and (root / "dev/sev").exists()
    if not snp:
        reasons.append("no SEV-SNP (kvm_amd sev_snp not enabled or /dev/sev absent)")
    tdx_param = _read(root / "sys/module/kvm_intel/parameters/tdx")
    tdx = kvm and "vmx" in flags and tdx_param in ("Y", "1")
    if not tdx:
        reasons.append("no TDX (kvm_intel tdx not enabled)")
    return HostSupport(kvm=kvm, snp=snp, tdx=tdx, reasons=tuple(reasons))


def default_accel(support: HostSupport | None = None) -> Accel:
    if os.environ.get("SEALROOM_QEMU_ACCEL") in ("tcg", "kvm"):
        return os.environ["SEALROOM_QEMU_ACCEL"]  # type: ignore[return-value]
    return "kvm" if (support or detect_host()).kvm else "tcg"


def shell_quote(argv: Sequence[str]) -> str:
    """The argv as one line for logs and docs (never executed through a shell)."""
    import shlex

    return " ".join(shlex.quote(a) for a in argv)

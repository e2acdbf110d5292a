"""QEMU command lines per TEE (ADR 0035), checked option by option against QEMU's own
documentation: ``docs/system/i386/tdx.rst`` ("Launching a TD": ``-accel kvm -cpu host
-object tdx-guest,id=tdx0 -machine ...,confidential-guest-support=tdx0 -bios OVMF.fd``;
kernel-irqchip split), ``qapi/qom.json`` (SevSnpGuestProperties: policy, cbitpos,
reduced-phys-bits, kernel-hashes, host-data = base64 of 32 bytes; TdxGuestProperties:
sept-ve-disable, mrconfigid = base64 SHA-384, quote-generation-socket as a
SocketAddress) and AMD's SNP launch lines (``sev-snp-guest,id=sev0,policy=0x30000,
cbitpos=51,reduced-phys-bits=1`` with a memfd memory backend)."""

from __future__ import annotations

import base64
import shutil
from pathlib import Path

import pytest

from sealroom.errors import InvalidInputError
from sealroom.hostagent.backends.qemu import (
    SnpOptions,
    TdxOptions,
    VmSpec,
    build_argv,
    detect_host,
)

MANIFEST_HASH = bytes(range(32))


def _spec(tmp_path: Path, **kw: object) -> VmSpec:
    base: dict[str, object] = {
        "name": "c1",
        "kernel": tmp_path / "vmlinuz",
        "initrd": tmp_path / "initrd.img",
        "cmdline": "console=ttyS0",
        "firmware": tmp_path / "OVMF.fd",
        "run_dir": tmp_path / "run",
    }
    base.update(kw)
    return VmSpec(**base)  # type: ignore[arg-type]


def _opts(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == flag]


def _kv(option: str) -> dict[str, str]:
    head, *rest = option.split(",")
    return {"_": head, **dict(p.split("=", 1) for p in rest)}


def test_tcg_with_vtpm(tmp_path: Path) -> None:
    spec = _spec(tmp_path, tpm_socket=tmp_path / "run" / "swtpm.sock", vcpus=2, memory_mb=768)
    argv = build_argv(spec)
    assert argv[0] == "qemu-system-x86_64"
    assert _opts(argv, "-machine") == ["q35,accel=tcg"]
    assert _opts(argv, "-cpu") == ["max"]
    assert _opts(argv, "-smp") == ["2"] and _opts(argv, "-m") == ["768M"]
    assert _opts(argv, "-bios") == [str(tmp_path / "OVMF.fd")]
    assert _opts(argv, "-kernel") == [str(tmp_path / "vmlinuz")]
    assert _opts(argv, "-initrd") == [str(tmp_path / "initrd.img")]
    assert _opts(argv, "-append") == ["console=ttyS0"]
    # ttyS0 the console file, ttyS1 the host channel (QEMU listens, the host connects)
    assert _opts(argv, "-serial") == [f"file:{spec.console_log}", "chardev:chan"]
    chardevs = [_kv(c) for c in _opts(argv, "-chardev")]
    assert chardevs[0] == {"_": "socket", "id": "chan", "path": str(spec.channel),
                           "server": "on", "wait": "off"}  # fmt: skip
    assert chardevs[1] == {"_": "socket", "id": "chrtpm", "path": str(spec.tpm_socket)}
    assert _opts(argv, "-tpmdev") == ["emulator,id=tpm0,chardev=chrtpm"]
    assert _opts(argv, "-device") == ["tpm-tis,tpmdev=tpm0"]
    assert "-no-reboot" in argv and "-nodefaults" in argv and _opts(argv, "-nic") == ["none"]
    assert not _opts(argv, "-object")  # no confidential-guest object without a TEE


def test_port_forward_is_loopback_only(tmp_path: Path) -> None:
    argv = build_argv(_spec(tmp_path, forwards=((45001, 8443),)))
    assert _opts(argv, "-netdev") == ["user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:45001-:8443"]
    assert "virtio-net-pci,netdev=net0" in _opts(argv, "-device")


def test_snp_argv(tmp_path: Path) -> None:
    argv = build_argv(_spec(tmp_path, tee="snp", accel="kvm", host_data=MANIFEST_HASH,
                            vcpus=4, memory_mb=2048))  # fmt: skip
    machine = _kv(_opts(argv, "-machine")[0])
    assert machine == {"_": "q35", "accel": "kvm", "confidential-guest-support": "sev0",
                       "memory-backend": "ram0"}  # fmt: skip
    mem, snp = (_kv(o) for o in _opts(argv, "-object"))
    assert mem == {"_": "memory-backend-memfd", "id": "ram0", "size": "2048M", "share": "true"}
    assert snp == {
        "_": "sev-snp-guest", "id": "sev0", "policy": "0x30000", "cbitpos": "51",
        "reduced-phys-bits": "1", "kernel-hashes": "on",
        "host-data": base64.b64encode(MANIFEST_HASH).decode(),
    }  # fmt: skip
    assert base64.b64decode(snp["host-data"]) == MANIFEST_HASH  # HOST_DATA is 32 bytes
    assert _opts(argv, "-cpu") == ["EPYC-v4"]
    assert _opts(argv, "-bios") == [str(tmp_path / "OVMF.fd")]


def test_snp_with_igvm_has_no_bios_and_no_kernel_hashes(tmp_path: Path) -> None:
    igvm = tmp_path / "guest.igvm"
    argv = build_argv(_spec(tmp_path, tee="snp", accel="kvm", snp=SnpOptions(igvm=igvm)))
    objs = [_kv(o) for o in _opts(argv, "-object")]
    assert {"_": "igvm-cfg", "id": "igvm0", "file": str(igvm)} in objs
    assert "kernel-hashes" not in objs[1]
    assert "igvm-cfg=igvm0" in _opts(argv, "-machine")[0].split(",")
    assert not _opts(argv, "-bios")


def test_tdx_argv(tmp_path: Path) -> None:
    argv = build_argv(_spec(tmp_path, tee="tdx", accel="kvm", host_data=MANIFEST_HASH,
                            tdx=TdxOptions(qgs_vsock_port=4050)))  # fmt: skip
    machine = _kv(_opts(argv, "-machine")[0])
    assert machine["confidential-guest-support"] == "tdx0"
    assert machine["kernel-irqchip"] == "split" and machine["accel"] == "kvm"
    (tdx,) = (_kv(o) for o in _opts(argv, "-object"))
    mrconfigid = base64.b64decode(tdx["mrconfigid"])
    assert len(mrconfigid) == 48 and mrconfigid == MANIFEST_HASH + bytes(16)  # SHA-384 sized
    assert tdx["_"] == "tdx-guest" and tdx["id"] == "tdx0" and tdx["sept-ve-disable"] == "on"
    assert tdx["quote-generation-socket.type"] == "vsock"
    assert tdx["quote-generation-socket.cid"] == "2"
    assert tdx["quote-generation-socket.port"] == "4050"
    assert _opts(argv, "-cpu") == ["host"] and _opts(argv, "-bios") == [str(tmp_path / "OVMF.fd")]


@pytest.mark.parametrize("tee", ["snp", "tdx"])
def test_hardware_tees_refuse_tcg(tmp_path: Path, tee: str) -> None:
    with pytest.raises(InvalidInputError, match="needs KVM"):
        build_argv(_spec(tmp_path, tee=tee, accel="tcg"))


def test_oversized_host_data_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="host_data"):
        build_argv(_spec(tmp_path, tee="snp", accel="kvm", host_data=bytes(33)))


@pytest.mark.parametrize(
    ("field", "value"),
    [("name", "a,b"), ("name", ""), ("vcpus", 0), ("memory_mb", 16),
     ("forwards", ((0, 80),))],
)  # fmt: skip
def test_bad_specs_refused(tmp_path: Path, field: str, value: object) -> None:
    with pytest.raises(InvalidInputError):
        build_argv(_spec(tmp_path, **{field: value}))


def test_commas_in_paths_are_escaped(tmp_path: Path) -> None:
    odd = tmp_path / "a,b"
    argv = build_argv(_spec(tmp_path, run_dir=odd, tpm_socket=odd / "s.sock"))
    assert f"path={tmp_path}/a,,b/chan.sock" in _opts(argv, "-chardev")[0]


def _fake_host(root: Path, flags: str, **files: str) -> Path:
    (root / "proc").mkdir(parents=True)
    (root / "proc" / "cpuinfo").write_text(f"processor\t: 0\nflags\t\t: fpu {flags}\n")
    for rel, text in files.items():
        p = root / rel.replace("__", "/")
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return root


def test_dev_kvm_without_vmx_or_svm_is_not_kvm(tmp_path: Path) -> None:
    # this machine: /dev/kvm exists but KVM guests hang (no vmx/svm in the CPU flags)
    root = _fake_host(tmp_path, "sse2 hypervisor", dev__kvm="")
    host = detect_host(root)
    assert not host.kvm and host.tees() == ["none"]
    assert any("neither vmx nor svm" in r for r in host.reasons)


def test_snp_host_detected(tmp_path: Path) -> None:
    root = _fake_host(tmp_path, "svm sev sev_snp", dev__kvm="", dev__sev="",
                      sys__module__kvm_amd__parameters__sev_snp="Y\n")  # fmt: skip
    host = detect_host(root)
    assert host.kvm and host.snp and not host.tdx and host.tees() == ["none", "snp"]


def test_snp_parameter_off_means_no_snp(tmp_path: Path) -> None:
    root = _fake_host(tmp_path, "svm", dev__kvm="", dev__sev="",
                      sys__module__kvm_amd__parameters__sev_snp="N\n")  # fmt: skip
    assert detect_host(root).tees() == ["none"]


def test_tdx_host_detected(tmp_path: Path) -> None:
    root = _fake_host(tmp_path, "vmx", dev__kvm="", sys__module__kvm_intel__parameters__tdx="Y")
    assert detect_host(root).tees() == ["none", "tdx"]


@pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="QEMU is not installed")
def test_vm_that_cannot_start_says_why_and_leaves_nothing(tmp_path: Path) -> None:
    """No boot: QEMU refuses firmware it cannot load (an empty file); the host's wait fails
    at once with QEMU's own message (it used to show only the empty guest console)."""
    from sealroom.errors import UnavailableError
    from sealroom.hostagent.backends.vm import GuestVm

    (tmp_path / "OVMF.fd").write_bytes(b"")
    spec = _spec(tmp_path)
    vm = GuestVm.start(spec, vtpm=False)
    try:
        with pytest.raises(UnavailableError, match="exited") as e:
            vm.wait_ready(timeout=120)
        assert "qemu: " in str(e.value) and str(tmp_path / "OVMF.fd") in str(e.value)
    finally:
        vm.remove()
    assert not spec.run_dir.exists() and vm.qemu.poll() is not None


@pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="QEMU is not installed")
def test_bad_spec_is_refused_before_the_vtpm_starts(tmp_path: Path) -> None:
    """The spec used to be checked after the swtpm was provisioned and started, so a bad
    one left a swtpm process running; now nothing starts."""
    from sealroom.hostagent.backends.vm import GuestVm

    spec = _spec(tmp_path, name="bad,name", tpm_socket=tmp_path / "run" / "swtpm.sock")
    with pytest.raises(InvalidInputError, match="VM name"):
        GuestVm.start(spec)
    assert not (tmp_path / "run").exists()

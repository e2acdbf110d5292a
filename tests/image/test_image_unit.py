"""The guest image's pure parts (ADR 0034/0035): the reproducible cpio writer (read back by
GNU cpio, an independent implementation), PCR 9 as the EFI stub measures it (a vector
from a real OVMF + swtpm boot on this machine), the guest /init's request handling."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sealroom.cli.main import app
from sealroom.errors import InvalidInputError
from sealroom.hostagent.backends.qemu import OVMF
from sealroom.image import cpio, guest_init
from sealroom.image.build import GuestImage
from sealroom.image.measure import TpmExpectation, load_options, pcr9


def _entries() -> list[cpio.Entry]:
    return [
        cpio.Entry("usr/bin/tool", stat.S_IFREG | 0o755, b"#!x\n" * 3),
        cpio.Entry("usr", stat.S_IFDIR | 0o755),
        cpio.Entry("usr/bin", stat.S_IFDIR | 0o755),
        cpio.Entry("lib", stat.S_IFLNK | 0o777, b"usr/lib"),
        cpio.Entry("dev", stat.S_IFDIR | 0o755),
        cpio.Entry("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1)),
        cpio.Entry("init", stat.S_IFREG | 0o700, b"odd-length"),
    ]


def test_cpio_is_order_independent_and_read_back_by_gnu_cpio(tmp_path: Path) -> None:
    a = cpio.archive(_entries())
    assert a == cpio.archive(list(reversed(_entries())))  # sorted: same bytes
    assert len(a) % 4 == 0
    if shutil.which("cpio") is None:
        pytest.skip("GNU cpio is not installed")
    listing = subprocess.run(
        ["cpio", "-itv", "--quiet"], input=a, capture_output=True, check=True
    ).stdout.decode()
    names = [line.split()[-1] if "->" not in line else line.split()[-3] for line in
             listing.splitlines()]  # fmt: skip
    assert names == ["dev", "dev/console", "init", "lib", "usr", "usr/bin", "usr/bin/tool"]
    assert " 1970 " in listing or "Jan  1  1970" in listing  # mtime 0
    out = tmp_path / "x"
    out.mkdir()
    files = [e for e in _entries() if not stat.S_ISCHR(e.mode)]
    subprocess.run(["cpio", "-id", "--quiet", "--no-absolute-filenames"],
                   input=cpio.archive(files), cwd=out, check=True)  # fmt: skip
    assert (out / "init").read_bytes() == b"odd-length"
    assert stat.S_IMODE((out / "usr/bin/tool").stat().st_mode) == 0o755
    assert os.readlink(out / "lib") == "usr/lib"


def test_cpio_refuses_duplicates_and_typeless_modes() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        cpio.archive([cpio.Entry("a", stat.S_IFDIR | 0o755), cpio.Entry("/a/", stat.S_IFDIR)])
    with pytest.raises(ValueError, match="file type"):
        cpio.archive([cpio.Entry("a", 0o644)])


# Measured on this machine: OVMF 2022.11 + Linux 6.1.0-57 EFI stub, command line
# "console=ttyS0 panic=-1 loglevel=4"; the event log's first PCR 9 EV_EVENT_TAG
# ("LOADED_IMAGE::LoadOptions") extended this digest.
LOAD_OPTIONS_DIGEST = "1b3839ed57246f53ee16d5f747c29ec940ad9a9c200926f741b894ed2e82bbcf"


def test_load_options_digest_matches_a_real_boot() -> None:
    got = hashlib.sha256(load_options("console=ttyS0 panic=-1 loglevel=4")).hexdigest()
    assert got == LOAD_OPTIONS_DIGEST


def test_pcr9_changes_with_initrd_and_cmdline() -> None:
    base = pcr9("console=ttyS0", b"initrd")
    assert base != pcr9("console=ttyS0", b"initrd!")
    assert base != pcr9("console=ttyS0 roothash=ab", b"initrd")
    d1 = hashlib.sha256(load_options("console=ttyS0")).digest()
    d2 = hashlib.sha256(b"initrd").digest()
    step = hashlib.sha256(bytes(32) + d1).digest()
    assert base == hashlib.sha256(step + d2).digest()


def test_policy_section_pins_every_expected_pcr() -> None:
    exp = TpmExpectation({9: bytes(32), 0: b"\1" * 32}, (9,))
    sec = exp.policy_section()
    assert sec["pcrs"] == {"sha256": {0: ["01" * 32], 9: ["00" * 32]}}
    assert sec["ak_trust"] == ["pinned", "certified"] and sec["require_event_log"] is True
    assert sec["extra_data"] == {"mode": "nonce", "require_nonce": True}


class _Chan(io.BytesIO):
    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.r, w = os.pipe()
        os.write(w, data)
        os.close(w)

    def fileno(self) -> int:
        return self.r


def _serve(requests: list[bytes]) -> list[dict[str, object]]:
    chan_in = _Chan(b"".join(requests))
    out = io.BytesIO()
    guest_init.serve(chan_in, out)
    os.close(chan_in.r)
    lines = [ln for ln in out.getvalue().split(b"\n") if ln]
    assert all(ln.startswith(b"sealroom1 ") for ln in lines)
    return [json.loads(ln[len(b"sealroom1 ") :]) for ln in lines]


def test_guest_init_refuses_bad_requests_and_powers_off_on_request() -> None:
    msgs = _serve([
        b"not json\n",
        b'{"op": "quote", "nonce": ""}\n',
        b'{"op": "quote", "nonce": "' + b"00" * 65 + b'"}\n',
        b'{"op": "quote", "nonce": "zz"}\n',
        b'{"op": "quote", "nonce": "01", "pcrs": [24]}\n',
        b'{"op": "format-disk"}\n',
        b"[1]\n",
        b'{"op": "poweroff"}\n',
        b'{"op": "quote", "nonce": "01"}\n',  # after poweroff: never answered
    ])  # fmt: skip
    assert msgs[0]["type"] == "ready"
    errors = [m["message"] for m in msgs[1:-1]]
    assert [m["type"] for m in msgs[1:-1]] == ["error"] * 7
    assert "1..64 bytes" in str(errors[1]) and "1..64 bytes" in str(errors[2])
    assert "0..23" in str(errors[4]) and "unknown op" in str(errors[5])
    assert msgs[-1] == {"type": "bye"}


def _image(tmp_path: Path) -> GuestImage:
    d = tmp_path / "img"
    d.mkdir()
    (d / "vmlinuz").write_bytes(b"kernel")
    (d / "initrd.img").write_bytes(b"initrd")
    desc = {"format": "sealroom-guest/v1", "cmdline": "console=ttyS0", "artifacts": {}}
    (d / "image.json").write_text(json.dumps(desc))
    return GuestImage.load(d)


@pytest.mark.skipif(not OVMF.is_file(), reason="Debian ovmf is not installed")
@pytest.mark.parametrize(("vcpus", "vcpu_type"), [(1, "EPYC-v4"), (4, "EPYC-Milan")])
def test_snp_measure_equals_an_independent_sev_snp_measure_run(
    tmp_path: Path, vcpus: int, vcpu_type: str
) -> None:
    tool = shutil.which("sev-snp-measure") or str(Path(sys.executable).with_name("sev-snp-measure"))
    want = subprocess.run(
        [tool, "--mode", "snp", "--vcpus", str(vcpus), "--vcpu-type", vcpu_type,
         "--ovmf", str(OVMF)], capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    r = CliRunner().invoke(app, ["image", "measure", str(_image(tmp_path).directory), "--tee",
                                 "snp", "--ovmf", str(OVMF), "--vcpus", str(vcpus),
                                 "--vcpu-type", vcpu_type, "--json"])  # fmt: skip
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["measurement"] == want and len(bytes.fromhex(want)) == 48
    # Debian's OVMF has no SNP kernel-hashes table: said, not hidden
    assert out["covers_kernel"] is False and "FIRMWARE ONLY" in out["note"]


def test_snp_measure_refuses_unknown_vcpu_type(tmp_path: Path) -> None:
    r = CliRunner().invoke(app, ["image", "measure", str(_image(tmp_path).directory),
                                 "--tee", "snp", "--vcpu-type", "Pentium"])  # fmt: skip
    assert isinstance(r.exception, InvalidInputError) and "Pentium" in str(r.exception)


def test_measure_tpm_without_boot_gives_pcr9_only(tmp_path: Path) -> None:
    img = _image(tmp_path)
    r = CliRunner().invoke(app, ["image", "measure", str(img.directory), "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["pcrs"] == {"9": pcr9("console=ttyS0", b"initrd").hex()} and out["computed"] == [9]


def test_not_an_image_is_refused(tmp_path: Path) -> None:
    (tmp_path / "image.json").write_text('{"format": "other"}')
    r = CliRunner().invoke(app, ["image", "measure", str(tmp_path)])
    assert isinstance(r.exception, InvalidInputError) and "format" in str(r.exception)


@pytest.mark.skipif(not OVMF.is_file(), reason="Debian ovmf is not installed")
def test_manifest_init_snp_image_fills_the_measurement(tmp_path: Path) -> None:
    img = _image(tmp_path)
    tool = shutil.which("sev-snp-measure") or str(Path(sys.executable).with_name("sev-snp-measure"))
    want = subprocess.run(
        [tool, "--mode", "snp", "--vcpus", "1", "--vcpu-type", "EPYC-v4", "--ovmf", str(OVMF)],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    out = tmp_path / "m.json"
    args = ["--image", str(img.directory), "--ovmf", str(OVMF), "--out", str(out)]
    r = CliRunner().invoke(app, ["manifest", "init", "--tee", "snp", *args])
    assert r.exit_code == 0, r.output
    doc = json.loads(out.read_text())
    assert doc["policy"]["snp"]["measurements"] == [want]
    assert "FIRMWARE ONLY" in r.output  # Debian's OVMF: said loudly
    r = CliRunner().invoke(app, ["manifest", "init", "--tee", "tdx", "--image", str(img.directory)])
    assert isinstance(r.exception, InvalidInputError)

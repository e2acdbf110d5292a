"""Real boots (issue 14, ADR 0034/0035): the guest image built from Debian packages, booted
under QEMU (TCG here) with OVMF and a swtpm vTPM; the TPM quote comes from inside the
guest and is verified by sealroom's attestation library against the PCRs `sealroom image
measure` expects. Three boots in all (reference, party, modified initrd), each well under
a minute on this machine's two shared cores."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import signal
import stat
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sealroom.attestation.evidence import EvidenceBundle
from sealroom.attestation.kinds import VerifyContext
from sealroom.attestation.verifier import verify_and_appraise
from sealroom.cli.main import app
from sealroom.errors import AttestationError, PolicyViolationError, UnavailableError
from sealroom.hostagent.backends.qemu import OVMF
from sealroom.hostagent.backends.vm import (
    QUOTED_PCRS,
    GuestVm,
    guest_spec,
    provision_vtpm,
    tpm_policy,
)
from sealroom.image import cpio
from sealroom.image.build import GuestImage, build
from sealroom.image.measure import TpmExpectation, expected_tpm

pytestmark = pytest.mark.vm
NEEDED = ("qemu-system-x86_64", "swtpm", "tpm2_quote", "dpkg-deb", "apt-get")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[GuestImage, Path]:
    missing = [t for t in NEEDED if shutil.which(t) is None]
    if missing or not OVMF.is_file() or not Path("/usr/bin/python3.11").is_file():
        pytest.skip(f"needs {missing or ''} OVMF and Debian python3.11 (scripts/bootstrap.sh)")
    root = tmp_path_factory.mktemp("image")
    build(root / "img", cache=root / "debs")  # the kernel by apt-get download
    (deb,) = (root / "debs").glob("linux-image-*.deb")
    return GuestImage.load(root / "img"), deb


def test_image_build_is_reproducible(built: tuple[GuestImage, Path], tmp_path: Path) -> None:
    image, deb = built
    again = build(tmp_path / "again", kernel_deb=deb)
    assert again["artifacts"] == image.description["artifacts"]
    for name in ("vmlinuz", "initrd.img"):
        assert (tmp_path / "again" / name).read_bytes() == (image.directory / name).read_bytes()
    r = CliRunner().invoke(app, ["image", "measure", str(tmp_path / "again"), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["pcrs"]["9"] == expected_tpm(image).pcrs[9].hex()


def _modified(image: GuestImage, out: Path) -> GuestImage:
    """The same image with one more file in its initramfs (a second, concatenated cpio
    member, which the kernel unpacks over the first)."""
    shutil.copytree(image.directory, out)
    extra = cpio.archive(
        [
            cpio.Entry("etc", stat.S_IFDIR | 0o755),
            cpio.Entry("etc/extra", stat.S_IFREG | 0o644, b"not measured?\n"),
        ]
    )
    with (out / "initrd.img").open("ab") as f:
        f.write(gzip.compress(extra, mtime=0))
    return GuestImage.load(out)


def test_guest_quote_verifies_modified_initrd_refused_killed_vm_cleaned_up(
    built: tuple[GuestImage, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    image, _ = built
    monkeypatch.setenv("SEALROOM_HOME", str(tmp_path / "home"))  # the host's vTPM CA
    cli = CliRunner()
    policy_file = tmp_path / "guest-policy.yaml"
    # boot 1: the reference boot gives PCRs 0-7; PCR 9 is computed and must agree
    r = cli.invoke(app, ["image", "measure", str(image.directory), "--reference-boot",
                         "--policy-out", str(policy_file), "--json"])  # fmt: skip
    assert r.exit_code == 0, r.output
    measured = json.loads(r.stdout)
    assert sorted(map(int, measured["pcrs"])) == QUOTED_PCRS
    assert measured["pcrs"]["9"] == expected_tpm(image).pcrs[9].hex()

    # boot 2: a party's nonce, the quote from inside the VM, checked with the CLI
    nonce = os.urandom(32).hex()
    ev, ak = tmp_path / "evidence.json", tmp_path / "ak.pub"
    r = cli.invoke(app, ["image", "attest", str(image.directory), "--nonce", nonce,
                         "--out", str(ev), "--ak-out", str(ak), "--json"])  # fmt: skip
    assert r.exit_code == 0, r.output
    verify = ["attest", "verify", str(ev), "--policy", str(policy_file), "--ak", str(ak)]
    r = cli.invoke(app, [*verify, "--nonce", nonce])
    assert r.exit_code == 0, r.output
    # or: the AK certified by the host's vTPM CA, whose root the party was given
    r = cli.invoke(app, ["image", "ca"])
    (tmp_path / "ca.pem").write_text(r.stdout)
    by_ca = ["attest", "verify", str(ev), "--policy", str(policy_file), "--nonce", nonce]
    r = cli.invoke(app, [*by_ca, "--root", str(tmp_path / "ca.pem"), "--json"])
    assert r.exit_code == 0, r.output
    assert "certified" in r.stdout
    r = cli.invoke(app, by_ca)  # neither pinned nor a root given: not vouched for
    assert isinstance(r.exception, PolicyViolationError), r.output
    r = cli.invoke(app, [*verify, "--nonce", os.urandom(32).hex()])  # a replayed quote
    assert isinstance(r.exception, PolicyViolationError), r.output  # exit 4 through run()
    assert r.exception.result is not None
    assert [f.field for f in r.exception.result.failures()] == ["extra_data"]
    other_ak = provision_vtpm(tmp_path / "other-tpm" / "state")  # another VM's vTPM
    (tmp_path / "other.pub").write_bytes(other_ak)
    r = cli.invoke(app, ["attest", "verify", str(ev), "--policy", str(policy_file),
                         "--ak", str(tmp_path / "other.pub"), "--nonce", nonce])  # fmt: skip
    assert isinstance(r.exception, AttestationError), r.output  # not the pinned AK: exit 2

    # boot 3: one more file in the initramfs changes PCR 9; the party refuses
    modified = _modified(image, tmp_path / "modified")
    assert expected_tpm(modified).pcrs[9].hex() != measured["pcrs"]["9"]
    expectation = TpmExpectation({int(i): bytes.fromhex(v) for i, v in measured["pcrs"].items()},
                                 (9,))  # fmt: skip
    run_dir = tmp_path / "vm-modified"
    vm = GuestVm.start(guest_spec(modified, run_dir, "modified"))
    try:
        vm.wait_ready()
        n2 = os.urandom(32)
        item = vm.quote(n2, QUOTED_PCRS)
        assert vm.ak_pub is not None
        ctx = VerifyContext(now=datetime.now(UTC), nonce=n2, ak_pins=(vm.ak_pub,))
        result = verify_and_appraise(EvidenceBundle.single(item), tpm_policy(expectation), ctx)
        failed = {f.field for f in result.failures()}
        assert any(f.endswith("pcrs.sha256[9]") for f in failed), failed
        with pytest.raises(PolicyViolationError):
            result.require_ok()

        # the VM killed from outside: the host's next request fails with that reason
        os.kill(vm.qemu.pid, signal.SIGKILL)
        with pytest.raises(UnavailableError, match=r"exited \(code -9\)"):
            vm.quote(os.urandom(32), QUOTED_PCRS, timeout=120)
        assert vm.swtpm is not None
        deadline = time.monotonic() + 60  # swtpm --terminate: ends with its VM
        while vm.swtpm.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert vm.swtpm.poll() is not None
    finally:
        vm.remove()
    assert not run_dir.exists()
    with pytest.raises(AttestationError):
        verify_and_appraise(
            EvidenceBundle.single(item), tpm_policy(expectation),
            VerifyContext(now=datetime.now(UTC), nonce=n2, ak_pins=(other_ak,)),
        )  # fmt: skip

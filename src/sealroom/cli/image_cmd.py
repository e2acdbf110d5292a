"""`sealroom image ...`: the measured guest image (ADR 0034) and its expected measurements,
booted under QEMU with a vTPM per VM (ADR 0035)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Annotated

import typer
import yaml

from sealroom.attestation.evidence import EvidenceBundle
from sealroom.cli.common import console, parse_hex, print_json
from sealroom.errors import InvalidInputError
from sealroom.hostagent.backends.qemu import OVMF
from sealroom.image.build import GuestImage, build
from sealroom.image.measure import expected_snp, expected_tpm

image_app = typer.Typer(
    help="The guest image (enclave OS): build it reproducibly, compute what it measures, "
    "boot it under QEMU with a vTPM and quote from inside.",
    no_args_is_help=True,
)

ImageDir = Annotated[Path, typer.Argument(help="Image directory (from `sealroom image build`).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
Firmware = Annotated[
    Path, typer.Option("--firmware", help="OVMF image (measures the boot into the vTPM).")
]


@image_app.command("build")
def build_cmd(
    out: Annotated[Path, typer.Option("--out", help="Directory to write the image into.")],
    kernel_deb: Annotated[
        Path | None,
        typer.Option(
            "--kernel-deb", help="A linux-image-*-amd64 .deb (default: apt-get download)."
        ),
    ] = None,
    cache: Annotated[
        Path | None, typer.Option("--cache", help="Where apt-get download keeps the kernel .deb.")
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Build vmlinuz + initrd.img from Debian packages; print the artifacts' SHA-256."""
    desc = build(out, kernel_deb=kernel_deb, cache=cache)
    if json_out:
        print_json(desc)
        return
    for name, a in sorted(desc["artifacts"].items()):
        typer.echo(f"{a['sha256']}  {name} ({a['size']} bytes)")
    typer.echo(f"cmdline: {desc['cmdline']}")


@image_app.command("measure")
def measure_cmd(
    image: ImageDir,
    tee: Annotated[
        str, typer.Option("--tee", help="tpm (measured boot into the vTPM) or snp.")
    ] = "tpm",
    reference_boot: Annotated[
        bool,
        typer.Option(
            "--reference-boot",
            help="Boot once to take the firmware's PCRs 0-7 (else only PCR 9 is given).",
        ),
    ] = False,
    firmware: Firmware = OVMF,
    ovmf: Annotated[
        Path | None, typer.Option("--ovmf", help="--tee snp: the OVMF (AmdSev) the launch uses.")
    ] = None,
    vcpus: Annotated[int, typer.Option("--vcpus", help="--tee snp: vCPUs.")] = 1,
    vcpu_type: Annotated[
        str, typer.Option("--vcpu-type", help="--tee snp: CPU model.")
    ] = "EPYC-v4",
    policy_out: Annotated[
        Path | None, typer.Option("--policy-out", help="Write a policy (YAML) expecting them.")
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Expected measurements of IMAGE. --tee tpm: PCR 9 (command line + initrd, computed
    from the artifacts) and with --reference-boot PCRs 0-7 of this firmware. --tee snp:
    the launch MEASUREMENT (sev-snp-measure), saying what it covers."""
    img = GuestImage.load(image)
    if tee == "snp":
        snp = expected_snp(img, ovmf or firmware, vcpus=vcpus, vcpu_type=vcpu_type)
        if json_out:
            print_json({"tee": "snp", "measurement": snp.measurement.hex(),
                        "covers_kernel": snp.covers_kernel, "note": snp.note})  # fmt: skip
            return
        typer.echo(f"MEASUREMENT {snp.measurement.hex()}")
        console.print(("" if snp.covers_kernel else "[bold]WARNING[/bold] ") + snp.note)
        return
    if tee != "tpm":
        raise InvalidInputError(f"--tee {tee}: tpm or snp (tdx: not implemented, ADR 0035)")
    if reference_boot:
        from sealroom.hostagent.backends.vm import reference_expectation

        with tempfile.TemporaryDirectory(prefix="sealroom-ref-") as tmp:
            exp = reference_expectation(img, Path(tmp), firmware=firmware)
    else:
        exp = expected_tpm(img)
    section = exp.policy_section()
    if policy_out is not None:
        initrd_hash = str(img.description["artifacts"]["initrd.img"]["sha256"])
        doc = {"version": 1, "id": f"sealroom-guest-{initrd_hash[:12]}", "tpm": section}
        policy_out.write_text(yaml.safe_dump(doc, sort_keys=False))
    rows = {str(i): v.hex() for i, v in sorted(exp.pcrs.items())}
    if json_out:
        print_json({"tee": "tpm", "bank": "sha256", "pcrs": rows,
                    "computed": list(exp.computed), "firmware_sha256": exp.firmware})  # fmt: skip
        return
    for i, v in rows.items():
        how = "computed" if int(i) in exp.computed else "reference boot"
        console.print(f"PCR {i:>2} sha256 {v}  ({how})")
    if not reference_boot:
        console.print("PCRs 0-7 (firmware, kernel as loaded) need --reference-boot")


@image_app.command("ca")
def ca_cmd() -> None:
    """Print this host's vTPM CA root (PEM), created on first use: parties pass it to
    `--root` to accept the AKs it certifies (ak_trust: certified)."""
    from sealroom.hostagent.backends.vtpm_ca import VtpmCa

    typer.echo(VtpmCa.load_or_create().root_pem().decode(), nl=False)


@image_app.command("attest")
def attest_cmd(
    image: ImageDir,
    out: Annotated[Path, typer.Option("--out", help="Write the evidence envelope here.")],
    ak_out: Annotated[
        Path | None, typer.Option("--ak-out", help="Write the vTPM's AK (TPMT_PUBLIC) here.")
    ] = None,
    nonce: Annotated[
        str | None, typer.Option("--nonce", help="Verifier nonce, hex (default: random).")
    ] = None,
    firmware: Firmware = OVMF,
    json_out: JsonOpt = False,
) -> None:
    """Boot IMAGE in a VM with a fresh vTPM (its AK certified by this host's vTPM CA), take
    a TPM quote from inside the guest with the nonce, power off. Check it with `sealroom
    attest verify OUT --root CA.pem --nonce N --policy P` (`sealroom image ca` prints the
    root; P from `sealroom image measure --policy-out`), or pin the AK with --ak."""
    from sealroom.hostagent.backends.vm import boot_and_quote, guest_spec
    from sealroom.hostagent.backends.vtpm_ca import VtpmCa

    n = parse_hex(nonce, "--nonce") or os.urandom(32)
    img = GuestImage.load(image)
    with tempfile.TemporaryDirectory(prefix="sealroom-vm-") as tmp:
        spec = guest_spec(img, Path(tmp), "attest", firmware=firmware)
        q = boot_and_quote(spec, n, ca=VtpmCa.load_or_create())
    out.write_text(EvidenceBundle.single(q.item).to_json())
    if ak_out is not None:
        ak_out.write_bytes(q.ak_pub)
    info = {"nonce": n.hex(), "evidence": str(out), "ak": str(ak_out) if ak_out else None,
            "ready_seconds": round(q.ready_after, 2), "quoted_seconds": round(q.quoted_after, 2),
            "guest_uptime": q.guest_uptime}  # fmt: skip
    if json_out:
        print_json(info)
    else:
        typer.echo(json.dumps(info, indent=2))

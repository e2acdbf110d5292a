"""`sealroom sim ...`: the local sim authority (a stand-in for TEE hardware)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from sealroom import paths
from sealroom.attestation.evidence import EvidenceBundle
from sealroom.attestation.sim.authority import SimAuthority, measure_tree
from sealroom.cli.common import err_console, parse_hex, simulated_banner
from sealroom.errors import InvalidInputError

sim_app = typer.Typer(
    help="The sim authority: SIMULATED SEV-SNP evidence for machines without TEE hardware.",
    no_args_is_help=True,
)


def authority() -> SimAuthority:
    return SimAuthority.load_or_create(paths.sim_authority())


@sim_app.command("root")
def root_cmd() -> None:
    """Print the sim authority's root (ARK) certificate, PEM. Pass it to `--root` to accept
    SIMULATED evidence (and set allow_simulated: true in the policy)."""
    typer.echo(authority().root_pem().decode(), nl=False)


@sim_app.command("report")
def report_cmd(
    out: Annotated[Path, typer.Option("--out", help="Write the evidence envelope here.")],
    measurement: Annotated[
        str | None, typer.Option("--measurement", help="48-byte launch measurement, hex.")
    ] = None,
    measure: Annotated[
        Path | None, typer.Option("--measure", help="Measure this code file or directory.")
    ] = None,
    report_data: Annotated[
        str | None, typer.Option("--report-data", help="Up to 64 bytes, hex (zero-padded).")
    ] = None,
    host_data: Annotated[str | None, typer.Option("--host-data", help="32 bytes, hex.")] = None,
) -> None:
    """Produce a SIMULATED SNP report, signed by the sim authority, as an evidence envelope."""
    if (measurement is None) == (measure is None):
        raise InvalidInputError("give exactly one of --measurement or --measure")
    if measure is not None:
        if not measure.exists():
            raise InvalidInputError(f"--measure: {measure} does not exist")
        m = measure_tree(measure)
    else:
        m = parse_hex(measurement, "--measurement", 48) or b""
    rd = parse_hex(report_data, "--report-data") or b""
    if len(rd) > 64:
        raise InvalidInputError(f"--report-data is {len(rd)} bytes, at most 64")
    hd = parse_hex(host_data, "--host-data", 32) or bytes(32)
    auth = authority()
    report = auth.report(measurement=m, report_data=rd + bytes(64 - len(rd)), host_data=hd)
    item = auth.evidence(report, collected_at=datetime.now(UTC))
    out.write_text(EvidenceBundle.single(item).to_json() + "\n")
    simulated_banner()
    err_console.print(f"SIMULATED evidence written to {out} (measurement {m.hex()})")

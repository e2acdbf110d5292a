"""`sealroom service ...`: long-running attested services (docs/adr/0032)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
import yaml
from rich.table import Table

from sealroom.attestation.policy import Policy
from sealroom.cli.common import console, home_dir, print_json, render_result, simulated_banner
from sealroom.cli.enclave_cmd import JsonOpt, RootOpt, trusted_roots
from sealroom.client.service import AttestedService, ServiceClient
from sealroom.hostagent.launcher import launch_local, runtime_measurement
from sealroom.protocol.service import load_spec

service_app = typer.Typer(help="Long-running services in attested enclaves.", no_args_is_help=True)

UrlArg = Annotated[str, typer.Argument(help="https://HOST:PORT of the service")]
PolicyReq = Annotated[Path, typer.Option("--policy", help="Your appraisal policy.")]
SpecOpt = Annotated[
    Path | None,
    typer.Option("--spec", help="The service spec you expect (its hash must match)."),
]


def _client(url: str, policy: Path, spec: Path | None, root: list[Path]) -> ServiceClient:
    return ServiceClient(
        url,
        Policy.load(policy),
        spec=load_spec(spec) if spec is not None else None,
        extra_roots=trusted_roots(root),
    )


@service_app.command("hash")
def hash_cmd(spec: Annotated[Path, typer.Argument(help="service spec (YAML/JSON)")]) -> None:
    """The spec hash an enclave running this spec binds in its evidence."""
    typer.echo(load_spec(spec).spec_hash.hex())


@service_app.command("policy")
def policy_cmd(
    out: Annotated[Path, typer.Option("--out", help="where to write the policy (YAML)")],
    spec: SpecOpt = None,
    allow_simulated: Annotated[
        bool, typer.Option("--allow-simulated", help="accept SIMULATED evidence (sim TEE)")
    ] = False,
) -> None:
    """A starter policy for a service: SNP, this installation's runtime measurement,
    REPORT_DATA bound sealroom-v1, HOST_DATA = the spec hash (with --spec)."""
    snp: dict[str, object] = {
        "measurements": [runtime_measurement().hex()],
        "report_data": {"mode": "sealroom-v1"},
        "allow_debug": False,
    }
    if spec is not None:
        snp["host_data"] = load_spec(spec).spec_hash.hex()
    doc = {
        "version": 1,
        "id": "service-policy",
        "allow_simulated": allow_simulated,
        "require": ["snp"],
        "snp": snp,
    }
    Policy.loads(yaml.safe_dump(doc))  # what we write must load
    out.write_text(yaml.safe_dump(doc, sort_keys=False))
    typer.echo(f"wrote {out}" + (" (accepts SIMULATED evidence)" if allow_simulated else ""))


@service_app.command("run")
def run_cmd(
    spec: Annotated[Path, typer.Option("--spec", help="service spec (YAML/JSON)")],
    tee: Annotated[str, typer.Option("--tee", help="sim | configfs-tsm | tpm2:TCTI")] = "sim",
    listen: Annotated[str, typer.Option("--listen", help="HOST:PORT (loopback)")] = "127.0.0.1:0",
    as_json: JsonOpt = False,
) -> None:
    """Start a standalone service enclave and serve until stopped (Ctrl-C)."""
    enclave = launch_local(spec, tee=tee, listen=listen, home=home_dir(), is_service=True)
    try:
        info = {
            "url": enclave.url,
            "spec_hash": enclave.manifest_hash,
            "simulated": enclave.simulated,
        }
        if as_json:
            sys.stdout.write(json.dumps(info) + "\n")
            sys.stdout.flush()
        else:
            if enclave.simulated:
                simulated_banner()
            console.print(
                f"service listening on [bold]{enclave.url}[/] spec {enclave.manifest_hash}"
            )
            console.print("verify: `sealroom service verify URL --policy P --spec FILE`")
        enclave.wait()
    except KeyboardInterrupt:
        pass
    finally:
        enclave.stop()


def verdict_rows(a: AttestedService, url: str) -> list[tuple[str, str, str]]:
    ok = a.appraisal.ok
    return [
        ("evidence", "authentic (signature, chain)", "SIMULATED" if a.simulated else "hardware"),
        ("policy", "pass" if ok else "FAIL", a.appraisal.policy_id),
        (
            "spec hash",
            "matches --spec" if a.spec_checked else "not checked (no --spec)",
            a.spec_hash.hex(),
        ),
        ("TLS key", "this connection's key is the attested key", a.keys.tls_spki_digest()),
        ("freshness", "your nonce is bound in REPORT_DATA", a.attested_at.isoformat()),
    ]


@service_app.command("verify")
def verify_cmd(
    url: UrlArg,
    policy: PolicyReq,
    spec: SpecOpt = None,
    root: RootOpt = [],  # noqa: B006
    as_json: JsonOpt = False,
) -> None:
    """Fresh nonce -> evidence -> your policy; spec hash; the TLS key of THIS connection."""
    client = _client(url, policy, spec, root)
    try:
        attested = client.attest()
    finally:
        a = client.attested
        if a is not None and not as_json:
            render_result(a.appraisal)
    if as_json:
        print_json(
            {
                "url": client.url,
                "simulated": attested.simulated,
                "spec_hash": attested.spec_hash.hex(),
                "spec_checked": attested.spec_checked,
                "tls_spki_sha256": attested.keys.tls_spki_digest(),
                "keys_digest": attested.keys.digest.hex(),
                "spec": attested.measured_spec,
                "appraisal": attested.appraisal.to_dict(),
            }
        )
        return
    table = Table(title=f"service {client.url}: ACCEPTED")
    for col in ("check", "verdict", "detail"):
        table.add_column(col)
    for row in verdict_rows(attested, client.url):
        table.add_row(*row)
    console.print(table)


@service_app.command("curl")
def curl_cmd(
    url: UrlArg,
    path: Annotated[str, typer.Argument(help="request path, e.g. /")] = "/",
    policy: PolicyReq = Path("policy.yaml"),
    spec: SpecOpt = None,
    method: Annotated[str, typer.Option("-X", "--request", help="HTTP method")] = "GET",
    data: Annotated[str | None, typer.Option("-d", "--data", help="request body")] = None,
    header: Annotated[list[str], typer.Option("-H", "--header", help="'Name: value'")] = [],  # noqa: B006
    root: RootOpt = [],  # noqa: B006
) -> None:
    """Verify the service, then make one request over a connection pinned to its key."""
    client = _client(url, policy, spec, root)
    attested = client.attest()
    if attested.simulated:
        print("sealroom: SIMULATED TEE evidence (verified under allow_simulated)", file=sys.stderr)
    headers = {}
    for h in header:
        name, sep, value = h.partition(":")
        if not sep:
            raise typer.BadParameter(f"header {h!r} is not 'Name: value'")
        headers[name.strip()] = value.strip()
    resp = client.request(
        method.upper(), path, data.encode() if data is not None else None, headers
    )
    sys.stdout.buffer.write(resp.body)
    sys.stdout.flush()
    if resp.status >= 400:
        print(f"sealroom: HTTP {resp.status}", file=sys.stderr)
        raise typer.Exit(1)

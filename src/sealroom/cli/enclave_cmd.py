"""`sealroom enclave|upload|result|receipt`: run an enclave locally, and the parties' side."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from cryptography import x509
from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

from sealroom import paths
from sealroom.attestation.kinds import VerifyContext
from sealroom.attestation.policy import Policy
from sealroom.attestation.x509util import load_certificates
from sealroom.cli.common import (
    console,
    err_console,
    home_dir,
    parse_now,
    print_json,
    read_input,
    render_result,
    render_run_log,
    simulated_banner,
)
from sealroom.client.enclave import EnclaveClient
from sealroom.crypto.keys import PartyKeys, key_path
from sealroom.errors import InvalidInputError, RunFailedError
from sealroom.hostagent.launcher import launch_local, runtime_measurement
from sealroom.manifest import Manifest
from sealroom.protocol.receipt import verify_receipt

enclave_app = typer.Typer(help="Run and verify enclaves.", no_args_is_help=True)
receipt_app = typer.Typer(help="Receipts of finished computations.", no_args_is_help=True)

ManifestOpt = Annotated[Path, typer.Option("--manifest", help="The computation's manifest.")]
PolicyOpt = Annotated[
    Path | None,
    typer.Option("--policy", help="Your appraisal policy (default: the manifest's policy)."),
]
RootOpt = Annotated[
    list[Path],
    typer.Option("--root", help="Extra trusted root (e.g. a remote sim authority's ARK)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def trusted_roots(extra: list[Path]) -> tuple[x509.Certificate, ...]:
    """Roots given with --root, plus this machine's sim authority root if it exists.

    Trusting the local sim root can never make sim evidence pass a policy without
    `allow_simulated: true`; it only lets such evidence be verified as SIMULATED."""
    roots: list[x509.Certificate] = []
    for p in extra:
        roots.extend(load_certificates(read_input(str(p), "root certificate"), str(p)))
    local = paths.sim_authority() / "ark.pem"
    if local.is_file():
        roots.extend(load_certificates(local.read_bytes(), str(local)))
    return tuple(roots)


def load_party(name_or_path: str) -> PartyKeys:
    p = Path(name_or_path)
    if p.suffix or "/" in name_or_path:
        return PartyKeys.load(p)
    return PartyKeys.load(key_path(name_or_path))


def client_for(url: str, manifest: Path, policy: Path | None, root: list[Path]) -> EnclaveClient:
    m = Manifest.load(manifest)
    return EnclaveClient(
        url, m, policy=Policy.load(policy) if policy else None, extra_roots=trusted_roots(root)
    )


@enclave_app.command("run")
def run_cmd(
    manifest: ManifestOpt,
    tee: Annotated[str, typer.Option("--tee", help="sim | configfs-tsm | tpm2:TCTI")] = "sim",
    listen: Annotated[str, typer.Option("--listen", help="HOST:PORT (loopback)")] = "127.0.0.1:0",
    linger: Annotated[
        float | None, typer.Option("--linger", help="Exit N seconds after the run ends.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Start a standalone enclave runtime for one manifest and serve until stopped."""
    enclave = launch_local(manifest, tee=tee, listen=listen, linger=linger, home=home_dir())
    try:
        info = {
            "url": enclave.url,
            "manifest_hash": enclave.manifest_hash,
            "simulated": enclave.simulated,
            "measurement": enclave.measurement.hex() if enclave.measurement else None,
        }
        if as_json:
            # One line, flushed: scripts read the URL while the enclave keeps running.
            sys.stdout.write(json.dumps(info) + "\n")
            sys.stdout.flush()
        else:
            if enclave.simulated:
                simulated_banner()
            console.print(
                f"enclave listening on [bold]{enclave.url}[/] for manifest {enclave.manifest_hash}"
            )
            console.print(
                "parties: `sealroom enclave verify URL --manifest M`, then "
                "`sealroom upload ...`; Ctrl-C stops and wipes the enclave"
            )
        enclave.wait()
    except KeyboardInterrupt:
        pass
    finally:
        enclave.stop()


@enclave_app.command("measurement")
def measurement_cmd() -> None:
    """The sim launch measurement of this sealroom installation (pin it in policies)."""
    typer.echo(runtime_measurement().hex())


@enclave_app.command("verify")
def verify_cmd(
    url: Annotated[str, typer.Argument(help="https://127.0.0.1:PORT")],
    manifest: ManifestOpt,
    policy: PolicyOpt = None,
    root: RootOpt = [],  # noqa: B006
    as_json: JsonOpt = False,
) -> None:
    """Fresh nonce -> evidence -> your policy, binding to the manifest and enclave keys."""
    client = client_for(url, manifest, policy, root)
    try:
        attested = client.attest()
    finally:
        if client.attested is not None:
            _show(
                client.attested.appraisal,
                as_json,
                client.attested.simulated,
                {"url": url, "keys_digest": client.attested.keys.digest.hex()},
            )
    if not as_json:
        console.print(f"TLS key pinned: {attested.keys.tls_spki.hex()[:32]}…")


def _show(result: Any, as_json: bool, simulated: bool, extra: dict[str, Any]) -> None:
    if as_json:
        print_json({**extra, "simulated": simulated, "appraisal": result.to_dict()})
    else:
        render_result(result)


def _progress() -> Progress:
    return Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=err_console,
        transient=True,
    )


def upload_cmd(
    url: Annotated[str, typer.Argument(help="https://127.0.0.1:PORT")],
    source: Annotated[Path, typer.Argument(help="File, or directory (archived)")],
    manifest: ManifestOpt,
    slot: Annotated[str, typer.Option("--slot", help="algorithm or a dataset name")],
    key: Annotated[str, typer.Option("--key", help="Your party key (name or file)")],
    policy: PolicyOpt = None,
    root: RootOpt = [],  # noqa: B006
    as_json: JsonOpt = False,
) -> None:
    """Verify the enclave, then stream a signed upload into a slot."""
    client = client_for(url, manifest, policy, root)
    party = load_party(key)
    attested = client.attest()
    if attested.simulated and not as_json:
        simulated_banner()
    with _progress() as bar:
        task = bar.add_task(f"{slot}", total=None)
        result = client.upload(
            slot,
            source,
            party,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    if as_json:
        print_json({**result.wire(), "simulated": attested.simulated})
    else:
        console.print(
            f"[green]uploaded[/] {source} into slot {slot!r} "
            f"({result.size} bytes, sha256 {result.sha256})"
        )


def result_cmd(
    url: Annotated[str, typer.Argument(help="https://127.0.0.1:PORT")],
    manifest: ManifestOpt,
    key: Annotated[str, typer.Option("--key", help="Your consumer key (name or file)")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Directory for the results")],
    receipt_out: Annotated[
        Path | None, typer.Option("--receipt", help="Save the receipt here too.")
    ] = None,
    wait: Annotated[float, typer.Option("--wait", help="Wait up to N s for the run.")] = 0.0,
    policy: PolicyOpt = None,
    root: RootOpt = [],  # noqa: B006
    as_json: JsonOpt = False,
) -> None:
    """Fetch your sealed result, verify the receipt and evidence, decrypt into OUT.

    On a failed run: print the run log sealed to you, then fail with `failed: <reason>`
    (exit status 5)."""
    client = client_for(url, manifest, policy, root)
    consumer = load_party(key)
    client.attest()
    if wait > 0:
        _wait_finished(client, wait)
    try:
        receipt = client.fetch_result(consumer, out)
    except RunFailedError as e:
        show_failed_run(e, as_json, receipt_out, client.receipt if receipt_out else None)
        raise
    if receipt_out is not None:
        receipt_out.write_text(json.dumps(client.receipt(), indent=2) + "\n")
    if as_json:
        print_json(
            {
                "out": str(out),
                "simulated": receipt.simulated,
                "exit": receipt.payload["exit"],
                "receipt": str(receipt_out or ""),
            }
        )
        return
    if receipt.simulated:
        simulated_banner()
    console.print(
        f"[green]result decrypted[/] into {out}; receipt verified "
        f"({'SIMULATED' if receipt.simulated else 'hardware'} evidence)"
    )


def show_failed_run(
    e: RunFailedError,
    as_json: bool,
    receipt_out: Path | None = None,
    receipt: Callable[[], dict[str, Any]] | None = None,
) -> None:
    """Before the error itself (`failed: <reason>`, exit 5): the decrypted run log."""
    if receipt_out is not None and receipt is not None:
        receipt_out.write_text(json.dumps(receipt(), indent=2) + "\n")
    if as_json:
        log = e.log
        print_json(
            {
                "failed": True,
                "message": e.message,
                "log": None
                if log is None
                else {
                    "reason": log.reason,
                    "detail": log.detail,
                    "truncated": log.truncated,
                    "entries": [{"stream": s, "text": t} for s, t in log.entries],
                },
            }
        )
    elif e.log is not None:
        render_run_log(e.log)


def log_cmd(
    url: Annotated[str, typer.Argument(help="https://127.0.0.1:PORT")],
    manifest: ManifestOpt,
    key: Annotated[str, typer.Option("--key", help="Your key (a consumer or log reader)")],
    policy: PolicyOpt = None,
    root: RootOpt = [],  # noqa: B006
) -> None:
    """Fetch and decrypt the run log sealed to you (consumers and the manifest's
    log_readers), after verifying the receipt; completed and failed runs both have one."""
    client = client_for(url, manifest, policy, root)
    client.attest()
    receipt, log = client.fetch_log(load_party(key))
    if receipt.simulated:
        simulated_banner()
    render_run_log(log)
    if not receipt.ok:
        raise RunFailedError(f"failed: {receipt.payload['exit']['reason']}", log=log)


def _wait_finished(client: EnclaveClient, seconds: float) -> None:
    import time

    deadline = time.monotonic() + seconds
    seq = 0
    while time.monotonic() < deadline:
        for ev in client.events(seq, wait=min(10.0, max(0.0, deadline - time.monotonic()))):
            seq = ev.seq
            if ev.type in ("completed", "failed"):
                return


@receipt_app.command("verify")
def receipt_verify_cmd(
    receipt: Annotated[Path, typer.Argument(help="Receipt JSON")],
    manifest: ManifestOpt,
    policy: PolicyOpt = None,
    root: RootOpt = [],  # noqa: B006
    now: Annotated[str | None, typer.Option("--now", help="Verify at this time.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Verify a receipt offline: signature, evidence, binding, manifest hashes."""
    m = Manifest.load(manifest)
    try:
        doc = json.loads(read_input(str(receipt), "receipt"))
    except ValueError as e:
        raise InvalidInputError(f"{receipt} is not JSON: {e}") from e
    verified = verify_receipt(
        doc,
        manifest_hash=m.manifest_hash,
        algorithm_sha256=_hex(m.algorithm.sha256),
        dataset_sha256s={d.name: _hex(d.sha256) for d in m.datasets},
        policy=Policy.load(policy) if policy else m.policy(),
        ctx=VerifyContext(now=parse_now(now), extra_roots=trusted_roots(root)),
    )
    p = verified.payload
    if as_json:
        print_json(
            {
                "valid": True,
                "simulated": verified.simulated,
                "exit": p["exit"],
                "results": p["results"],
                "logs": p.get("logs", {}),
                "manifest_hash": p["manifest_hash"],
            }
        )
        return
    if verified.simulated:
        simulated_banner()
    state = "completed" if verified.ok else f"FAILED: {p['exit']['reason']}"
    console.print(f"[green]receipt valid[/]: run {state}; manifest {p['manifest_hash']}")
    for name, r in p["results"].items():
        console.print(f"  sealed result for {name}: sha256 {r['sha256']} ({r['size']} bytes)")
    for name, r in p.get("logs", {}).items():
        console.print(f"  sealed run log for {name}: sha256 {r['sha256']} ({r['size']} bytes)")


def _hex(value: Any) -> str:
    return value.hex() if isinstance(value, bytes) else str(value).lower()

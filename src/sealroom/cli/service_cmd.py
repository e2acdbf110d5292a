"""`sealroom service ...`: long-running attested services (docs/adr/0032)."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Annotated, Any

import typer
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from rich.table import Table

from sealroom.attestation.policy import Policy
from sealroom.cli.common import (
    console,
    err_console,
    home_dir,
    print_json,
    read_input,
    render_result,
    simulated_banner,
)
from sealroom.cli.enclave_cmd import JsonOpt, RootOpt, trusted_roots
from sealroom.client.attest_monitor import AttestationMonitor
from sealroom.client.service import AttestedService, ServiceClient
from sealroom.crypto.signing import verify_signed_json
from sealroom.errors import AttestationError, InvalidInputError
from sealroom.hostagent.launcher import launch_local, runtime_measurement
from sealroom.hostagent.relay import TcpToUnixRelay
from sealroom.protocol.service import (
    HEARTBEAT_DOMAIN,
    HeartbeatRecord,
    heartbeat_hash,
    load_spec,
)

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
    attest_every: Annotated[
        float | None,
        typer.Option(
            "--attest-every",
            help="Re-attest every N seconds with --policy; traffic flows only while the "
            "last heartbeat verified (fail closed).",
        ),
    ] = None,
    policy: Annotated[
        Path | None, typer.Option("--policy", help="policy for --attest-every")
    ] = None,
    heartbeats: Annotated[
        Path | None, typer.Option("--heartbeats", help="append signed heartbeats here (JSONL)")
    ] = None,
    root: RootOpt = [],  # noqa: B006
    as_json: JsonOpt = False,
) -> None:
    """Start a standalone service enclave and serve until stopped (Ctrl-C)."""
    if attest_every is not None and policy is None:
        raise InvalidInputError("--attest-every needs --policy (the owner's policy)")
    with contextlib.ExitStack() as stack:
        watched = attest_every is not None and policy is not None
        sock_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sealroom-svc-")))
        enclave = launch_local(
            spec,
            tee=tee,
            listen=f"unix:{sock_dir / 'svc.sock'}" if watched else listen,
            home=home_dir(),
            is_service=True,
        )
        stack.callback(enclave.stop)
        url = enclave.url
        info: dict[str, object] = {}
        if watched:
            assert attest_every is not None and policy is not None
            host, _, port = listen.rpartition(":")
            public = TcpToUnixRelay(sock_dir / "svc.sock", host=host, port=int(port or 0))
            public.close_gate("not attested yet")  # fail closed from the first byte
            stack.enter_context(public)
            # The verifier's own path to the enclave: not behind the gate it controls.
            private = stack.enter_context(TcpToUnixRelay(sock_dir / "svc.sock"))
            url = public.endpoint
            signer = Ed25519PrivateKey.generate()
            key_hex = signer.public_key().public_bytes_raw().hex()
            info["heartbeat_key"] = key_hex

            def on_heartbeat(signed: dict[str, object]) -> None:
                line = json.dumps({"signer": key_hex, "heartbeat": signed})
                if heartbeats is not None:
                    with _append_private(heartbeats) as f:
                        f.write(line + "\n")
                payload = signed["payload"]
                assert isinstance(payload, dict)
                if not as_json:
                    state = "ok" if payload["ok"] else f"UNTRUSTED ({payload['reason']})"
                    console.print(f"heartbeat {payload['seq']} {payload['time']}: {state}")

            def on_untrusted(reason: str) -> None:
                public.close_gate(reason)
                err_console.print(f"service untrusted, traffic stopped: {reason}")

            monitor = AttestationMonitor(
                ServiceClient(
                    private.endpoint,
                    Policy.load(policy),
                    spec=load_spec(spec),
                    extra_roots=trusted_roots(root),
                    timeout=max(1.0, attest_every),
                ),
                signer,
                period=attest_every,
                on_heartbeat=on_heartbeat,
                on_untrusted=on_untrusted,
                on_trusted=public.open_gate,
            )
            monitor.start()
            stack.callback(monitor.stop)
        info.update(url=url, spec_hash=enclave.manifest_hash, simulated=enclave.simulated)
        if as_json:
            sys.stdout.write(json.dumps(info) + "\n")
            sys.stdout.flush()
        else:
            if enclave.simulated:
                simulated_banner()
            console.print(f"service listening on [bold]{url}[/] spec {enclave.manifest_hash}")
            if watched:
                console.print(f"heartbeats signed by {info['heartbeat_key']}")
            console.print("verify: `sealroom service verify URL --policy P --spec FILE`")
        try:
            enclave.wait()
        except KeyboardInterrupt:
            pass


@contextlib.contextmanager
def _append_private(path: Path) -> Iterator[IO[str]]:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "a") as f:
        yield f


def verdict_rows(
    a: AttestedService, url: str, spec_flag: str = "--spec"
) -> list[tuple[str, str, str]]:
    ok = a.appraisal.ok
    return [
        ("evidence", "authentic (signature, chain)", "SIMULATED" if a.simulated else "hardware"),
        ("policy", "pass" if ok else "FAIL", a.appraisal.policy_id),
        (
            "spec hash",
            f"matches {spec_flag}" if a.spec_checked else f"not checked (no {spec_flag})",
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
    heartbeats: Annotated[
        Path | None,
        typer.Option("--heartbeats", help="signed heartbeat log (service run --heartbeats)"),
    ] = None,
    heartbeat_key: Annotated[
        str | None,
        typer.Option("--heartbeat-key", help="the heartbeat signer's Ed25519 key (hex)"),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Fresh nonce -> evidence -> your policy; spec hash; the TLS key of THIS connection;
    with --heartbeats, the time of the last good heartbeat (continuous attestation)."""
    if (heartbeats is None) != (heartbeat_key is None):
        raise InvalidInputError("--heartbeats and --heartbeat-key go together")
    client = _client(url, policy, spec, root)
    try:
        attested = client.attest()
    finally:
        a = client.attested
        if a is not None and not as_json:
            render_result(a.appraisal)
    beats = (
        read_heartbeats(heartbeats, heartbeat_key, attested.keys.digest.hex())
        if heartbeats is not None and heartbeat_key is not None
        else None
    )
    if as_json:
        print_json(
            {
                "heartbeats": beats,
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
    if beats is not None:
        table.add_row(
            "heartbeats",
            "last good: " + (beats["last_good"] or "never"),
            f"{beats['count']} signed; latest "
            + ("ok" if beats["latest_ok"] else f"UNTRUSTED ({beats['latest_reason']})"),
        )
    console.print(table)
    if beats is not None and not beats["latest_ok"]:
        raise AttestationError(
            f"continuous attestation failed: {beats['latest_reason']}", code="heartbeat-untrusted"
        )


def read_heartbeats(path: Path, key_hex: str, keys_digest: str) -> dict[str, Any]:
    """Verify a heartbeat log: every record signed by ``key_hex``, chained by ``prev``;
    the last good one for these enclave keys and the latest one."""
    try:
        key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(key_hex))
    except ValueError as e:
        raise InvalidInputError(f"--heartbeat-key is not an Ed25519 key: {e}") from e
    prev = ""
    last_good: str | None = None
    latest: dict[str, Any] | None = None
    count = 0
    for n, line in enumerate(read_input(str(path), "heartbeats").splitlines(), 1):
        if not line.strip():
            continue
        try:
            signed = json.loads(line)["heartbeat"]
        except (ValueError, KeyError, TypeError) as e:
            raise InvalidInputError(f"{path}:{n}: not a heartbeat line") from e
        payload = verify_signed_json(signed, key, HEARTBEAT_DOMAIN)
        record = HeartbeatRecord.model_validate(payload)
        if record.prev != prev:
            raise AttestationError(
                f"{path}:{n}: heartbeat chain broken (a record was removed or reordered)",
                code="heartbeat-chain-broken",
            )
        prev = heartbeat_hash(signed)
        count += 1
        latest = payload
        if record.ok and record.keys_digest == keys_digest:
            last_good = record.time
    if latest is None:
        raise InvalidInputError(f"{path}: no heartbeats")
    return {
        "count": count,
        "last_good": last_good,
        "latest_ok": bool(latest["ok"]) and latest.get("keys_digest") == keys_digest,
        "latest_reason": latest.get("reason") or "for other enclave keys",
        "latest_time": latest["time"],
    }


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

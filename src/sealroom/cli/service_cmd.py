"""`sealroom service ...`: long-running attested services (docs/adr/0032)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

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
from sealroom.cli.tlog_cmd import load_vkey
from sealroom.client.attest_monitor import AttestationMonitor
from sealroom.client.controlplane import load_config
from sealroom.client.heartbeats import HeartbeatSink
from sealroom.client.service import AttestedService, ServiceClient
from sealroom.client.tlog import LogClient
from sealroom.crypto.signing import verify_signed_json
from sealroom.errors import AttestationError, InvalidInputError, SealroomError
from sealroom.hostagent.launcher import launch_local, runtime_measurement
from sealroom.hostagent.relay import TcpToUnixRelay
from sealroom.protocol.runtime_lines import BreachLine, parse_runtime_line
from sealroom.protocol.service import (
    HEARTBEAT_DOMAIN,
    HeartbeatRecord,
    deployment_log_payload,
    heartbeat_hash,
    heartbeat_log_payload,
    load_spec,
)
from sealroom.tlog import note
from sealroom.tlog.checkpoint import Checkpoint, open_checkpoint
from sealroom.tlog.entries import Kind, decode_entry, encode_entry
from sealroom.tlog.merkle import leaf_hash, verify_inclusion

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
    log_url: Annotated[
        str | None,
        typer.Option(
            "--log",
            help="Control plane URL: log the deployment and every heartbeat in its "
            "transparency log (admin key: SEALROOM_API_KEY or `sealroom login`); a heartbeat "
            "that cannot be logged does not count.",
        ),
    ] = None,
    root: RootOpt = [],  # noqa: B006
    as_json: JsonOpt = False,
) -> None:
    """Start a standalone service enclave and serve until stopped (Ctrl-C)."""
    if attest_every is not None and policy is None:
        raise InvalidInputError("--attest-every needs --policy (the owner's policy)")
    if log_url is not None and attest_every is None:
        raise InvalidInputError("--log logs heartbeats: it needs --attest-every and --policy")
    with contextlib.ExitStack() as stack:
        watched = attest_every is not None and policy is not None
        sink = None
        if watched:  # before the enclave starts: a bad file or key stops nothing running
            log = LogClient(log_url, _admin_key()) if log_url is not None else None
            sink = HeartbeatSink(Ed25519PrivateKey.generate(), heartbeats, log, _show(as_json))
            stack.callback(sink.close)
        sock_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sealroom-svc-")))
        enclave = launch_local(
            spec,
            tee=tee,
            listen=f"unix:{sock_dir / 'svc.sock'}" if watched else listen,
            home=home_dir(),
            is_service=True,
        )
        stack.callback(enclave.stop)
        enclave.start_reader()
        info: dict[str, object] = {"url": enclave.url}
        if sink is not None and attest_every is not None and policy is not None:
            watch = _Watch(sock_dir / "svc.sock", listen)
            info.update(
                watch.start(
                    stack,
                    ServiceClient(
                        watch.private.endpoint,
                        Policy.load(policy),
                        spec=load_spec(spec),
                        extra_roots=trusted_roots(root),
                        timeout=max(1.0, attest_every),
                    ),
                    attest_every,
                    sink,
                )
            )
        info.update(spec_hash=enclave.manifest_hash, simulated=enclave.simulated)
        if as_json:
            sys.stdout.write(json.dumps(info) + "\n")
            sys.stdout.flush()
        else:
            if enclave.simulated:
                simulated_banner()
            console.print(
                f"service listening on [bold]{info['url']}[/] spec {enclave.manifest_hash}"
            )
            if watched:
                console.print(f"heartbeats signed by {info['heartbeat_key']}")
            if "deployment_log_index" in info:
                console.print(f"deployment logged at index {info['deployment_log_index']}")
            console.print("verify: `sealroom service verify URL --policy P --spec FILE`")
        try:
            enclave.wait()
        except KeyboardInterrupt:
            pass
        report_breach(enclave.lines)


def report_breach(lines: list[dict[str, Any]]) -> None:
    """A runtime that went down for a breach (docs/adr/0041): its signed event on stdout
    (for anyone holding the attested key to check), the reason on stderr, exit 6."""
    for raw in lines:
        line = parse_runtime_line(raw)
        if isinstance(line, BreachLine):
            sys.stdout.write(json.dumps({"breach": line.signed}) + "\n")
            err_console.print(
                f"BREACH ({line.code}): {line.signed['payload'].get('message', '')}; the "
                "workload was stopped, its sessions and the enclave's keys dropped"
            )
            raise typer.Exit(6)


def _admin_key() -> str:
    try:
        _, key = load_config()
    except InvalidInputError:
        key = os.environ.get("SEALROOM_API_KEY")
    if not key:
        raise InvalidInputError(
            "--log appends to the transparency log as the operator: set SEALROOM_API_KEY "
            "(an admin key) or run `sealroom login`",
            code="admin-key-required",
        )
    return key


def _show(quiet: bool) -> Callable[[dict[str, Any], int | None], None] | None:
    def show(payload: dict[str, Any], index: int | None) -> None:
        state = "ok" if payload["ok"] else f"UNTRUSTED ({payload['reason']})"
        at = f" (log index {index})" if index is not None else ""
        console.print(f"heartbeat {payload['seq']} {payload['time']}: {state}{at}")

    return None if quiet else show


class _Watch:
    """``service run --attest-every``: a gated public relay (closed until the first good
    heartbeat), the verifier's own ungated relay, the monitor, and where heartbeats go
    (the 0600 JSONL file, the transparency log). docs/adr/0033."""

    def __init__(self, sock: Path, listen: str) -> None:
        host, _, port = listen.rpartition(":")
        self.public = TcpToUnixRelay(sock, host=host, port=int(port or 0))
        self.public.close_gate("not attested yet")  # fail closed from the first byte
        # The verifier's own path to the enclave: not behind the gate it controls.
        self.private = TcpToUnixRelay(sock)

    def start(
        self,
        stack: contextlib.ExitStack,
        client: ServiceClient,
        period: float,
        sink: HeartbeatSink,
    ) -> dict[str, object]:
        log = sink.log
        stack.enter_context(self.public)
        stack.enter_context(self.private)
        monitor = AttestationMonitor(
            client,
            sink.signer,
            period=period,
            on_heartbeat=sink.write,
            on_untrusted=self.on_untrusted,
            on_trusted=self.public.open_gate,
            publish=sink.publish,
        )
        out: dict[str, object] = {"url": self.public.endpoint, "heartbeat_key": sink.key_hex}
        if log is not None:
            # The deployment is logged before any traffic: which spec, which enclave keys
            # (attested now, with the owner's policy), who signs its heartbeats. An enclave
            # that does not attest, or a log that does not take the entry, stops the start.
            attested = client.attest()
            monitor.pinned_keys = attested.keys.digest.hex()
            entry = deployment_log_payload(
                subject=self.public.endpoint,
                spec_hash=attested.spec_hash.hex(),
                keys_digest=monitor.pinned_keys,
                signer=sink.key_hex,
                simulated=attested.simulated,
                time=datetime.now(UTC).isoformat(),
            )
            out["deployment_log_index"] = log.append(Kind.SERVICE_DEPLOYMENT, entry).index
        _on_demand(stack, monitor.trigger)  # before the first heartbeat anyone could see
        monitor.start()
        stack.callback(monitor.stop)
        return out

    def on_untrusted(self, reason: str) -> None:
        self.public.close_gate(reason)
        err_console.print(f"service untrusted, traffic stopped: {reason}")


def _on_demand(stack: contextlib.ExitStack, trigger: Callable[[], None]) -> None:
    """SIGUSR1 re-attests now (on demand), not at the next period (`kill -USR1 PID`)."""
    if threading.current_thread() is not threading.main_thread():
        return  # signals reach the main thread only (e.g. the CLI embedded in a server)
    previous = signal.signal(signal.SIGUSR1, lambda signum, frame: trigger())
    stack.callback(signal.signal, signal.SIGUSR1, previous)


@service_app.command("watch")
def watch_cmd(
    url: UrlArg,
    policy: PolicyReq,
    every: Annotated[float, typer.Option("--every", help="seconds between heartbeats")],
    spec: SpecOpt = None,
    root: RootOpt = [],  # noqa: B006
    heartbeats: Annotated[
        Path | None,
        typer.Option("--heartbeats", help="write signed heartbeats here (a new JSONL file)"),
    ] = None,
    log_url: Annotated[
        str | None,
        typer.Option(
            "--log",
            help="Control plane URL: append every heartbeat to its transparency log "
            "(admin key: SEALROOM_API_KEY or `sealroom login`).",
        ),
    ] = None,
    count: Annotated[
        int | None, typer.Option("--count", min=1, help="stop after this many heartbeats")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Continuously attest a service you do not run (the owner's or a client's verifier):
    every --every seconds a fresh nonce, your policy and spec, a signed, chained heartbeat.
    Exits 2 if the latest heartbeat is not good (with --count, or when stopped)."""
    if every <= 0:
        raise InvalidInputError("--every must be > 0 seconds")
    log = LogClient(log_url, _admin_key()) if log_url is not None else None
    sink = HeartbeatSink(Ed25519PrivateKey.generate(), heartbeats, log, _show(as_json))
    client = _client(url, policy, spec, root)
    client.timeout = max(1.0, min(every, 30.0))
    monitor = AttestationMonitor(
        client, sink.signer, period=every, on_heartbeat=sink.write, publish=sink.publish
    )
    if as_json:  # one line, as `service run --json` prints it: read before any heartbeat
        sys.stdout.write(json.dumps({"url": client.url, "heartbeat_key": sink.key_hex}) + "\n")
        sys.stdout.flush()
    else:
        console.print(f"watching {client.url}; heartbeats signed by {sink.key_hex}")
    n = 0
    wake = threading.Event()
    with contextlib.ExitStack() as stack:
        stack.callback(sink.close)
        _on_demand(stack, wake.set)
        try:
            while count is None or n < count:
                if n:
                    wake.wait(every)
                    wake.clear()
                monitor.beat()
                n += 1
        except KeyboardInterrupt:
            pass
    if not monitor.trusted:
        raise AttestationError(
            f"continuous attestation failed: {monitor.untrusted_reason}",
            code="heartbeat-untrusted",
        )


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


HeartbeatsOpt = Annotated[
    Path | None,
    typer.Option("--heartbeats", help="signed heartbeat log (service run|watch --heartbeats)"),
]
HeartbeatKeyOpt = Annotated[
    str | None,
    typer.Option("--heartbeat-key", help="the heartbeat signer's Ed25519 key (hex)"),
]
MaxAgeOpt = Annotated[
    float | None,
    typer.Option(
        "--max-age",
        help="Refuse unless the latest heartbeat is good and at most this many seconds "
        "old (a lapsed continuous attestation).",
    ),
]
LogUrlOpt = Annotated[
    str | None,
    typer.Option("--log", help="Control plane URL: the latest heartbeat must be in its log."),
]
LogKeyOpt = Annotated[
    str | None,
    typer.Option("--log-key", help="The log's verifier key (from the operator), or a file."),
]
ScanOpt = Annotated[
    int,
    typer.Option(
        "--scan",
        min=1,
        help="With --log: log entries searched for a newer heartbeat of this signer "
        "(after the file's latest, or back from the end without --heartbeats).",
    ),
]


@dataclass(frozen=True)
class HeartbeatCheck:
    """What a client demands of a service's continuous attestation (docs/adr/0033)."""

    heartbeats: Path | None
    key: str | None
    max_age: float | None
    log_url: str | None
    log_key: str | None
    scan: int

    def __post_init__(self) -> None:
        if (self.log_url is None) != (self.log_key is None):
            raise InvalidInputError("--log and --log-key go together")
        if self.key is None and (self.heartbeats is not None or self.log_url is not None):
            raise InvalidInputError("--heartbeats and --log need --heartbeat-key (the signer)")
        if self.key is not None and self.heartbeats is None and self.log_url is None:
            raise InvalidInputError("--heartbeat-key: give --heartbeats FILE or --log URL")
        if self.max_age is not None and self.key is None:
            raise InvalidInputError("--max-age checks heartbeats: give --heartbeat-key")

    def run(
        self, attested: AttestedService
    ) -> tuple[dict[str, Any] | None, AttestationError | None]:
        """(what the heartbeats say, why they do not vouch for ``attested`` now or None)."""
        if self.key is None:
            return None, None
        keys = attested.keys.digest.hex()
        beats: dict[str, Any] = {}
        latest: dict[str, Any] | None = None
        if self.heartbeats is not None:
            beats, latest = read_heartbeats(self.heartbeats, self.key, keys)
        try:
            if self.log_url is not None and self.log_key is not None:
                with LogClient(self.log_url) as c:
                    vkey = load_vkey(self.log_key)
                    beats = heartbeats_in_log(c, vkey, self.key, keys, beats, latest, self.scan)
            return beats, heartbeat_problem(beats, self.max_age, datetime.now(UTC))
        except AttestationError as e:
            return beats, e


@service_app.command("verify")
def verify_cmd(
    url: UrlArg,
    policy: PolicyReq,
    spec: SpecOpt = None,
    root: RootOpt = [],  # noqa: B006
    heartbeats: HeartbeatsOpt = None,
    heartbeat_key: HeartbeatKeyOpt = None,
    max_age: MaxAgeOpt = None,
    log_url: LogUrlOpt = None,
    log_key: LogKeyOpt = None,
    scan: ScanOpt = 10_000,
    as_json: JsonOpt = False,
) -> None:
    """Fresh nonce -> evidence -> your policy; spec hash; the TLS key of THIS connection;
    with --heartbeats, the time of the last good heartbeat (continuous attestation), its
    age (--max-age) and its inclusion in the transparency log (--log, --log-key)."""
    check = HeartbeatCheck(heartbeats, heartbeat_key, max_age, log_url, log_key, scan)
    client = _client(url, policy, spec, root)
    try:
        attested = client.attest()
    finally:
        a = client.attested
        if a is not None and not as_json:
            render_result(a.appraisal)
    beats, problem = check.run(attested)
    if problem is not None and as_json:
        raise problem  # the JSON error carries the reason; never a verdict that reads ok
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
    verdict = "ACCEPTED" if problem is None else "REFUSED"
    table = Table(title=f"service {client.url}: {verdict}")
    for col in ("check", "verdict", "detail"):
        table.add_column(col)
    for row in verdict_rows(attested, client.url):
        table.add_row(*row)
    if beats is not None:
        table.add_row(
            "heartbeats",
            "last good: " + (beats["last_good"] or "never"),
            f"{beats['count']} signed; latest "
            + ("ok" if beats["latest_ok"] else f"UNTRUSTED ({beats['latest_reason']})")
            + (f"; {beats['age_seconds']:.0f} s old" if "age_seconds" in beats else "")
            + ("; the file is behind the log" if beats.get("behind_log") else ""),
        )
        if "log" in beats:
            table.add_row(
                "heartbeat logged",
                "ok",
                f"index {beats['log']['index']} in {beats['log']['origin']} "
                f"size {beats['log']['tree_size']}",
            )
    console.print(table)
    if problem is not None:
        raise problem


def heartbeat_problem(
    beats: dict[str, Any], max_age: float | None, now: datetime
) -> AttestationError | None:
    """Why the heartbeats do not vouch for the service now, or None."""
    if not beats["latest_ok"]:
        return AttestationError(
            f"continuous attestation failed: {beats['latest_reason']}", code="heartbeat-untrusted"
        )
    if max_age is not None:
        age = (now - datetime.fromisoformat(beats["latest_time"])).total_seconds()
        beats["age_seconds"] = age
        if age > max_age:
            return AttestationError(
                f"continuous attestation lapsed: the latest heartbeat is {age:.0f} s old, "
                f"--max-age is {max_age:g} s",
                code="heartbeat-lapsed",
            )
    return None


def heartbeats_in_log(
    c: LogClient,
    vkey: note.Verifier,
    key_hex: str,
    keys_digest: str,
    beats: dict[str, Any],
    latest: dict[str, Any] | None,
    scan: int,
) -> dict[str, Any]:
    """The heartbeats against the transparency log, under a checkpoint signed by the log
    key the verifier pinned. With a file (``latest`` is its last line): that heartbeat
    must be the log's entry at its ``log_index``, and a newer heartbeat of the same signer
    logged after it supersedes the file (a host serving a stale file, its failing tail
    cut, is caught). Without a file: the newest heartbeat of the signer in the log's last
    ``scan`` entries. Every entry read is proven to be the log's leaf first."""
    cp = open_checkpoint(c.checkpoint(), [vkey])
    signer = _ed25519(key_hex)
    if latest is not None:
        index = latest.get("log_index")
        if not isinstance(index, int) or not 0 <= index < cp.size:
            raise AttestationError(
                f"the latest heartbeat names no log index under the log's signed size "
                f"{cp.size} ({index!r}; service run without --log?)",
                code="heartbeat-not-logged",
            )
        entry = encode_entry(Kind.HEARTBEAT, heartbeat_log_payload(key_hex, latest["heartbeat"]))
        try:
            _prove(c, cp, index, entry)
        except AttestationError as e:
            raise AttestationError(
                f"the latest heartbeat is not the log's entry {index}: {e.message}",
                code="heartbeat-not-logged",
            ) from e
        beats["log"] = {"index": index, "tree_size": cp.size, "origin": cp.origin}
        after = range(index + 1, cp.size)
        if len(after) > scan:
            raise AttestationError(
                f"the log holds {len(after)} entries after the latest heartbeat, more than "
                f"--scan {scan}: cannot rule out a newer one",
                code="heartbeat-scan-limit",
            )
        seq = latest["heartbeat"]["payload"]["seq"]
        newer = [
            x for x in _signed_by(c, cp, signer, key_hex, after) if x[1]["payload"]["seq"] > seq
        ]
        if newer:
            i, signed = newer[-1]
            beats.update(_summary(signed["payload"], keys_digest), behind_log=True)
            beats["log"] = {"index": i, "tree_size": cp.size, "origin": cp.origin}
        return beats
    back = range(cp.size - 1, max(-1, cp.size - 1 - scan), -1)
    for i, signed in _signed_by(c, cp, signer, key_hex, back):
        out = _summary(signed["payload"], keys_digest)
        out["count"] = 1
        out["log"] = {"index": i, "tree_size": cp.size, "origin": cp.origin}
        return out
    raise AttestationError(
        f"no heartbeat signed by {key_hex[:16]}… in the log's last {len(back)} entries",
        code="heartbeat-not-logged",
    )


def _prove(c: LogClient, cp: Checkpoint, index: int, entry: bytes) -> None:
    verify_inclusion(leaf_hash(entry), index, cp.size, c.inclusion(index, cp.size), cp.root_hash)


def _signed_by(
    c: LogClient, cp: Checkpoint, signer: Ed25519PublicKey, key_hex: str, indexes: range
) -> Iterator[tuple[int, dict[str, Any]]]:
    """The heartbeats of ``signer`` at ``indexes``, each entry proven to be the log's leaf
    (a log cannot hide one behind an entry it did not sign into the tree)."""
    for i in indexes:
        data = c.entry(i)
        _prove(c, cp, i, data)
        kind, payload = decode_entry(data)
        if kind != Kind.HEARTBEAT or payload.get("signer") != key_hex:
            continue
        try:
            verify_signed_json(payload.get("heartbeat"), signer, HEARTBEAT_DOMAIN)
        except SealroomError:
            continue  # appended by someone naming this signer without its signature
        yield i, payload["heartbeat"]


def _ed25519(key_hex: str) -> Ed25519PublicKey:
    try:
        return Ed25519PublicKey.from_public_bytes(bytes.fromhex(key_hex))
    except ValueError as e:
        raise InvalidInputError(f"--heartbeat-key is not an Ed25519 key: {e}") from e


def _summary(latest: dict[str, Any], keys_digest: str) -> dict[str, Any]:
    ok = bool(latest["ok"]) and latest.get("keys_digest") == keys_digest
    return {
        "latest_ok": ok,
        "latest_reason": latest.get("reason") or "for other enclave keys",
        "latest_time": latest["time"],
        "last_good": latest["time"] if ok else None,
    }


def read_heartbeats(
    path: Path, key_hex: str, keys_digest: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Verify a heartbeat log: every record signed by ``key_hex``, chained by ``prev``;
    the last good one for these enclave keys and the latest one (summary, latest line)."""
    key = _ed25519(key_hex)
    prev = ""
    last_good: str | None = None
    latest: dict[str, Any] | None = None
    latest_line: dict[str, Any] = {}
    count = 0
    for n, text in enumerate(read_input(str(path), "heartbeats").splitlines(), 1):
        if not text.strip():
            continue
        try:
            line = json.loads(text)
            signed = line["heartbeat"]
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
        latest, latest_line = payload, line
        if record.ok and record.keys_digest == keys_digest:
            last_good = record.time
    if latest is None:
        raise InvalidInputError(f"{path}: no heartbeats")
    return {**_summary(latest, keys_digest), "count": count, "last_good": last_good}, latest_line


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
    heartbeats: HeartbeatsOpt = None,
    heartbeat_key: HeartbeatKeyOpt = None,
    max_age: MaxAgeOpt = None,
    log_url: LogUrlOpt = None,
    log_key: LogKeyOpt = None,
    scan: ScanOpt = 10_000,
) -> None:
    """Verify the service (and, with --heartbeat-key, its continuous attestation: the
    same checks as `service verify`), then make one request over a connection pinned to
    its key. Nothing is sent to a service that fails any check."""
    check = HeartbeatCheck(heartbeats, heartbeat_key, max_age, log_url, log_key, scan)
    client = _client(url, policy, spec, root)
    attested = client.attest()
    _, problem = check.run(attested)
    if problem is not None:
        raise problem
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

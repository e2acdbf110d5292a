"""`sealroom up|down|login`, `sealroom computation ...`, `sealroom host ...`."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from sealroom import paths
from sealroom.cli import stack as stack_mod
from sealroom.cli.common import (
    console,
    print_json,
    read_input,
    render_run_log,
    simulated_banner,
)
from sealroom.cli.enclave_cmd import load_party, show_failed_run, trusted_roots
from sealroom.client.controlplane import ControlPlaneClient, load_config, save_config
from sealroom.errors import ConflictError, InvalidInputError, NotFoundError, RunFailedError
from sealroom.manifest import Manifest
from sealroom.protocol.api import ComputationCreated, ComputationDetail, EventOut
from sealroom.protocol.enclave import filled_slots, slot_names

# what a result download answers before the run ended and its receipt was stored
_NOT_YET = ("computation-not-completed", "blob-not-found")

computation_app = typer.Typer(help="Computations on the control plane.", no_args_is_help=True)
host_app = typer.Typer(help="Host agents.", no_args_is_help=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
DataDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--data-dir", help="Where the stack keeps its state (default: SEALROOM_HOME/stack)."
    ),
]


def _data_dir(d: Path | None) -> Path:
    return d or paths.stack_dir()


def up_cmd(
    data_dir: DataDirOpt = None,
    port: Annotated[int | None, typer.Option("--port", help="Control plane port.")] = None,
    agents: Annotated[int, typer.Option("--agents", help="Host agents to start.")] = 1,
    tls: Annotated[
        bool,
        typer.Option(
            "--tls", help="HTTPS with a self-signed certificate the CLI pins (fingerprint shown)."
        ),
    ] = False,
    enclave_listen: Annotated[
        str | None,
        typer.Option(
            "--enclave-listen",
            help="Address the agents' enclave endpoints listen on (agent run --listen), "
            "e.g. 127.0.0.2 to stand for another machine.",
        ),
    ] = None,
    enclave_advertise: Annotated[
        str | None,
        typer.Option("--enclave-advertise", help="... and the address parties are told."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Start a control plane, host agents and the sim TEE on 127.0.0.1 (SQLite)."""
    s = stack_mod.up(
        _data_dir(data_dir),
        port=port,
        agents=agents,
        tls=tls,
        enclave_listen=enclave_listen,
        enclave_advertise=enclave_advertise,
    )
    fp = stack_mod.tls_fingerprint(s)
    if as_json:
        print_json(
            {
                "url": s.url,
                "admin_key": s.admin_key,
                "data_dir": s.data_dir,
                "kbs_url": s.kbs_url,
                "tls_sha256": fp,
            }
        )
        return
    simulated_banner()
    console.print(
        f"control plane: [bold]{s.url}[/]  (API docs: {s.url}/docs, dashboard: {s.url}/ui)"
    )
    if fp:
        console.print(f"TLS certificate SHA-256: [bold]{fp}[/]  (pinned by this CLI)")
    console.print(
        f"admin API key: [bold]{s.admin_key}[/]  (saved for this CLI in "
        f"{paths.cli_config()}, mode 0600)"
    )
    console.print(f"host agents: {len(s.agent_pids)}; logs in {s.data_dir}/logs")
    if s.kbs_url:
        console.print(
            f"key broker (Trustee KBS 0.4.0) + attestation service: [bold]{s.kbs_url}[/]  "
            f"(admin key: {s.data_dir}/kbs/admin.key)"
        )
    console.print(
        "next: `sealroom host list`, `sealroom computation create manifest.json`, `sealroom down`"
    )


def down_cmd(data_dir: DataDirOpt = None) -> None:
    """Stop the local stack started by `sealroom up` (enclaves are stopped and wiped)."""
    if stack_mod.down(_data_dir(data_dir)):
        console.print("stack stopped")
    else:
        console.print("no running stack")


def _log_line(component: str, line: str, as_json: bool, computation: str | None) -> str | None:
    """One line of a stack process's log, shown as the operator reads it. Lines are the
    control plane's and agents' JSON records (public lifecycle facts; the sealed run log
    never reaches them) or, rarely, plain text a process printed."""
    try:
        rec = json.loads(line)
    except ValueError:
        rec = None
    if not isinstance(rec, dict):
        if computation is not None and computation not in line:
            return None
        return (
            json.dumps({"component": component, "text": line})
            if as_json
            else (f"{component:<13} {line}")
        )
    if computation is not None and rec.get("computation_id") != computation:
        return None
    if as_json:
        return json.dumps({"component": component, **rec})
    extra = " ".join(
        f"{k}={v}" for k, v in rec.items() if k not in ("time", "level", "logger", "message")
    )
    when = str(rec.get("time", ""))[:19]
    return f"{component:<13} {when} {rec.get('level', ''):<7} {rec.get('message', '')} {extra}"


def logs_cmd(
    component: Annotated[
        str | None,
        typer.Argument(help="controlplane, agent-N or kbs (default: all of them)."),
    ] = None,
    lines: Annotated[int, typer.Option("-n", "--lines", help="Last N lines of each.")] = 50,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing.")] = False,
    computation: Annotated[
        str | None, typer.Option("--computation", help="Only lines about this computation.")
    ] = None,
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The logs of the stack `sealroom up` runs (operator): what the control plane, the
    host agents and the key broker record. They hold public lifecycle facts only; what an
    algorithm prints is sealed to its parties (`sealroom computation log`)."""
    logs = _data_dir(data_dir) / "logs"
    files = sorted(logs.glob("*.log")) if logs.is_dir() else []
    names = [f.stem for f in files]
    if component is not None:
        if component not in names:
            raise NotFoundError(
                f"no log named {component!r} in {logs} (have: {', '.join(names) or 'none'})",
                code="log-not-found",
            )
        files = [logs / f"{component}.log"]
    if not files:
        raise NotFoundError(f"no stack logs in {logs}; start one with `sealroom up`")
    offsets: dict[Path, int] = {}
    for f in files:
        data = f.read_bytes()
        data = data[: data.rfind(b"\n") + 1]  # a line being written is shown when complete
        offsets[f] = len(data)
        tail = data.decode(errors="replace").splitlines()
        shown = [
            out
            for line in tail
            if line.strip() and (out := _log_line(f.stem, line, as_json, computation)) is not None
        ]
        for out in shown[-lines:] if lines > 0 else []:
            typer.echo(out)
    while follow:
        time.sleep(0.5)
        for f in files:
            size = f.stat().st_size
            if size < offsets[f]:
                offsets[f] = 0  # truncated or replaced: read it again from the start
            if size == offsets[f]:
                continue
            with f.open("rb") as fh:
                fh.seek(offsets[f])
                chunk = fh.read()
            complete = chunk[: chunk.rfind(b"\n") + 1]  # a line being written waits
            offsets[f] += len(complete)
            for line in complete.decode(errors="replace").splitlines():
                if line.strip() and (out := _log_line(f.stem, line, as_json, computation)):
                    typer.echo(out)
                    sys.stdout.flush()


def login_cmd(
    url: Annotated[str, typer.Argument(help="Control plane URL")],
    ca_cert: Annotated[
        Path | None,
        typer.Option(
            "--ca-cert",
            help="Trust exactly this certificate for an https URL (the operator's "
            "tls.crt; compare its fingerprint with the one `sealroom up --tls` printed).",
        ),
    ] = None,
) -> None:
    """Save the control plane URL and an API key for this CLI (0600). The key is read
    from a hidden prompt, or from standard input (`sealroom login URL < keyfile`); never
    from the command line, where `ps` and shell history would show it."""
    tty = sys.stdin.isatty()
    key = (typer.prompt("API key", hide_input=True) if tty else sys.stdin.readline()).strip()
    if not key:
        raise InvalidInputError("no API key given on standard input or at the prompt")
    client = ControlPlaneClient(url, key, ca_cert=ca_cert)
    me = client.me()
    path = save_config(url, key, ca_cert)
    console.print(f"logged in as {me.name} ({me.role}); saved to {path}")


def _client() -> ControlPlaneClient:
    return ControlPlaneClient.from_config()


def _table(rows: Sequence[Mapping[str, Any]], cols: list[str], title: str) -> None:
    t = Table(title=title)
    for c in cols:
        t.add_column(c, overflow="fold")
    for r in rows:
        t.add_row(*("" if r.get(c) is None else str(r.get(c)) for c in cols))
    console.print(t)


@computation_app.command("create")
def create_cmd(
    manifest: Annotated[Path, typer.Argument(help="Manifest JSON")],
    tee: Annotated[str, typer.Option("--tee", help="sim | snp | tdx")] = "sim",
    queue: Annotated[
        bool, typer.Option("--queue", help="Wait for capacity instead of 429.")
    ] = False,
    wait: Annotated[
        float, typer.Option("--wait", help="Wait up to N s for the enclave to take inputs.")
    ] = 0.0,
    as_json: JsonOpt = False,
) -> None:
    """Create a computation (validated and hashed by the control plane too)."""
    try:
        doc = json.loads(read_input(str(manifest), "manifest"))
    except ValueError as e:
        raise InvalidInputError(f"{manifest} is not JSON: {e}") from e
    local = Manifest.from_dict(doc, str(manifest))
    client = _client()
    created = client.create_computation(doc, tee=tee, queue=queue)
    if created.manifest_hash != local.manifest_hash.hex():
        raise InvalidInputError(
            f"the control plane computed manifest hash {created.manifest_hash}, we computed "
            f"{local.manifest_hash.hex()}"
        )
    comp: ComputationCreated | ComputationDetail = created
    if wait > 0:
        comp = client.wait_for(created.id, ("awaiting_inputs",), wait)
    if as_json:
        print_json(comp.model_dump(mode="json"))
        return
    if tee == "sim":
        simulated_banner()
    console.print(
        f"computation [bold]{comp.id}[/] {comp.state.value} on host "
        f"{comp.host_id}; manifest {comp.manifest_hash}"
    )
    url = getattr(comp, "enclave_url", None)
    if url:
        console.print(
            f"enclave: {url}  (verify it: `sealroom enclave verify {url} --manifest {manifest}`)"
        )


@computation_app.command("list")
def list_cmd(as_json: JsonOpt = False) -> None:
    """Your computations (admins: all)."""
    rows = [c.model_dump(mode="json") for c in _client().computations()]
    if as_json:
        print_json(rows)
    else:
        _table(rows, ["id", "name", "status", "host_id", "enclave_url"], "computations")


@computation_app.command("show")
def show_cmd(
    cid: Annotated[str, typer.Argument(help="Computation id")], as_json: JsonOpt = False
) -> None:
    client = _client()
    detail = client.computation(cid)
    names = slot_names(detail.manifest)
    filled = filled_slots(((e.type, e.message) for e in client.events(cid)), names)
    comp = detail.model_dump(mode="json")
    slots = [{"name": n, "filled": n in filled} for n in names]
    if as_json:
        print_json({**comp, "slots": slots})
        return
    if detail.tee == "sim":
        simulated_banner()
    for k, v in comp.items():
        if k in ("manifest", "outcome"):
            continue
        console.print(f"[cyan]{k}[/]: {v}", markup=True, highlight=False)
    console.print("[cyan]slots[/]:")
    for sl in slots:
        mark = "[green]filled[/]" if sl["filled"] else "[yellow]waiting[/]"
        console.print(f"  {sl['name']}: {mark}")


@computation_app.command("status")
def status_cmd(
    cid: Annotated[str, typer.Argument(help="Computation id")],
    manifest: Annotated[Path, typer.Option("--manifest", help="YOUR copy of the manifest")],
    key: Annotated[str, typer.Option("--key", help="Your key as the manifest names it")],
    url: Annotated[
        str | None,
        typer.Option("--control-plane", help="Control plane URL (default: the saved one)"),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """A computation's public state for a party its manifest names (a data or algorithm
    provider, a consumer, a log reader): signed with your key, no account needed."""
    m = Manifest.load(manifest)
    client = ControlPlaneClient(url) if url else ControlPlaneClient(load_config()[0])
    view = client.party_view(cid, m, load_party(key))
    if view.manifest_hash != m.manifest_hash.hex():
        raise InvalidInputError(
            f"computation {cid} runs manifest {view.manifest_hash}, not yours "
            f"({m.manifest_hash.hex()})",
            code="manifest-mismatch",
        )
    if as_json:
        print_json(view.model_dump(mode="json"))
        return
    console.print(f"{view.id}: {view.status}", markup=False)
    console.print(f"enclave: {view.enclave_url or 'none yet'}", markup=False)
    for sl in view.slots:
        console.print(f"  {sl.name}: {'filled' if sl.filled else 'waiting'}", markup=False)
    console.print(f"receipt: {'stored' if view.receipt else 'not yet'}", markup=False)


@computation_app.command("events")
def events_cmd(
    cid: Annotated[str, typer.Argument(help="Computation id")],
    follow: Annotated[bool, typer.Option("--follow", help="Until the computation ends.")] = False,
    as_json: JsonOpt = False,
) -> None:
    client = _client()
    if follow:
        client.wait_for(cid, (), 24 * 3600, on_event=lambda e: _print_event(e, as_json))
        return
    for e in client.events(cid):
        _print_event(e, as_json)


def _print_event(ev: EventOut, as_json: bool) -> None:
    e = ev.model_dump(mode="json")
    if as_json:
        typer.echo(json.dumps(e))
    else:
        console.print(
            f"{e.get('seq'):>4} {e.get('time', '')[:19]} {e.get('type', '')} "
            f"{e.get('state', '') or ''} {e.get('reason') or e.get('message') or ''}",
            markup=False,
        )


@computation_app.command("cancel")
def cancel_cmd(cid: Annotated[str, typer.Argument(help="Computation id")]) -> None:
    client = _client()
    client.cancel(cid)
    console.print(f"{cid}: {client.computation(cid).status}")


@computation_app.command("delete")
def delete_cmd(cid: Annotated[str, typer.Argument(help="Computation id")]) -> None:
    _client().delete(cid)
    console.print(f"{cid}: deleted")


@computation_app.command("result")
def result_cmd(
    cid: Annotated[str, typer.Argument(help="Computation id")],
    manifest: Annotated[Path, typer.Option("--manifest", help="YOUR copy of the manifest")],
    key: Annotated[str, typer.Option("--key", help="Your consumer key (name or file)")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Directory for the results")],
    receipt_out: Annotated[
        Path | None, typer.Option("--receipt", help="Save the receipt here too.")
    ] = None,
    wait: Annotated[
        float, typer.Option("--wait", help="Wait up to N s for the run and its receipt.")
    ] = 0.0,
    root: Annotated[list[Path], typer.Option("--root", help="Extra trusted root.")] = [],  # noqa: B006
    as_json: JsonOpt = False,
) -> None:
    """Fetch your sealed result from the control plane's blob store; verify the receipt
    against your own manifest and policy; decrypt into OUT. On a failed run: print the
    run log sealed to you, then fail with `failed: <reason>` (exit status 5)."""
    m = Manifest.load(manifest)
    client, party = _client(), load_party(key)
    deadline = time.monotonic() + wait

    def save_receipt() -> dict[str, Any]:
        """The receipt's exact bytes to --receipt (its log proof beside it, if logged)."""
        raw, proof = client.receipt_bytes(cid, m, party)
        assert receipt_out is not None
        receipt_out.write_bytes(raw)
        if proof is not None:
            Path(f"{receipt_out}.tlog-proof").write_text(proof)
        doc: dict[str, Any] = json.loads(raw)
        return doc

    while True:
        try:
            receipt = client.fetch_result(cid, m, party, out, extra_roots=trusted_roots(root))
            break
        except RunFailedError as e:
            if receipt_out is not None:
                save_receipt()
            show_failed_run(e, as_json)
            raise
        except (NotFoundError, ConflictError) as e:
            # the run is not over, or its receipt is not stored yet: results exist as soon
            # as it is
            if e.code not in _NOT_YET or time.monotonic() >= deadline:
                raise
            time.sleep(0.5)
    if receipt_out is not None:
        save_receipt()
    if as_json:
        print_json(
            {"out": str(out), "simulated": receipt.simulated, "exit": receipt.payload["exit"]}
        )
        return
    if receipt.simulated:
        simulated_banner()
    console.print(f"[green]result decrypted[/] into {out}; receipt verified")


@computation_app.command("receipt")
def receipt_cmd(
    cid: Annotated[str, typer.Argument(help="Computation id")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Where to save the receipt")],
    manifest: Annotated[
        Path | None, typer.Option("--manifest", help="YOUR copy of the manifest (with --key)")
    ] = None,
    key: Annotated[
        str | None, typer.Option("--key", help="Download as this consumer or log reader")
    ] = None,
) -> None:
    """Save the receipt exactly as the enclave signed it, and beside it OUT.tlog-proof: its
    inclusion proof and the log's signed checkpoint (`sealroom log verify OUT`)."""
    if (manifest is None) != (key is None):
        raise InvalidInputError("--manifest and --key go together")
    m = Manifest.load(manifest) if manifest is not None else None
    party = load_party(key) if key is not None else None
    raw, proof = _client().receipt_bytes(cid, m, party)
    out.write_bytes(raw)
    if proof is None:
        console.print(f"receipt saved to {out}; [yellow]the transparency log does not hold it[/]")
        return
    Path(f"{out}.tlog-proof").write_text(proof)
    console.print(f"receipt saved to {out}, its log proof to {out}.tlog-proof")


@computation_app.command("log")
def log_cmd(
    cid: Annotated[str, typer.Argument(help="Computation id")],
    manifest: Annotated[Path, typer.Option("--manifest", help="YOUR copy of the manifest")],
    key: Annotated[str, typer.Option("--key", help="Your key (a consumer or log reader)")],
    root: Annotated[list[Path], typer.Option("--root", help="Extra trusted root.")] = [],  # noqa: B006
) -> None:
    """Fetch the run log sealed to you from the blob store, verify the receipt against
    your own manifest and policy, decrypt and show it."""
    m = Manifest.load(manifest)
    receipt, log = _client().fetch_log(cid, m, load_party(key), extra_roots=trusted_roots(root))
    if receipt.simulated:
        simulated_banner()
    render_run_log(log)
    if not receipt.ok:
        raise RunFailedError(f"failed: {receipt.payload['exit']['reason']}", log=log)


@host_app.command("list")
def hosts_cmd(as_json: JsonOpt = False) -> None:
    """Registered host agents (admin)."""
    hosts = [h.model_dump(mode="json") for h in _client().hosts()]
    if as_json:
        print_json(hosts)
        return
    # "sim (verified)" only where the control plane verified evidence from the host;
    # "snp (claimed)" is the host's word
    rows = [
        {
            **h,
            "tee": ", ".join(h.get("tee") or ()),
            **{f"res.{k}": v for k, v in h.get("resources", {}).items()},
        }
        for h in hosts
    ]
    _table(
        rows,
        [
            "id",
            "name",
            "state",
            "draining",
            "tee",
            "res.cpu_total",
            "res.cpu_used",
            "res.memory_mb_total",
            "res.memory_mb_used",
            "enclaves",
            "last_heartbeat",
        ],
        "hosts",
    )


@host_app.command("drain")
def drain_cmd(
    host: Annotated[str, typer.Argument(help="Host id or name")],
    undo: Annotated[bool, typer.Option("--undo", help="Place computations there again.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Place no new computation on HOST; what runs there finishes (admin). Then `sealroom
    host remove HOST` once `host list` shows 0 enclaves."""
    h = _client().drain_host(host, not undo)
    if as_json:
        print_json(h.model_dump(mode="json"))
        return
    console.print(f"host {h.name} ({h.id}): {'draining' if h.draining else 'accepting work'}")


@host_app.command("remove")
def remove_cmd(
    host: Annotated[str, typer.Argument(help="Host id or name")],
    as_json: JsonOpt = False,
) -> None:
    """Forget HOST and revoke its agent's credential (admin); refused while computations
    are live on it (drain it first, or cancel them)."""
    h = _client().remove_host(host)
    if as_json:
        print_json(h.model_dump(mode="json"))
        return
    console.print(f"host {h.name} ({h.id}): removed; its agent's credential no longer works")


@host_app.command("join-token")
def join_token_cmd() -> None:
    """A one-time token for `sealroom agent run --join-token-file` (admin)."""
    typer.echo(_client().join_token())

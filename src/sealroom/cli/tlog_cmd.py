"""`sealroom log verify|witness`: check the transparency log offline, with a log key the
verifier names (docs/adr/0030, 0031). `sealroom run-log` is the sealed run log."""

from __future__ import annotations

import base64
import binascii
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from sealroom.cli.common import console, print_json, read_input
from sealroom.client.tlog import LogClient
from sealroom.errors import AttestationError, InvalidInputError
from sealroom.tlog import note
from sealroom.tlog.checkpoint import Checkpoint, open_checkpoint
from sealroom.tlog.entries import receipt_entry
from sealroom.tlog.merkle import leaf_hash, verify_consistency, verify_inclusion
from sealroom.tlog.proof import TlogProof

log_app = typer.Typer(
    help="Check the transparency log: a receipt's inclusion, two checkpoints' consistency.",
    no_args_is_help=True,
)

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
LogKeyOpt = Annotated[
    str,
    typer.Option(
        "--log-key",
        help="The log's verifier key (name+id+key, from the operator), or a file holding it.",
    ),
]
OriginOpt = Annotated[
    str | None,
    typer.Option("--origin", help="The log origin you expect (default: the key's name)."),
]
LogUrlOpt = Annotated[
    str | None,
    typer.Option("--log", help="The control plane URL, to fetch a proof the files lack."),
]


def load_vkey(value: str) -> note.Verifier:
    """A vkey string, or a file holding one (the verifier's own trust input)."""
    text = value
    if "+" not in value or Path(value).is_file():
        text = read_input(value, "log key").decode("utf-8", "replace")
    return note.Verifier.parse(text.strip())


def _open(path: Path, v: note.Verifier, origin: str | None) -> Checkpoint:
    return open_checkpoint(read_input(str(path), "checkpoint"), [v], origin)


def _table(title: str, rows: list[tuple[str, str]]) -> None:
    t = Table(title=title)
    t.add_column("field")
    t.add_column("value", overflow="fold")
    for k, val in rows:
        t.add_row(k, val)
    console.print(t)


@log_app.command("verify")
def verify_cmd(
    receipt: Annotated[Path, typer.Argument(help="Receipt JSON (as downloaded)")],
    log_key: LogKeyOpt,
    proof: Annotated[
        Path | None,
        typer.Option("--proof", help="Its tlog-proof (default: RECEIPT.tlog-proof)"),
    ] = None,
    checkpoint: Annotated[
        Path | None,
        typer.Option(
            "--checkpoint",
            help="Check inclusion in this (e.g. newer, witnessed) checkpoint; a proof for "
            "its size is fetched from --log unless it is the proof's own.",
        ),
    ] = None,
    log_url: LogUrlOpt = None,
    origin: OriginOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Check that RECEIPT is in the log: the leaf is recomputed from the receipt, the
    checkpoint's signature checked with --log-key, the inclusion proof against its root."""
    v = load_vkey(log_key)
    leaf = leaf_hash(receipt_entry(read_input(str(receipt), "receipt")))
    p = TlogProof.parse(read_input(str(proof or Path(f"{receipt}.tlog-proof")), "tlog proof"))
    cp = p.verify(leaf, [v], origin)
    if checkpoint is not None:
        target = _open(checkpoint, v, origin or cp.origin)
        if target.size == cp.size:
            if target.root_hash != cp.root_hash:
                raise AttestationError(
                    f"two different roots for tree size {cp.size}: the log forked",
                    code="tlog-proof-invalid",
                )
        else:
            if log_url is None:
                raise InvalidInputError(
                    f"checkpoint has size {target.size}, the proof is for {cp.size}: "
                    "give --log URL to fetch a proof for that size",
                    code="tlog-proof-missing",
                )
            with LogClient(log_url) as c:
                hashes = c.inclusion(p.index, target.size)
            verify_inclusion(leaf, p.index, target.size, hashes, target.root_hash)
        cp = target
    facts = {
        "origin": cp.origin,
        "tree_size": cp.size,
        "index": p.index,
        "leaf_hash": leaf.hex(),
        "root_hash": base64.b64encode(cp.root_hash).decode(),
        "included": True,
    }
    if as_json:
        print_json(facts)
        return
    _table("receipt is in the log", [(k, str(val)) for k, val in facts.items()])


def _read_hashes(path: Path) -> list[bytes]:
    lines = [x for x in read_input(str(path), "proof").decode().split("\n") if x.strip()]
    try:
        return [base64.b64decode(x.strip(), validate=True) for x in lines]
    except binascii.Error as e:
        raise InvalidInputError(f"{path}: a proof hash is not base64: {e}") from e


@log_app.command("witness")
def witness_cmd(
    old: Annotated[Path, typer.Argument(help="The older checkpoint (one you trusted)")],
    new: Annotated[Path, typer.Argument(help="The newer checkpoint")],
    log_key: LogKeyOpt,
    proof: Annotated[
        Path | None,
        typer.Option("--proof", help="Consistency proof file: base64 hashes, one a line"),
    ] = None,
    log_url: LogUrlOpt = None,
    origin: OriginOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Check that NEW extends OLD (RFC 9162 consistency): both signed by --log-key, for one
    origin, the proof from --proof or fetched from --log. A fork or rewrite exits 2."""
    v = load_vkey(log_key)
    a = _open(old, v, origin)
    b = _open(new, v, origin or a.origin)
    if proof is not None:
        hashes = _read_hashes(proof)
    elif a.size in (0, b.size) or a.size > b.size:
        hashes = []
    elif log_url is not None:
        with LogClient(log_url) as c:
            hashes = c.consistency(a.size, b.size)
    else:
        raise InvalidInputError(
            "give --proof FILE or --log URL for the consistency proof", code="tlog-proof-missing"
        )
    verify_consistency(a.size, b.size, a.root_hash, b.root_hash, hashes)
    facts = {"origin": a.origin, "old_size": a.size, "new_size": b.size, "consistent": True}
    if as_json:
        print_json(facts)
        return
    _table("checkpoints are consistent", [(k, str(val)) for k, val in facts.items()])


@log_app.command("checkpoint")
def checkpoint_cmd(
    log_url: Annotated[str, typer.Option("--log", help="The control plane URL")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Where to save the checkpoint")],
    log_key: Annotated[
        str | None, typer.Option("--log-key", help="Verify it with this key before saving")
    ] = None,
) -> None:
    """Fetch the log's current signed checkpoint (to witness it later)."""
    with LogClient(log_url) as c:
        data = c.checkpoint()
    if log_key is not None:
        cp = open_checkpoint(data, [load_vkey(log_key)])
        console.print(f"checkpoint {cp.origin} size {cp.size}: signature verified")
    out.write_bytes(data)


@log_app.command("publish-measurement")
def publish_measurement_cmd(
    name: Annotated[str, typer.Option("--name", help="What is measured, e.g. sealroom-runtime")],
    tee: Annotated[str, typer.Option("--tee", help="sim, snp, tdx, tpm or nvidia")],
    measurement: Annotated[str, typer.Option("--measurement", help="Hex, 32 to 64 bytes")],
    version: Annotated[str, typer.Option("--version", help="Release or build")] = "",
    source: Annotated[str, typer.Option("--source", help="Where to reproduce it")] = "",
) -> None:
    """Operator (admin): log a runtime measurement this deployment offers, so anyone can
    check later that an enclave's measurement was published (public facts only)."""
    from pydantic import ValidationError

    from sealroom.client.controlplane import ControlPlaneClient
    from sealroom.protocol.tlog import RuntimeMeasurementIn

    try:
        body = RuntimeMeasurementIn(
            name=name, tee=tee, measurement=measurement.lower(), version=version, source=source
        )
    except ValidationError as e:
        first = e.errors()[0]
        raise InvalidInputError(f"{first['loc'][0]}: {first['msg']}") from e
    out = ControlPlaneClient.from_config().publish_measurement(body)
    console.print(f"logged at index {out.index} (leaf {out.leaf_hash})")

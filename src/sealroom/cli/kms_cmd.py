"""``sealroom kms``: versioned keys under a KEK, the audit trail, lockdown and its lift.

Works on a KMS data directory (``--data-dir``, default ``$SEALROOM_HOME/kms``; the key
broker serves from the same directory). Admin keys are sealroom party keys
(``sealroom keys new NAME``): ``--as NAME`` signs a lockdown order or a lift signature
with that party's Ed25519 key.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from sealroom.cli.common import home_dir, print_json, read_input
from sealroom.crypto.keys import PartyKeys, key_path
from sealroom.errors import InvalidInputError
from sealroom.kms import KeyManager, Lockdowns, Pkcs11Config, Scope
from sealroom.kms.audit import load_head, verify_log
from sealroom.kms.lockdown import lift_signature, lockdown_order
from sealroom.kms.stop import ControlPlaneStopper

kms_app = typer.Typer(
    help="Key manager: versioned keys, audit trail, lockdown.", no_args_is_help=True
)
key_app = typer.Typer(
    help="Keys with versions (create, rotate, revoke, list, destroy).", no_args_is_help=True
)
audit_app = typer.Typer(help="The hash-chained audit trail.", no_args_is_help=True)
kms_app.add_typer(key_app, name="key")
kms_app.add_typer(audit_app, name="audit")

DataDir = Annotated[
    Path | None,
    typer.Option("--data-dir", help="KMS data directory (default $SEALROOM_HOME/kms)."),
]
Actor = Annotated[str, typer.Option("--actor", help="Who acts (recorded in the audit trail).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def _dir(data_dir: Path | None) -> Path:
    return data_dir if data_dir is not None else home_dir() / "kms"


def _km(data_dir: Path | None) -> KeyManager:
    return KeyManager(_dir(data_dir))


def _admin(spec: str) -> tuple[str, str]:
    name, sep, hexkey = spec.partition("=")
    if not sep:
        hexkey = PartyKeys.load(key_path(name)).public.ed25519.hex()
    try:
        if len(bytes.fromhex(hexkey)) != 32:
            raise ValueError
    except ValueError as e:
        raise InvalidInputError(f"--admin {spec!r}: want NAME or NAME=ED25519_HEX") from e
    return name, hexkey


@kms_app.command("init")
def init_cmd(
    data_dir: DataDir = None,
    admin: Annotated[
        list[str] | None,
        typer.Option("--admin", help="Admin key: a local party NAME or NAME=ED25519_HEX (repeat)."),
    ] = None,
    quorum: Annotated[int, typer.Option(help="Admins needed to lift a lockdown.")] = 1,
    pkcs11_module: Annotated[
        str | None, typer.Option(help="PKCS#11 module (e.g. SoftHSM2's libsofthsm2.so).")
    ] = None,
    pkcs11_token: Annotated[str | None, typer.Option(help="PKCS#11 token label.")] = None,
    pkcs11_pin_file: Annotated[
        str | None,
        typer.Option(help="0600 file with the user PIN (else $SEALROOM_KMS_PKCS11_PIN)."),
    ] = None,
) -> None:
    """Create a KMS: first KEK (a 0600 file, or non-extractable in a PKCS#11 token)."""
    pk = None
    if pkcs11_module or pkcs11_token:
        if not (pkcs11_module and pkcs11_token):
            raise InvalidInputError("--pkcs11-module and --pkcs11-token go together")
        pk = Pkcs11Config(pkcs11_module, pkcs11_token, pin_file=pkcs11_pin_file)
    admins = dict(_admin(a) for a in admin or [])
    km = KeyManager.init(_dir(data_dir), pkcs11=pk, admins=admins, quorum=quorum)
    typer.echo(
        f"KMS in {km.directory}: KEK {km.kek_label} ({km.backend.name}), "
        f"{len(admins)} admin(s), lift quorum {km.quorum if admins else '-'}"
    )


@key_app.command("create")
def create_cmd(
    key_id: str,
    account: Annotated[str, typer.Option(help="Owning account.")],
    data_dir: DataDir = None,
    actor: Actor = "operator",
) -> None:
    """Create a key (version 1 is the primary)."""
    info = _km(data_dir).create(key_id, account=account, actor=actor)
    typer.echo(f"key {info.key_id} created, primary v{info.primary}")


@key_app.command("rotate")
def rotate_cmd(key_id: str, data_dir: DataDir = None, actor: Actor = "operator") -> None:
    """Add a version and make it the primary (older versions stay releasable)."""
    info = _km(data_dir).rotate(key_id, actor=actor)
    typer.echo(f"key {info.key_id}: primary is now v{info.primary}")


@key_app.command("revoke")
def revoke_cmd(
    key_id: str,
    version: int,
    data_dir: DataDir = None,
    actor: Actor = "operator",
    rotate: Annotated[
        bool, typer.Option("--rotate", help="Allow revoking the primary (a new primary is made).")
    ] = False,
) -> None:
    """Revoke one version: it is never released again."""
    info = _km(data_dir).revoke(key_id, version, actor=actor, rotate_primary=rotate)
    typer.echo(f"key {info.key_id} v{version} revoked; primary v{info.primary}")


@key_app.command("list")
def list_cmd(data_dir: DataDir = None, json_out: JsonOpt = False) -> None:
    """Keys, their versions and states."""
    keys = _km(data_dir).list()
    if json_out:
        print_json([k.to_dict() for k in keys])
        return
    for k in keys:
        states = ", ".join(f"v{v.version} {v.state}" for v in k.versions)
        primary = f"primary v{k.primary}" if k.primary else "destroyed"
        typer.echo(f"{k.key_id}  account={k.account}  {primary}  [{states}]")


@key_app.command("destroy")
def destroy_cmd(
    key_id: str,
    data_dir: DataDir = None,
    actor: Actor = "operator",
    yes: Annotated[bool, typer.Option("--yes", help="Really erase every version.")] = False,
) -> None:
    """Erase every version's wrapped material (data under it is lost for good)."""
    if not yes:
        raise InvalidInputError("destroy erases every version of the key: add --yes")
    _km(data_dir).destroy(key_id, actor=actor)
    typer.echo(f"key {key_id} destroyed")


@audit_app.command("export")
def audit_export_cmd(
    out: Annotated[Path, typer.Argument(help="File to write (and OUT.head beside it).")],
    data_dir: DataDir = None,
) -> None:
    """Verify the chain, then write it to OUT and its head to OUT.head (0600)."""
    head = _km(data_dir).audit.export(out)
    typer.echo(f"{head.seq + 1} audit entries written to {out}; head {head.hash}")


@audit_app.command("verify")
def audit_verify_cmd(
    log: Annotated[Path, typer.Argument(help="An exported audit log.")],
    head: Annotated[Path | None, typer.Option(help="Its head file (default LOG.head).")] = None,
) -> None:
    """Check an exported audit trail: every entry's hash, the chain, the head (exit 2 if
    an entry was rewritten, dropped or cut)."""
    head_path = head or Path(f"{log}.head")
    got = verify_log(log, load_head(head_path))
    typer.echo(f"audit log OK: {got.seq + 1} entries, head {got.hash}")


@kms_app.command("lockdown")
def lockdown_cmd(
    scope: Annotated[
        list[str],
        typer.Option(
            "--scope",
            help="tee=KIND, measurement=HEX, chip=HEX, "
            "tcb=COMPONENT:MIN-MAX, account=NAME (repeat: all must match).",
        ),
    ],
    as_admin: Annotated[str, typer.Option("--as", help="Admin party key that signs the order.")],
    reason: Annotated[str, typer.Option(help="Why (recorded).")] = "",
    data_dir: DataDir = None,
    stop: Annotated[
        bool,
        typer.Option(
            "--stop/--no-stop",
            help="Cancel computations in scope on the control plane "
            "you are logged in to (sealroom login).",
        ),
    ] = True,
    json_out: JsonOpt = False,
) -> None:
    """Refuse every release in scope from now on, revoke what was released in scope,
    rotate the KEK and destroy the old one, stop computations in scope."""
    km = _km(data_dir)
    order = lockdown_order(
        Scope.parse(scope), PartyKeys.load(key_path(as_admin)).ed25519, reason=reason
    )
    stopper = None
    if stop:
        from sealroom.client.controlplane import ControlPlaneClient

        stopper = ControlPlaneStopper(ControlPlaneClient.from_config())
    result = Lockdowns(km).apply(order, stopper=stopper)
    if json_out:
        print_json(
            {
                "id": result.id,
                "admin": result.admin,
                "revoked": result.revoked,
                "kek": list(result.kek or ()),
                "stopped": result.stopped,
                "not_reached": result.not_reached,
            }
        )
        return
    typer.echo(f"lockdown {result.id} in force (ordered by {result.admin})")
    typer.echo(f"revoked: {', '.join(result.revoked) or 'nothing released in scope'}")
    if result.kek:
        typer.echo(f"KEK rotated: {result.kek[0]} destroyed, now {result.kek[1]}")
    typer.echo(f"stopped: {', '.join(result.stopped) or 'none'}")
    for line in result.not_reached:
        typer.echo(f"not reached: {line}")


@kms_app.command("lockdowns")
def lockdowns_cmd(data_dir: DataDir = None) -> None:
    """Lockdowns in force and lifted."""
    for lid, rec in sorted(Lockdowns(_km(data_dir)).all().items()):
        typer.echo(f"{lid}  {rec['state']}  scope={json.dumps(rec['scope'], sort_keys=True)}")


@kms_app.command("lift-sign")
def lift_sign_cmd(
    lockdown_id: str,
    as_admin: Annotated[str, typer.Option("--as", help="Admin party key that signs.")],
    out: Annotated[Path, typer.Option(help="Where to write the signature.")],
) -> None:
    """One admin's signature over lifting LOCKDOWN_ID (collect a quorum of these)."""
    doc = lift_signature(lockdown_id, PartyKeys.load(key_path(as_admin)).ed25519)
    out.write_text(json.dumps(doc) + "\n")
    typer.echo(f"lift signature by {as_admin} written to {out}")


@kms_app.command("lift")
def lift_cmd(
    lockdown_id: str,
    signature: Annotated[list[str], typer.Option("--signature", help="Signature file (repeat).")],
    data_dir: DataDir = None,
) -> None:
    """Lift a lockdown: needs the quorum of distinct admin signatures over its id."""
    docs = []
    for path in signature:
        try:
            docs.append(json.loads(read_input(path, "lift signature")))
        except ValueError as e:
            raise InvalidInputError(f"{path}: not JSON") from e
    signers = Lockdowns(_km(data_dir)).lift(lockdown_id, docs)
    typer.echo(f"lockdown {lockdown_id} lifted by {', '.join(signers)}")

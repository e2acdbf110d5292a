"""`sealroom account create|list` and `sealroom account key create|revoke` (admin, or an
account's own keys): the control plane's accounts without hand-written HTTP calls."""

from __future__ import annotations

from typing import Annotated

import typer

from sealroom.cli.common import console, print_json
from sealroom.client.controlplane import ControlPlaneClient

account_app = typer.Typer(help="Accounts and their API keys.", no_args_is_help=True)
key_app = typer.Typer(help="API keys of an account.", no_args_is_help=True)
account_app.add_typer(key_app, name="key")

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def _client() -> ControlPlaneClient:
    return ControlPlaneClient.from_config()


def _account_id(client: ControlPlaneClient, ref: str) -> str:
    """An account by id or by name."""
    for a in client.accounts():
        if ref in (a.id, a.name):
            return a.id
    return ref  # the control plane answers 404 account-not-found


@account_app.command("create")
def create_cmd(
    name: Annotated[str, typer.Argument(help="Account name")],
    role: Annotated[str, typer.Option("--role", help="user | admin")] = "user",
    as_json: JsonOpt = False,
) -> None:
    """Create an account (admin). Give it a key with `sealroom account key create NAME`."""
    acc = _client().create_account(name, role)
    if as_json:
        print_json(acc.model_dump(mode="json"))
        return
    console.print(f"account {acc.name} ({acc.role}): {acc.id}", markup=False)


@account_app.command("list")
def list_cmd(as_json: JsonOpt = False) -> None:
    """Accounts (admin: all; user: your own)."""
    accounts = [a.model_dump(mode="json") for a in _client().accounts()]
    if as_json:
        print_json(accounts)
        return
    for a in accounts:
        console.print(f"{a['id']}  {a['name']}  {a['role']}", markup=False)


@key_app.command("create")
def key_create_cmd(
    account: Annotated[str, typer.Argument(help="Account id or name")],
    as_json: JsonOpt = False,
) -> None:
    """A new API key for ACCOUNT, printed once on stdout (the control plane keeps only its
    hash). Redirect it into a 0600 file: `(umask 077; sealroom account key create NAME >
    key)`; give it to `sealroom login URL < key`."""
    client = _client()
    k = client.create_key(_account_id(client, account))
    if as_json:
        print_json(k.model_dump(mode="json"))
        return
    typer.echo(k.key)
    typer.echo(f"key id {k.key_id} (revoke: sealroom account key revoke {k.key_id})", err=True)


@key_app.command("revoke")
def key_revoke_cmd(key_id: Annotated[str, typer.Argument(help="Key id (key_...)")]) -> None:
    """Revoke an API key at once (its dashboard sessions end too)."""
    _client().revoke_key(key_id)
    console.print(f"{key_id}: revoked", markup=False)

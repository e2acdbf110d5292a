"""``sealroom keys``: party identities (Ed25519 for signing uploads, X25519 for receiving
sealed results), kept in ``$SEALROOM_HOME/keys`` with mode 0600.

Private keys are never printed. ``keys show NAME --json`` prints the public parts in the
form a manifest uses (``{"name", "ed25519", "x25519"}``): send that file to whoever
writes the manifest.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from sealroom.crypto.keys import PartyKeys, ensure_keystore, key_path, keystore_dir, list_keys

keys_app = typer.Typer(
    help="Party identities: Ed25519 (signing) + X25519 (receiving sealed results).",
    no_args_is_help=True,
)

NameArg = Annotated[str, typer.Argument(help="Party name: letters, digits, '_', '.', '-'.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def _print_public(keys: PartyKeys, path_text: str) -> None:
    pub = keys.public
    # Plain text, no wrapping: the hex strings are meant to be copied.
    typer.echo(f"party      {pub.name}")
    typer.echo(f"ed25519    {pub.ed25519.hex()}  (signs uploads)")
    typer.echo(f"x25519     {pub.x25519.hex()}  (receives sealed results)")
    typer.echo(f"key file   {path_text}  (private: mode 0600, never shared)")
    typer.echo("manifest form (public parts only, safe to share):")
    typer.echo(json.dumps(pub.to_json_obj()))


@keys_app.command("new")
def new_cmd(
    name: NameArg,
    force: Annotated[
        bool, typer.Option("--force", help="Replace an existing key (the old one is lost).")
    ] = False,
    json_out: JsonOpt = False,
) -> None:
    """Create a party identity and store it (mode 0600)."""
    path = key_path(name)
    keys = PartyKeys.generate(name)
    ensure_keystore()
    keys.save(path, overwrite=force)
    if json_out:
        sys.stdout.write(
            json.dumps({"public": keys.public.to_json_obj(), "path": str(path)}, indent=2) + "\n"
        )
        return
    _print_public(keys, str(path))


@keys_app.command("show")
def show_cmd(name: NameArg, json_out: JsonOpt = False) -> None:
    """Print a party's public keys (with --json: exactly the manifest's form)."""
    path = key_path(name)
    keys = PartyKeys.load(path)
    if json_out:
        sys.stdout.write(json.dumps(keys.public.to_json_obj(), indent=2) + "\n")
        return
    _print_public(keys, str(path))


@keys_app.command("list")
def list_cmd(json_out: JsonOpt = False) -> None:
    """List the party keys in the key store."""
    names = list_keys()
    if json_out:
        sys.stdout.write(json.dumps({"keystore": str(keystore_dir()), "keys": names}) + "\n")
        return
    if not names:
        typer.echo(f"no party keys in {keystore_dir()} (create one: sealroom keys new NAME)")
    for n in names:
        typer.echo(n)

"""``sealroom data``: a dataset encrypted by its provider, released only through the key
broker (the manifest names the slot ``kbs``-sourced; nobody has to be online at run time).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from sealroom.cli.kms_cmd import DataDir, _km
from sealroom.crypto.dataset import decrypt_dataset, encrypt_dataset, read_header
from sealroom.errors import InvalidInputError
from sealroom.files import write_private

data_app = typer.Typer(help="Datasets encrypted under a KMS key.", no_args_is_help=True)


@data_app.command("encrypt")
def encrypt_cmd(
    file: Annotated[Path, typer.Argument(help="Plaintext dataset.")],
    key_id: Annotated[str, typer.Option("--key-id", help="KMS key to encrypt under.")],
    out: Annotated[Path, typer.Option("--out", help="Ciphertext file (FILE.enc).")],
    version: Annotated[int | None, typer.Option(help="Key version (default: the primary).")] = None,
    data_dir: DataDir = None,
) -> None:
    """Encrypt FILE (AES-256-GCM, streamed) under a KMS key; print the plaintext SHA-256
    that the manifest's dataset slot pins."""
    km = _km(data_dir)
    number, key = km.material(key_id, version)
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        with open(file, "rb") as src, open(tmp, "wb") as dst:
            summary = encrypt_dataset(src, dst, key, key_id=key_id, version=number)
        os.replace(tmp, out)
    except OSError as e:
        raise InvalidInputError(f"cannot encrypt {file} to {out}: {e.strerror or e}") from e
    finally:
        if tmp.exists():
            tmp.unlink()
    typer.echo(f"{out}: {summary.ciphertext_size} bytes, key {key_id} v{number}")
    typer.echo(f"sha256 {summary.plaintext_sha256}  (the dataset hash for the manifest)")


@data_app.command("decrypt")
def decrypt_cmd(
    file: Annotated[Path, typer.Argument(help="Encrypted dataset.")],
    out: Annotated[Path, typer.Option("--out", help="Plaintext file (written 0600).")],
    data_dir: DataDir = None,
) -> None:
    """Decrypt with the key the header names (the provider's own check)."""
    with open(file, "rb") as src:
        header = read_header(src)
        _, key = _km(data_dir).material(header.key_id, header.version)
        import io

        buf = io.BytesIO()
        size = decrypt_dataset(src, buf, key, header)
    write_private(out, buf.getvalue(), overwrite=True, what="decrypted dataset")
    typer.echo(f"{out}: {size} bytes (key {header.key_id} v{header.version})")

"""Run the key broker and the attestation service on one port (``sealroom kbs serve``).

The data directory holds ``kbs.db`` (SQLite; or ``--db-url`` PostgreSQL shared by replicas),
``ear-key.pem`` (the EAR signing key; replicas share it) and ``admin.key`` (0600, created on
first start). The verifier trusts the embedded vendor roots plus the roots given with
``--root`` and this machine's sim authority root (sim evidence is then reported SIMULATED
and passes only policies with ``allow_simulated: true``).
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from fastapi import FastAPI

from sealroom import paths
from sealroom.attestation.ear import VerifierKey
from sealroom.attestation.sim.authority import SimAuthority
from sealroom.attestation.x509util import load_certificates
from sealroom.errors import InvalidInputError
from sealroom.files import write_private
from sealroom.kbs.attestation_service import add_attestation_routes
from sealroom.kbs.seams import AuditHook, ReleaseGuard, ResourceStore
from sealroom.kbs.server import create_app, hash_admin_key
from sealroom.kbs.store import SqlResourceStore, Store
from sealroom.kbs.verify import Verifier

ADMIN_KEY_FILE = "admin.key"


@dataclass(frozen=True)
class KbsDeployment:
    app: FastAPI
    store: Store
    admin_key_path: Path


def admin_key(data_dir: Path) -> tuple[str, Path]:
    """The admin key in ``data_dir/admin.key`` (created 0600 if absent)."""
    path = data_dir / ADMIN_KEY_FILE
    if not path.exists():
        try:
            write_private(
                path, secrets.token_urlsafe(32).encode() + b"\n", overwrite=False, what="admin key"
            )
        except FileExistsError:
            pass
    return path.read_text().strip(), path


def trusted_roots(roots: Sequence[Path], *, local_sim: bool = True) -> tuple[x509.Certificate, ...]:
    out: list[x509.Certificate] = []
    for p in roots:
        try:
            out.extend(load_certificates(p.read_bytes(), str(p)))
        except OSError as e:
            raise InvalidInputError(f"cannot read root {p}: {e.strerror}") from e
    if local_sim:
        # Created if absent: a broker started before any enclave on this machine must
        # still know the root that this machine's sim TEE will sign with (SIMULATED).
        out.append(SimAuthority.load_or_create(paths.sim_authority()).root)
    return tuple(out)


def build(
    data_dir: Path,
    *,
    db_url: str | None = None,
    roots: Sequence[Path] = (),
    resource_store: ResourceStore | None = None,
    guards: Sequence[ReleaseGuard] = (),
    audit: Sequence[AuditHook] = (),
    kms_dir: Path | None = None,
) -> KbsDeployment:
    """``kms_dir``: serve that key manager's keys as ``kms/<key>/primary|v<N>``, with its
    lockdown and revocation guard and its audit trail on every release (ADR 0026)."""
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    key, key_path = admin_key(data_dir)
    store = Store(db_url or f"sqlite:///{data_dir / 'kbs.db'}")
    if kms_dir is not None:
        from sealroom.kms.broker import KmsBroker
        from sealroom.kms.store import KeyManager

        broker = KmsBroker(KeyManager(kms_dir), resource_store or SqlResourceStore(store))
        resource_store = broker.store
        guards = [*guards, broker.guard]
        audit = [*audit, broker.audit]
    verifier = Verifier(
        VerifierKey.load_or_create(data_dir / "ear-key.pem"), extra_roots=trusted_roots(roots)
    )
    hashes = [hash_admin_key(key)]
    app = create_app(
        store,
        verifier,
        admin_key_hashes=hashes,
        resource_store=resource_store,
        guards=guards,
        audit=audit,
    )
    add_attestation_routes(app, store, verifier, admin_key_hashes=hashes)
    return KbsDeployment(app, store, key_path)


def parse_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise InvalidInputError(f"--listen wants HOST:PORT, got {listen!r}")
    return host or "127.0.0.1", int(port)


def run(
    data_dir: Path,
    listen: str,
    *,
    db_url: str | None = None,
    roots: Sequence[Path] = (),
    kms_dir: Path | None = None,
) -> None:
    import uvicorn

    host, port = parse_listen(listen)
    dep = build(data_dir, db_url=db_url, roots=roots, kms_dir=kms_dir)
    print(f"sealroom KBS (Trustee KBS protocol 0.4.0) on http://{host}:{port}", flush=True)
    print(f"admin key: {dep.admin_key_path} (0600)", flush=True)
    if kms_dir is not None:
        print(f"KMS: {kms_dir} (resources kms/<key>/primary and kms/<key>/v<N>)", flush=True)
    else:
        print("KMS: none (sealroom kms init, then restart; or --kms-dir DIR)", flush=True)
    uvicorn.run(dep.app, host=host, port=port, access_log=False, log_config=None)

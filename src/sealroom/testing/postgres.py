"""A throw-away PostgreSQL cluster on 127.0.0.1, for tests and benchmarks.

PostgreSQL refuses to run as root, so as root the cluster runs as the Debian 'postgres'
user (`runuser`). Production code never imports this module.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sealroom.errors import UnavailableError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def pg_bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    which = shutil.which("initdb")
    return Path(which).parent if which else None


@dataclass(frozen=True)
class PgCluster:
    port: int
    base: Path

    def url(self, db: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{db}"

    def create_db(self, name: str | None = None) -> str:
        import psycopg

        name = name or "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


@contextmanager
def throwaway_cluster(*, durable: bool = False, max_connections: int = 200) -> Iterator[PgCluster]:
    """Start a cluster in a temporary directory; stop and delete it on exit.

    ``durable=False`` turns fsync and synchronous commit off (tests); benchmarks pass
    ``durable=True`` to measure what a deployment would see. UnavailableError names what
    is missing (binaries, the 'postgres' user)."""
    bindir = pg_bindir()
    if bindir is None:
        raise UnavailableError(
            "PostgreSQL binaries not found (/usr/lib/postgresql/*/bin; Debian package postgresql)"
        )
    base = Path(tempfile.mkdtemp(prefix="sealroom-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        import pwd

        try:
            pw = pwd.getpwnam("postgres")
        except KeyError as e:
            shutil.rmtree(base, ignore_errors=True)
            raise UnavailableError(
                "running as root and there is no 'postgres' user to run PostgreSQL"
            ) from e
        os.chown(base, pw.pw_uid, pw.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    data, sock, logf = base / "data", base / "sock", base / "log"
    null = subprocess.DEVNULL
    try:
        subprocess.run([*as_user, "mkdir", "-p", str(sock)], check=True)  # noqa: S603
        subprocess.run(  # noqa: S603 - fixed argv
            [
                *as_user,
                str(bindir / "initdb"),
                "-D",
                str(data),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
            check=True,
            stdout=null,
            stderr=null,
        )
        port = free_port()
        opts = f"-c listen_addresses=127.0.0.1 -p {port} -k {sock}"
        opts += f" -c max_connections={max_connections}"
        if not durable:
            opts += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        subprocess.run(  # noqa: S603 - fixed argv
            [
                *as_user,
                str(bindir / "pg_ctl"),
                "-D",
                str(data),
                "-o",
                opts,
                "-l",
                str(logf),
                "-w",
                "-t",
                "60",
                "start",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    except (OSError, subprocess.CalledProcessError) as e:
        shutil.rmtree(base, ignore_errors=True)
        raise UnavailableError(f"cannot start a PostgreSQL cluster: {e}") from e
    try:
        yield PgCluster(port, base)
    finally:
        subprocess.run(  # noqa: S603 - fixed argv
            [*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
            check=False,
            stdout=null,
            stderr=null,
        )
        shutil.rmtree(base, ignore_errors=True)

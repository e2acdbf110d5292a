"""The store on SQLite and on a real PostgreSQL: migrations are idempotent, a restart
loses nothing, and concurrent creates never overcommit a host."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import inspect

from sealroom.controlplane.services.auth import Principal
from sealroom.controlplane.store.db import Store
from sealroom.errors import CapacityError

from .conftest import Env, manifest_doc


def test_migrations_are_idempotent(db_url: str) -> None:
    st = Store(db_url)
    st.migrate()
    st.migrate()
    tables = set(inspect(st.engine).get_table_names())
    assert {"accounts", "api_keys", "hosts", "computations", "events", "blobs"} <= tables
    assert "alembic_version" in tables
    st.dispose()


def test_sqlite_runs_in_wal_mode(tmp_path: Path) -> None:
    st = Store(f"sqlite:///{tmp_path / 'w.db'}")
    with st.engine.connect() as c:
        assert c.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert c.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
    st.dispose()


def test_restart_loses_nothing(db_url: str, make_env: Callable[..., Env], tmp_path: Path) -> None:
    d = tmp_path / "data"
    e1 = make_env(db_url=db_url, data_dir=d)
    _, key = e1.user("alice")
    _, cred = e1.agent("h1")
    cid = e1.create(manifest_doc(e1.parties), key)["id"]
    e1.heartbeat(cred, [{"computation_id": cid, "state": "running"}])
    e1.client.__exit__(None, None, None)  # lifespan end: engine disposed

    e2 = make_env(db_url=db_url, data_dir=d, clock=e1.clock)
    assert e2.admin_key == e1.admin_key  # no second bootstrap
    assert e2.client.get("/api/v1/me", headers=e2.h(key)).json()["name"] == "alice"
    d2 = e2.client.get(f"/api/v1/computations/{cid}", headers=e2.h(key)).json()
    assert d2["state"] == "running" and d2["events_count"] == 3
    out = e2.heartbeat(cred, [{"computation_id": cid, "state": "running"}])
    assert [x["computation_id"] for x in out["desired"]] == [cid]
    assert e2.client.get(f"/api/v1/computations/{cid}", headers=e2.h()).json()["events_count"] == 3


def test_concurrent_creates_never_overcommit(db_url: str, make_env: Callable[..., Env]) -> None:
    e = make_env(db_url=db_url)
    _, cred = e.agent("h1", cpus=5, mem=1 << 20)
    admin = Principal("", "admin", "admin", "")
    with e.cp.store.session() as s:
        from sqlalchemy import select

        from sealroom.controlplane.store.models import Account

        admin = Principal(s.scalar(select(Account.id)) or "", "admin", "admin", "")
    ok: list[str] = []
    rejected: list[str] = []
    lock = threading.Lock()
    doc = manifest_doc(e.parties)

    def worker() -> None:
        try:
            c = e.cp.computations.create(admin, doc, "sim", False)
            with lock:
                ok.append(c.id)
        except CapacityError as err:
            with lock:
                rejected.append(err.code)

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(ok) == 5 and rejected == ["capacity"] * 11
    host = e.client.get("/api/v1/hosts", headers=e.h()).json()["hosts"][0]
    assert host["resources"]["cpu_used"] == 5 and host["enclaves"] == 5
    # capacity frees when one ends
    e.heartbeat(cred, [{"computation_id": ok[0], "state": "completed"}])
    e.create(doc)
    e.create(doc, expect=429)

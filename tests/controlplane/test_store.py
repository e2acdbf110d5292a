"""The store on SQLite and on a real PostgreSQL: migrations are idempotent, a restart
loses nothing, and concurrent creates never overcommit a host."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import inspect, select

from sealroom.controlplane.services.auth import Principal
from sealroom.controlplane.services.computations import _PendingCreate, capacities
from sealroom.controlplane.store.db import Store
from sealroom.controlplane.store.models import Computation, Counter
from sealroom.errors import CapacityError
from sealroom.manifest import Manifest
from sealroom.testing.postgres import PgCluster
from tests.controlplane.reports import reached, stopped

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
    e1.heartbeat(cred, [reached(cid, "running")])
    e1.client.__exit__(None, None, None)  # lifespan end: engine disposed

    e2 = make_env(db_url=db_url, data_dir=d, clock=e1.clock)
    assert e2.admin_key == e1.admin_key  # no second bootstrap
    assert e2.client.get("/api/v1/me", headers=e2.h(key)).json()["name"] == "alice"
    d2 = e2.client.get(f"/api/v1/computations/{cid}", headers=e2.h(key)).json()
    assert d2["state"] == "running" and d2["events_count"] == 5  # created .. running
    out = e2.heartbeat(cred, [reached(cid, "running")])
    assert [x["computation_id"] for x in out["desired"]] == [cid]
    assert e2.client.get(f"/api/v1/computations/{cid}", headers=e2.h()).json()["events_count"] == 5


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
    # capacity frees when one ends and its host stops it
    e.heartbeat(cred, [reached(ok[0], "failed")])
    e.heartbeat(cred, [stopped(ok[0])])
    e.create(doc)
    e.create(doc, expect=429)


def test_two_replicas_on_one_database_never_overcommit(
    db_url: str, make_env: Callable[..., Env], tmp_path: Path
) -> None:
    a = make_env(db_url=db_url, data_dir=tmp_path / "a")
    b = make_env(db_url=db_url, data_dir=tmp_path / "b", clock=a.clock)
    b.admin_key = a.admin_key  # one bootstrap for the shared database
    _, cred = a.agent("h1", cpus=2)
    doc = manifest_doc(a.parties)
    b.create(doc)  # b's view learns of the host through the placement generation
    first = a.create(doc)
    b.create(doc, expect=429)
    a.create(doc, expect=429)
    b.heartbeat(cred, [stopped(first["id"])])
    a.create(doc)
    b.create(doc, expect=429)


def test_capacity_view_matches_the_database_after_a_lifecycle(env: Env) -> None:
    from sealroom.controlplane.services.computations import capacities

    _, c1 = env.agent("h1", cpus=3)
    _, c2 = env.agent("h2", cpus=2)
    doc = manifest_doc(env.parties)
    ids = [env.create(doc, queue=True)["id"] for _ in range(7)]
    env.heartbeat(c1, [reached(ids[0], "running")])
    env.client.post(f"/api/v1/computations/{ids[1]}/cancel", headers=env.h())
    env.clock.advance(20)
    env.heartbeat(c1, [reached(ids[0], "completed")])
    env.cp.tick()  # h2 lost: its scheduled work moves to h1 or back to the queue
    env.heartbeat(c2)
    env.cp.tick()
    comps = env.cp.computations
    with comps.write() as s:
        view = dict(comps.view())
        fresh = {h.host_id: h for h in capacities(s)}
    assert view == fresh
    for h in fresh.values():
        assert h.allocated.vcpus <= h.total.vcpus


def test_migrations_0003_0004_add_columns_and_downgrade(db_url: str) -> None:
    """Receipt, verified-TEE and quota columns (docs/adr/0019) on SQLite and PostgreSQL;
    the revisions downgrade and upgrade again."""
    from alembic import command
    from alembic.config import Config

    from sealroom.controlplane.store.db import MIGRATIONS

    st = Store(db_url)
    st.migrate()

    def columns(table: str) -> set[str]:
        return {c["name"] for c in inspect(st.engine).get_columns(table)}

    assert {"receipt_ok", "receipt_at"} <= columns("computations")
    assert {"tee_verified", "tee_verified_at"} <= columns("hosts")
    assert {"quota_computations", "quota_vcpus", "quota_memory_mb"} <= columns("accounts")
    cfg = Config()
    cfg.set_main_option("script_location", MIGRATIONS)
    with st.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0002")
    assert "receipt_ok" not in columns("computations")
    assert "tee_verified" not in columns("hosts")
    assert "quota_vcpus" not in columns("accounts")
    st.migrate()
    assert "quota_vcpus" in columns("accounts")
    assert {"receipt_ok", "receipt_at"} <= columns("computations")
    st.dispose()


# -- group commit of creates (docs/adr/0039) ---------------------------------------------


def _admin(e: Env) -> Principal:
    p = e.cp.auth.authenticate_user(e.admin_key)
    assert p.is_admin
    return p


def _pending(e: Env, doc: dict[str, object], *, queue: bool = False) -> _PendingCreate:
    c = e.cp.computations
    return _PendingCreate(_admin(e), Manifest.from_dict(doc), "sim", queue, c.now())


def _listed(e: Env) -> list[dict[str, Any]]:
    r = e.client.get("/api/v1/computations", headers=e.h())
    assert r.status_code == 200, r.text
    out: list[dict[str, Any]] = r.json()["computations"]
    return out


def _generation(e: Env) -> int:
    with e.cp.store.session() as s:
        return int(s.scalar(select(Counter.value).where(Counter.name == "placement")) or 0)


def test_creates_waiting_for_the_lock_are_stored_by_one_transaction(
    db_url: str, make_env: Callable[..., Env]
) -> None:
    """Five creates that queue up while the write lock is held are decided in arrival
    order and committed together: the placement generation moves once, not five times,
    and no host is overcommitted (3 fit, 2 are refused on their own)."""
    e = make_env(db_url=db_url)
    e.agent("h1", cpus=3)
    comps = e.cp.computations
    admin = _admin(e)
    doc = manifest_doc(e.parties)
    gen0 = _generation(e)
    results: list[str] = []
    lock = threading.Lock()

    def worker() -> None:
        try:
            c = comps.create(admin, doc, "sim", False)
            out = c.state
        except CapacityError as err:
            out = err.code
        with lock:
            results.append(out)

    threads = [threading.Thread(target=worker) for _ in range(5)]
    with comps.lock:
        for t in threads:
            t.start()
        deadline = time.monotonic() + 60
        while len(comps._pending) < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(comps._pending) == 5
    for t in threads:
        t.join()
    assert sorted(results) == ["capacity", "capacity", "scheduled", "scheduled", "scheduled"]
    assert _generation(e) == gen0 + 1
    host = e.client.get("/api/v1/hosts", headers=e.h()).json()["hosts"][0]
    assert host["resources"]["cpu_used"] == 3 and host["enclaves"] == 3
    with e.cp.store.session() as s:
        numbers = sorted(s.scalars(select(Computation.number)).all())
    assert numbers == list(range(numbers[0], numbers[0] + 3))


def test_group_commit_refuses_only_the_create_that_does_not_fit(
    db_url: str, make_env: Callable[..., Env]
) -> None:
    e = make_env(db_url=db_url)
    e.agent("h1", cpus=2)
    comps = e.cp.computations
    doc = manifest_doc(e.parties)
    batch = [_pending(e, doc), _pending(e, doc), _pending(e, doc), _pending(e, doc, queue=True)]
    with comps.lock:
        comps._create_batch(batch)
    assert all(r.done for r in batch)
    assert [r.result.state if r.result else None for r in batch] == [
        "scheduled",
        "scheduled",
        None,
        "created",
    ]
    assert isinstance(batch[2].error, CapacityError) and batch[2].error.code == "capacity"
    stored = {c["id"] for c in _listed(e)}
    assert stored == {r.result.id for r in batch if r.result}
    with comps.write() as s:
        assert dict(comps.view()) == {h.host_id: h for h in capacities(s)}


def test_group_commit_a_row_the_database_refuses_does_not_fail_the_others(
    pg_cluster: PgCluster, make_env: Callable[..., Env]
) -> None:
    """PostgreSQL refuses a NUL character in text: that create fails when the shared
    transaction commits, and the others of its batch are then stored one by one. (The
    manifest validator refuses a NUL up front; the row here is made past it, to stand for
    any row the database refuses.)"""
    e = make_env(db_url=pg_cluster.create_db())
    e.agent("h1", cpus=4)
    comps = e.cp.computations
    doc = manifest_doc(e.parties)
    bad = _pending(e, doc)
    bad.manifest = dataclasses.replace(bad.manifest, name="nul\x00name")
    batch = [_pending(e, doc), bad, _pending(e, doc)]
    with comps.lock:
        comps._create_batch(batch)
    assert batch[0].result is not None and batch[2].result is not None
    assert batch[1].result is None and batch[1].error is not None
    assert sorted(c["id"] for c in _listed(e)) == sorted([batch[0].result.id, batch[2].result.id])
    host = e.client.get("/api/v1/hosts", headers=e.h()).json()["hosts"][0]
    assert host["resources"]["cpu_used"] == 2
    with comps.write() as s:
        assert dict(comps.view()) == {h.host_id: h for h in capacities(s)}

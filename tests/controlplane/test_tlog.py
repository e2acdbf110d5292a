"""The control plane's transparency log: appends in its database (SQLite and a real
PostgreSQL), one writer, proofs and tiles that the pure library and pymerkle accept, the
public endpoints, receipts logged with their tlog-proof, and operator measurements."""

from __future__ import annotations

import base64
import threading
from collections.abc import Callable
from typing import Any

import pymerkle
import pytest

from sealroom.controlplane.services.tlog import TransparencyLog
from sealroom.errors import InvalidInputError
from sealroom.tlog import merkle as M
from sealroom.tlog import note, tiles
from sealroom.tlog.checkpoint import open_checkpoint
from sealroom.tlog.entries import Kind, decode_entry, encode_entry, receipt_entry
from sealroom.tlog.proof import TlogProof
from tests.controlplane.conftest import Env, manifest_doc


def payloads(n: int, start: int = 0) -> list[tuple[Kind, dict[str, Any]]]:
    return [
        (Kind.HEARTBEAT, {"enclave": f"e{i}", "ok": i % 3 != 0}) for i in range(start, start + n)
    ]


def vkey_of(log: TransparencyLog) -> note.Verifier:
    return note.Verifier.parse(log.vkey())


def test_append_and_proofs_on_both_databases(make_env: Callable[..., Env], db_url: str) -> None:
    log = make_env(db_url=db_url).cp.tlog
    items = payloads(300)  # crosses a full level-0 tile (256)
    first = log.append(*items[0])
    assert first.index == 0
    appended = [first, *log.append_many(items[1:200])]
    appended += [log.append(k, p) for k, p in items[200:]]
    assert [a.index for a in appended] == list(range(300))
    data = [encode_entry(k, p) for k, p in items]
    assert [a.leaf_hash for a in appended] == [M.leaf_hash(d) for d in data]

    peer = pymerkle.InmemoryTree(algorithm="sha256")
    for d in data:
        peer.append_entry(d)
    cp = open_checkpoint(log.checkpoint(), [vkey_of(log)])
    assert (cp.size, cp.root_hash) == (300, peer.get_root(300))
    for i in (0, 1, 127, 255, 256, 299):
        for size in (i + 1, 257, 300):
            if i >= size:
                continue
            n, path = log.inclusion(i, size)
            assert path == list(peer.prove_inclusion(i + 1, size).path[1:])
            M.verify_inclusion(M.leaf_hash(data[i]), i, n, path, peer.get_root(size))
    for old in (1, 2, 100, 256, 299, 300):
        n, path = log.consistency(old, 300)
        M.verify_consistency(old, n, peer.get_root(old), peer.get_root(300), path)
    assert decode_entry(log.entry(7)) == items[7]


def test_tiles_match_the_tree(env: Env) -> None:
    log = env.cp.tlog
    items = payloads(513)
    log.append_many(items)
    leaves = M.LeafList([M.leaf_hash(encode_entry(k, p)) for k, p in items])
    r = env.client.get("/log/tile/0/001")
    assert r.status_code == 200 and r.headers["content-type"] == "application/octet-stream"
    assert r.content == b"".join(leaves.leaves[256:512])
    assert "immutable" in r.headers["cache-control"]
    assert env.client.get("/log/tile/0/002.p/1").content == leaves.leaves[512]
    lvl1 = env.client.get("/log/tile/1/000.p/2").content
    assert lvl1 == M.subtree_hash(leaves, 0, 256) + M.subtree_hash(leaves, 256, 512)
    bundle = tiles.parse_bundle(env.client.get("/log/tile/entries/002.p/1").content)
    assert bundle == [encode_entry(*items[512])]
    # tiles that do not exist at this size: absent, not computed
    for path in ("0/002", "0/002.p/2", "1/000", "2/000.p/1", "0/01", "entries/003.p/1"):
        assert env.client.get(f"/log/tile/{path}").status_code in (400, 404), path
    # the log grows: the partial tiles of the older size are still served (a client that
    # verified the older checkpoint fetches them), as prefixes of the wider ones
    log.append_many(payloads(3, start=513))
    assert env.client.get("/log/tile/0/002.p/1").content == leaves.leaves[512]
    assert len(env.client.get("/log/tile/0/002.p/4").content) == 4 * 32
    assert env.client.get("/log/tile/entries/002.p/1").status_code == 200


def test_concurrent_appends_never_collide(make_env: Callable[..., Env], db_url: str) -> None:
    """Two control-plane replicas (their own process locks) and four threads each append
    to one database; every index is used once and the tree verifies."""
    a = make_env(db_url=db_url)
    b = make_env(db_url=db_url) if db_url.startswith("postgresql") else a
    errors: list[BaseException] = []

    def work(log: TransparencyLog, t: int) -> None:
        try:
            for i in range(25):
                log.append(Kind.HEARTBEAT, {"thread": t, "i": i})
        except BaseException as e:
            errors.append(e)

    threads = [
        threading.Thread(target=work, args=(x.cp.tlog, t)) for t, x in enumerate([a, b, a, b])
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    log = a.cp.tlog
    assert log.size() == 100
    entries = [log.entry(i) for i in range(100)]
    assert len({e for e in entries}) == 100
    src = M.LeafList([M.leaf_hash(e) for e in entries])
    cp = open_checkpoint(log.checkpoint(), [vkey_of(log)])
    assert cp.root_hash == M.root_hash(src, 100)


def test_rollback_leaves_no_entry(env: Env) -> None:
    log = env.cp.tlog
    log.append(Kind.HEARTBEAT, {"n": 0})

    def failing_transaction() -> None:
        with env.cp.store.session() as s:
            log.append_in(s, Kind.HEARTBEAT, {"n": 1})
            raise RuntimeError("caller's transaction fails")

    with pytest.raises(RuntimeError):
        failing_transaction()
    assert log.size() == 1
    assert log.append(Kind.HEARTBEAT, {"n": 2}).index == 1


def test_bad_appends_rejected(env: Env) -> None:
    with pytest.raises(InvalidInputError, match="kind"):
        env.cp.tlog.append("secret-dump", {"x": 1})
    with pytest.raises(InvalidInputError, match="65535"):
        env.cp.tlog.append(Kind.HEARTBEAT, {"x": "a" * 70000})
    assert env.cp.tlog.size() == 0


def test_public_endpoints_need_no_credentials(env: Env) -> None:
    env.cp.tlog.append_many(payloads(5))
    r = env.client.get("/log/checkpoint")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    v = note.Verifier.parse(env.client.get("/log/vkey").text)
    cp = open_checkpoint(r.text, [v])
    assert cp.size == 5 and cp.origin == "sealroom.local/log"
    p = env.client.get("/log/proof/inclusion", params={"index": 3, "size": 5}).json()
    hashes = [base64.b64decode(h) for h in p["hashes"]]
    M.verify_inclusion(
        M.leaf_hash(env.client.get("/log/entries/3").content), 3, 5, hashes, cp.root_hash
    )
    c = env.client.get("/log/proof/consistency", params={"old": 2}).json()
    assert c["new_size"] == 5
    M.verify_consistency(
        2, 5, env.cp.tlog.root(2), cp.root_hash, [base64.b64decode(h) for h in c["hashes"]]
    )
    assert env.client.get("/log/proof/inclusion", params={"index": 5}).status_code == 404
    assert env.client.get("/log/proof/consistency", params={"old": 1, "new": 9}).status_code == 404
    assert env.client.get("/log/entries/5").status_code == 404
    t = TlogProof.parse(env.client.get("/log/tlog-proof/4").text)
    t.verify(M.leaf_hash(env.cp.tlog.entry(4)), [v])


def test_checkpoint_key_persists_across_restart(
    make_env: Callable[..., Env], tmp_path: Any
) -> None:
    d = tmp_path / "cpdata"
    e1 = make_env(data_dir=d)
    vk = e1.cp.tlog.vkey()
    assert (d / "tlog-ed25519.pem").stat().st_mode & 0o077 == 0
    e2 = make_env(data_dir=d)
    assert e2.cp.tlog.vkey() == vk


def test_runtime_measurement_published_by_admin_only(env: Env) -> None:
    body = {"name": "sealroom-runtime", "tee": "snp", "measurement": "ab" * 48, "version": "1.0"}
    r = env.client.post("/api/v1/log/runtime-measurements", json=body, headers=env.h())
    assert r.status_code == 201, r.text
    idx = r.json()["index"]
    kind, payload = decode_entry(env.client.get(f"/log/entries/{idx}").content)
    assert kind == Kind.RUNTIME_MEASUREMENT and payload["measurement"] == "ab" * 48
    _, key = env.user("ursula")
    r = env.client.post("/api/v1/log/runtime-measurements", json=body, headers=env.h(key))
    assert r.status_code == 403
    r = env.client.post("/api/v1/log/runtime-measurements", json=body)
    assert r.status_code == 401
    bad = {**body, "measurement": "not hex"}
    assert (
        env.client.post("/api/v1/log/runtime-measurements", json=bad, headers=env.h()).status_code
        == 400
    )
    assert env.cp.tlog.size() == 1


def test_receipt_is_logged_and_download_carries_its_proof(env: Env) -> None:
    _, cred = env.agent()
    cid = env.create(manifest_doc(env.parties))["id"]
    env.complete(cred, cid)
    receipt = env.client.get(f"/api/v1/computations/{cid}/receipt", headers=env.h())
    assert receipt.status_code == 200
    r = env.client.get(f"/api/v1/computations/{cid}/receipt/tlog-proof", headers=env.h())
    assert r.status_code == 200, r.text
    proof = TlogProof.parse(r.text)
    cp = proof.verify(M.leaf_hash(receipt_entry(receipt.content)), [vkey_of(env.cp.tlog)])
    assert cp.size == 1
    # the entry is public facts only: the manifest hash and the receipt's hash
    kind, payload = decode_entry(env.cp.tlog.entry(proof.index))
    assert kind == Kind.RECEIPT and set(payload) == {"manifest_hash", "receipt_sha256"}
    # the same receipt delivered again is not logged twice
    assert env.put_blob(cred, cid, "receipt", receipt.content).status_code in (204, 409)
    assert env.cp.tlog.size() == 1
    # nobody else gets the proof through this route
    assert env.client.get(f"/api/v1/computations/{cid}/receipt/tlog-proof").status_code == 403


def test_forged_receipt_is_not_logged(env: Env) -> None:
    _, cred = env.agent()
    cid = env.create(manifest_doc(env.parties))["id"]
    assert (
        env.put_blob(cred, cid, "receipt", b'{"payload": {"manifest_hash": "00"}}').status_code
        >= 400
    )
    assert env.cp.tlog.size() == 0


def test_proof_queries_use_the_primary_key(env: Env) -> None:
    """Defect: the batched node look-up used a row-value IN ((level, idx), ...), which
    SQLite answered by scanning the whole node table on every proof; each query a proof
    runs must be a primary-key search."""
    from sqlalchemy import event

    log = env.cp.tlog
    log.append_many(payloads(1000))
    seen: list[tuple[str, Any]] = []

    def grab(conn: Any, cursor: Any, stmt: str, params: Any, ctx: Any, many: bool) -> None:
        if "tlog_" in stmt and not stmt.startswith("EXPLAIN"):
            seen.append((stmt, params))

    engine = env.cp.store.engine
    event.listen(engine, "before_cursor_execute", grab)
    try:
        log._cache.clear()
        log.inclusion(517, 1000)
        log.consistency(300, 1000)
    finally:
        event.remove(engine, "before_cursor_execute", grab)
    assert seen
    with engine.connect() as c:
        for stmt, params in seen:
            plan = c.exec_driver_sql("EXPLAIN QUERY PLAN " + stmt, params).fetchall()
            details = " ".join(str(row[-1]) for row in plan)
            assert "SCAN tlog_" not in details, (stmt, details)


def test_receipts_kept_before_the_log_existed_are_logged_at_start(
    make_env: Callable[..., Env], tmp_path: Any
) -> None:
    """A control plane upgraded to migration 0006 holds verified receipts the log never
    saw: the next start appends them (once), so every receipt gets a proof."""
    from sqlalchemy import delete

    from sealroom.controlplane.store.models import TlogEntry, TlogNode

    d = tmp_path / "upgraded"
    env = make_env(data_dir=d)
    _, cred = env.agent()
    cids = [env.create(manifest_doc(env.parties, mid=f"m{i}"))["id"] for i in range(2)]
    for cid in cids:
        env.complete(cred, cid)
    assert env.cp.tlog.size() == 2
    with env.cp.store.session() as s:  # as before the log existed
        s.execute(delete(TlogNode))
        s.execute(delete(TlogEntry))
    again = make_env(data_dir=d)
    assert again.cp.tlog.size() == 2
    for cid in cids:
        r = again.client.get(f"/api/v1/computations/{cid}/receipt/tlog-proof", headers=again.h())
        assert r.status_code == 200, r.text
    assert make_env(data_dir=d).cp.tlog.size() == 2  # a third start adds nothing


def test_replicas_share_one_log_identity(
    make_env: Callable[..., Env], db_url: str, tmp_path: Any
) -> None:
    """Two control planes on one database, each with its own data directory, sign with
    the one key and origin they are given: a verifier pinning that key accepts both."""
    key = tmp_path / "shared" / "log.pem"
    key.parent.mkdir()
    a = make_env(db_url=db_url, log_key=key, log_origin="cp.example.org/log")
    b = make_env(db_url=db_url, log_key=key, log_origin="cp.example.org/log")
    assert a.data_dir != b.data_dir and a.cp.tlog.vkey() == b.cp.tlog.vkey()
    a.cp.tlog.append(Kind.HEARTBEAT, {"n": 1})
    b.cp.tlog.append(Kind.HEARTBEAT, {"n": 2})
    v = vkey_of(a.cp.tlog)
    ca, cb = (
        open_checkpoint(a.cp.tlog.checkpoint(), [v]),
        open_checkpoint(b.cp.tlog.checkpoint(), [v]),
    )
    assert ca == cb and ca.size == 2 and ca.origin == "cp.example.org/log"


def test_bad_log_origin_refused_at_start(make_env: Callable[..., Env]) -> None:
    with pytest.raises(InvalidInputError, match="key name"):
        make_env(log_origin="has a space")

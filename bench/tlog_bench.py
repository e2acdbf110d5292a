"""Transparency log benchmark (issue 12): appends/s and proof generation time at 10^6
entries, ours next to pymerkle's (an independent RFC 9162 implementation with its own
SQLite backend) on the same entries, in the same run.

Both stores are SQLite files in one temporary directory with the same settings (WAL,
synchronous=NORMAL), so the figures compare the designs, not the disks:
  * ours: sealroom.controlplane.services.tlog.TransparencyLog (entries + perfect-subtree
    hashes, docs/adr/0031), through its public API, as the control plane uses it;
  * peer: pymerkle.SqliteTree (leaves only; subtree roots computed and LRU-cached).

Rows:
  1. bulk build to N entries (ours: append_many in 10 000-entry transactions; pymerkle:
     append_entries), entries/s;
  2. single appends, one transaction each (what a service does per heartbeat), appends/s;
  3. inclusion proof of a random entry in the tree of N, proofs/s (and ms per proof);
  4. consistency proof between random sizes <= N, proofs/s.
Every proof of ours is checked against pymerkle's root for that size.

Run: .venv/bin/python bench/tlog_bench.py [--entries 1000000] [--seconds 5]
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import pymerkle

from benchlib import Row, paired_rates, print_rows
from sealroom.controlplane.config import Settings
from sealroom.controlplane.services.tlog import TransparencyLog
from sealroom.controlplane.store.db import Store
from sealroom.tlog import merkle
from sealroom.tlog.entries import Kind, encode_entry

CHUNK = 10_000


def payload(i: int) -> dict[str, Any]:
    return {"enclave": f"enc_{i:012d}", "ok": True, "seq": i, "report_sha256": f"{i:064x}"}


def peer_tree(path: Path) -> Any:
    tree = pymerkle.SqliteTree(str(path), algorithm="sha256")
    tree.con.execute("PRAGMA journal_mode=WAL")
    tree.con.execute("PRAGMA synchronous=NORMAL")
    return tree


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--entries", type=int, default=1_000_000)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--singles", type=int, default=2000)
    args = ap.parse_args()
    n = args.entries
    rng = random.Random(12)  # noqa: S311 - reproducible benchmark indexes, not secrets

    with tempfile.TemporaryDirectory(prefix="tlog-bench-") as tmp_s:
        tmp = Path(tmp_s)
        settings = Settings(data_dir=tmp / "cp", print_bootstrap_key=False)
        settings.data_dir.mkdir()
        store = Store(f"sqlite:///{tmp / 'cp.db'}")
        store.migrate()
        log = TransparencyLog(store, settings)
        peer = peer_tree(tmp / "pymerkle.db")

        # 1. bulk build, same entries
        t0 = time.perf_counter()
        for start in range(0, n, CHUNK):
            log.append_many(
                [(Kind.HEARTBEAT, payload(i)) for i in range(start, min(n, start + CHUNK))]
            )
        ours_build = n / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        peer.append_entries(encode_entry(Kind.HEARTBEAT, payload(i)) for i in range(n))
        peer_build = n / (time.perf_counter() - t0)
        rows: list[Row] = [
            (
                f"build to {n} entries (bulk)",
                ours_build,
                "pymerkle SqliteTree.append_entries",
                peer_build,
            )
        ]

        # the two trees agree before anything is timed
        cp_root = log.root(n)
        if cp_root != peer.get_root(n):
            raise SystemExit("root hashes differ: refusing to benchmark")

        # 3./4. proofs at size n (before the single appends, so the size stays n)
        idx = [rng.randrange(n) for _ in range(4096)]
        pairs = [tuple(sorted((rng.randrange(1, n + 1), n))) for _ in range(4096)]
        for i in idx[:50]:
            _, hs = log.inclusion(i, n)
            merkle.verify_inclusion(peer.get_leaf(i + 1), i, n, hs, cp_root)
        for old, new in pairs[:20]:
            _, hs = log.consistency(old, new)
            merkle.verify_consistency(old, new, peer.get_root(old), cp_root, hs)
        k = [0]

        def ours_inc() -> None:
            k[0] += 1
            log.inclusion(idx[k[0] % 4096], n)

        def peer_inc() -> None:
            k[0] += 1
            peer.prove_inclusion(idx[k[0] % 4096] + 1, n)

        def ours_con() -> None:
            k[0] += 1
            old, new = pairs[k[0] % 4096]
            log.consistency(old, new)

        def peer_con() -> None:
            k[0] += 1
            old, new = pairs[k[0] % 4096]
            peer.prove_consistency(old, new)

        o, p = paired_rates(ours_inc, peer_inc, args.seconds, warmup=20, batch=10)
        rows.append((f"inclusion proof at {n} entries", o, "pymerkle prove_inclusion", p))
        o, p = paired_rates(ours_con, peer_con, args.seconds, warmup=20, batch=10)
        rows.append((f"consistency proof at {n} entries", o, "pymerkle prove_consistency", p))

        # 2. single appends, one transaction each
        j = [n]

        def ours_one() -> None:
            j[0] += 1
            log.append(Kind.HEARTBEAT, payload(j[0]))

        def peer_one() -> None:
            j[0] += 1
            peer.append_entry(encode_entry(Kind.HEARTBEAT, payload(j[0])))

        o, p = paired_rates(ours_one, peer_one, args.seconds, warmup=20, batch=25)
        rows.insert(1, ("single append (own transaction)", o, "pymerkle append_entry", p))
        peer.close()
        store.dispose()
        sizes = {f.name: f.stat().st_size for f in tmp.iterdir() if f.suffix == ".db"}

    print_rows(rows)
    for label, ours, _, _ in rows[2:]:
        print(f"{label}: ours {1000 / ours:.2f} ms per proof")
    print("database sizes:", ", ".join(f"{k} {v / 2**20:.0f} MiB" for k, v in sizes.items()))


if __name__ == "__main__":
    main()

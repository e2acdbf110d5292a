"""Control plane placement benchmark (issue 5): 1,000 registered simulated hosts
heartbeating, 10,000 computations placed, on SQLite and on PostgreSQL.

Everything goes through the real API over HTTP: the control plane runs as its own process
(`python -m sealroom.controlplane`, uvicorn, one worker, as `sealroom controlplane serve`
runs it) on 127.0.0.1; clients are persistent http.client connections from a thread
pool in this process.
While computations are created, a background thread keeps the simulated hosts
heartbeating (round-robin, up to --hb-rate heartbeats/s, each reporting resources and no
enclaves), so placement competes with heartbeats for the store as in a deployment. Each
host offers 16 vCPUs and 64 GiB; each computation asks for 1 vCPU and 512 MB, so 10,000
fit on 1,000 hosts and every create must succeed (201).

Printed per database: placements/s (10,000 / wall time of the create phase), p50/p99
latency of POST /api/v1/computations, heartbeat p50/p99, and the target from
docs (design.md: >= 500 placements/s with 1,000 registered hosts) with the ratio ours /
target (no peer system runs here, so the peer figure is the target).

PostgreSQL: a throw-away cluster is started from /usr/lib/postgresql/*/bin (as the
'postgres' user when run as root) unless --pg-url is given; skipped if absent.

Run:   .venv/bin/python bench/placement_bench.py                    # both databases
       .venv/bin/python bench/placement_bench.py --db sqlite --computations 2000
Not part of CI.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from sealroom.crypto.keys import PartyKeys
from sealroom.errors import UnavailableError
from sealroom.testing.postgres import free_port, throwaway_cluster

TARGET = 500.0
JSON = "application/json"
ADMIN = "srk_bench-admin-key-0123456789abcdef0123"


@contextmanager
def pg_cluster() -> Iterator[str | None]:
    """A durable throw-away cluster (fsync on: what a deployment sees), or None."""
    try:
        with throwaway_cluster(durable=True) as cluster:
            yield cluster.create_db("bench")
    except UnavailableError as e:
        print(f"PostgreSQL skipped: {e.message}")
        yield None


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (/proc/PID/stat), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load() -> str:
    return "load " + " ".join(Path("/proc/loadavg").read_text().split()[:3])


@contextmanager
def serve(db_url: str, data_dir: Path, profile: str | None = None) -> Iterator[tuple[str, int]]:
    """`python -m sealroom.controlplane` in its own process (as deployed), so the load
    generator does not share the server's interpreter lock. ``profile``: run it under
    cProfile, written to that file when the server stops."""
    port = free_port()
    env = {**os.environ, "SEALROOM_ADMIN_KEY": ADMIN}
    prof = ["-m", "cProfile", "-o", profile] if profile else []
    proc = subprocess.Popen(
        [
            sys.executable,
            *prof,
            "-m",
            "sealroom.controlplane",
            "--data-dir",
            str(data_dir),
            "--port",
            str(port),
            "--db",
            db_url,
            "--agent-timeout",
            "3600",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("control plane did not start")
            time.sleep(0.1)
        yield url, proc.pid
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(p / 100 * len(s)))] * 1000


def manifest() -> dict[str, Any]:
    def pub(n: str) -> dict[str, str]:
        return PartyKeys.generate(n).public.to_json_obj()

    return {
        "version": 1,
        "id": "bench",
        "name": "placement bench",
        "algorithm": {
            "kind": "python",
            "sha256": "ab" * 32,
            "provider": pub("algo"),
            "entrypoint": "main.py",
        },
        "datasets": [{"name": "a", "sha256": "cd" * 32, "provider": pub("dp"), "max_size": 1024}],
        "consumers": [pub("alice")],
        "policy": {"version": 1, "allow_simulated": True, "require": ["snp"], "snp": {"vmpl": [0]}},
        "limits": {"vcpus": 1, "memory_mb": 512, "wall_seconds": 60, "max_result_bytes": 1024},
    }


def run_one(
    label: str,
    db_url: str,
    hosts: int,
    comps: int,
    workers: int,
    hb_rate: float,
    *,
    replicas: int = 1,
    rate: float = 0.0,
    profile: str | None = None,
) -> dict[str, float]:
    """``replicas`` control-plane processes on one database (clients spread over them);
    ``rate`` > 0 paces the creates at that many per second (else as fast as they go)."""
    h = {"Authorization": f"Bearer {ADMIN}"}
    with contextlib.ExitStack() as stack:
        d = stack.enter_context(tempfile.TemporaryDirectory(prefix="sealroom-bench-"))
        servers = [
            stack.enter_context(serve(db_url, Path(d) / f"r{i}", profile if i == 0 else None))
            for i in range(replicas)
        ]
        ports = [int(url.rsplit(":", 1)[1]) for url, _ in servers]
        local = threading.local()
        counter = iter(range(1 << 30))
        counter_lock = threading.Lock()

        def call(
            method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
        ) -> tuple[int, Any]:
            # One persistent http.client connection per thread: a lighter load generator
            # than httpx, so the client takes less of the machine's CPU from the server.
            c: http.client.HTTPConnection | None = getattr(local, "c", None)
            if c is None:
                with counter_lock:
                    n = next(counter)
                c = http.client.HTTPConnection("127.0.0.1", ports[n % len(ports)], timeout=120)
                local.c = c
            data = json.dumps(body).encode() if body is not None else None
            c.request(method, path, body=data, headers={**(headers or {}), "Content-Type": JSON})
            r = c.getresponse()
            payload = r.read()
            return r.status, json.loads(payload) if payload else None

        def register(i: int) -> str:
            _, tok = call("POST", "/api/v1/hosts/join-tokens", headers=h)
            st, reg = call(
                "POST",
                "/api/v1/agent/register",
                {
                    "join_token": tok["token"],
                    "name": f"sim-{i:04d}",
                    "tee_kinds": ["sim"],
                    "resources": {
                        "cpu_total": 16,
                        "memory_mb_total": 65536,
                        "disk_mb_total": 100000,
                    },
                },
            )
            if st != 201:
                raise RuntimeError(f"register -> {st}: {reg}")
            cred: str = reg["credential"]
            return cred

        t0 = time.perf_counter()
        with ThreadPoolExecutor(workers) as ex:
            creds = list(ex.map(register, range(hosts)))
        print(f"[{label}] registered {hosts} hosts in {time.perf_counter() - t0:.1f} s")

        hb_lat: list[float] = []
        stop = threading.Event()

        def heartbeats() -> None:
            i = 0
            while not stop.is_set():
                start = time.perf_counter()
                st, _ = call(
                    "POST",
                    "/api/v1/agent/heartbeat",
                    {"resources": {"cpu_total": 16, "memory_mb_total": 65536}, "enclaves": []},
                    {"Authorization": f"Bearer {creds[i % len(creds)]}"},
                )
                if st != 200:
                    raise RuntimeError(f"heartbeat -> {st}")
                hb_lat.append(time.perf_counter() - start)
                i += 1
                time.sleep(max(0.0, 1 / hb_rate - (time.perf_counter() - start)))

        hb = threading.Thread(target=heartbeats, daemon=True)
        hb.start()
        doc = manifest()
        lat: list[float] = []
        lock = threading.Lock()
        begin = time.perf_counter()

        def create(i: int) -> None:
            if rate > 0:  # open loop: request i is due at begin + i / rate
                time.sleep(max(0.0, begin + i / rate - time.perf_counter()))
            start = time.perf_counter()
            st, body = call("POST", "/api/v1/computations", {"manifest": doc}, h)
            dt = time.perf_counter() - start
            if st != 201:
                raise RuntimeError(f"create -> {st}: {body}")
            with lock:
                lat.append(dt)

        cpu0 = [cpu_seconds(pid) for _, pid in servers]
        self0 = os.times()
        t0 = time.perf_counter()
        begin = t0
        with ThreadPoolExecutor(workers) as ex:
            list(ex.map(create, range(comps)))
        wall = time.perf_counter() - t0
        cpu = sum(cpu_seconds(pid) - c0 for (_, pid), c0 in zip(servers, cpu0, strict=True))
        self1 = os.times()
        gen_cpu = (self1.user - self0.user) + (self1.system - self0.system)
        stop.set()
        hb.join()
        got = comps / wall
        out = {
            "rate": got,
            "p50": pct(lat, 50),
            "p99": pct(lat, 99),
            "hb_p50": pct(hb_lat, 50) if hb_lat else 0.0,
            "hb_p99": pct(hb_lat, 99) if hb_lat else 0.0,
            "hb_n": float(len(hb_lat)),
            "server_cpu": cpu,
            "per_cpu_s": comps / cpu if cpu else 0.0,
        }
        paced = f" (paced at {rate:.0f}/s)" if rate > 0 else ""
        print(
            f"[{label}] {comps} placements{paced} in {wall:.1f} s: {got:.0f} placements/s; "
            f"create p50 {out['p50']:.1f} ms p99 {out['p99']:.1f} ms; "
            f"{len(hb_lat)} heartbeats p50 {out['hb_p50']:.1f} ms p99 {out['hb_p99']:.1f} ms\n"
            f"[{label}] server CPU {cpu:.1f} s over {wall:.1f} s "
            f"({cpu / wall:.2f} cores, {replicas} process{'es' if replicas > 1 else ''}): "
            f"{out['per_cpu_s']:.0f} placements per server CPU-second; load generator "
            f"{gen_cpu:.1f} CPU s; {load()}"
        )
        return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--db", choices=["sqlite", "postgresql", "both"], default="both")
    ap.add_argument("--hosts", type=int, default=1000)
    ap.add_argument("--computations", type=int, default=10000)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--hb-rate", type=float, default=100.0, help="heartbeats per second")
    ap.add_argument("--pg-url", default=None)
    ap.add_argument(
        "--replicas", type=int, default=1, help="control-plane processes (PostgreSQL only)"
    )
    ap.add_argument("--rate", type=float, default=0.0, help="pace creates at N/s (0: flat out)")
    ap.add_argument("--profile", default=None, help="cProfile the (first) server into FILE")
    a = ap.parse_args()
    kw: dict[str, Any] = {"rate": a.rate, "profile": a.profile}
    results: dict[str, dict[str, float]] = {}
    if a.db in ("sqlite", "both"):
        with tempfile.TemporaryDirectory() as d:
            results["sqlite"] = run_one(
                "sqlite",
                f"sqlite:///{d}/bench.db",
                a.hosts,
                a.computations,
                a.workers,
                a.hb_rate,
                **kw,
            )
    if a.db in ("postgresql", "both"):
        if a.pg_url:
            results["postgresql"] = run_one(
                "postgresql",
                a.pg_url,
                a.hosts,
                a.computations,
                a.workers,
                a.hb_rate,
                replicas=a.replicas,
                **kw,
            )
        else:
            with pg_cluster() as url:
                if url is None:
                    print("[postgresql] skipped: no PostgreSQL binaries under /usr/lib/postgresql")
                else:
                    results["postgresql"] = run_one(
                        "postgresql",
                        url,
                        a.hosts,
                        a.computations,
                        a.workers,
                        a.hb_rate,
                        replicas=a.replicas,
                        **kw,
                    )
    print()
    print(
        f"{'database':<11} {'placements/s':>12} {'target':>7} {'ratio':>6} "
        f"{'p50 ms':>7} {'p99 ms':>7} {'server CPU s':>12} {'per CPU-s':>9}"
    )
    for name, r in results.items():
        print(
            f"{name:<11} {r['rate']:>12.0f} {TARGET:>7.0f} {r['rate'] / TARGET:>6.2f} "
            f"{r['p50']:>7.1f} {r['p99']:>7.1f} {r['server_cpu']:>12.1f} {r['per_cpu_s']:>9.0f}"
        )
    print(
        f"(target = design.md: >= {TARGET:.0f} placements/s with {a.hosts} registered hosts; "
        "no peer system runs here, so the peer figure is the target; "
        f"run id {uuid.uuid4().hex[:8]})"
    )


if __name__ == "__main__":
    main()

"""Attested-service benchmark (issue 12): requests/s and p50/p99 latency through the
attested path vs the same handler served directly with the same TLS settings, same run.

Ours: client -> host agent relay (``TcpToUnixRelay`` in its own process, as the agent
runs it) -> the service enclave's Unix socket, TLS terminated in the enclave with its
in-enclave key (TLS 1.3, P-256, no tickets) -> the sandbox's ingress bridge -> the
workload (a ``ThreadingHTTPServer`` handler) inside bubblewrap. The client verifies the
enclave once (evidence, policy, spec hash, TLS key) and pins its key on every connection.

Peer: the very same handler file run directly by the same interpreter, its socket
wrapped in TLS with the same settings (TLS 1.3, P-256 self-signed, no tickets).

Load: ``--clients`` processes, each with one keep-alive HTTPS connection, GET / for
``--seconds``; rounds alternate peer and ours (which goes first alternates), so
background load on the machine hits both alike. Prints req/s, p50, p99 and the ratio.
Target (design.md): ours >= 0.8x the peer's req/s.

Run:   .venv/bin/python bench/service_bench.py [--clients 4] [--seconds 5] [--rounds 3]
Needs bubblewrap (Debian), as the runtime does. Not part of CI.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cryptography import x509

from benchlib import self_signed
from sealroom.attestation.policy import Policy
from sealroom.client.enclave import PinnedHTTPSConnection
from sealroom.client.service import ServiceClient
from sealroom.hostagent.launcher import launch_local, runtime_measurement
from sealroom.protocol.service import load_spec

APP = """\
import os, ssl
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

BODY = b"ok " * 32

class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are two writes: no delayed-ACK wait

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, *a):
        pass

server = ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H)
tls_dir = os.environ.get("BENCH_TLS_DIR")  # the peer only: TLS as the enclave sets it up
if tls_dir:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.num_tickets = 0
    ctx.load_cert_chain(os.path.join(tls_dir, "cert.pem"), os.path.join(tls_dir, "key.pem"))
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
print("ready", flush=True)
server.serve_forever()
"""

RELAY = """\
import sys, time
from pathlib import Path
from sealroom.hostagent.relay import TcpToUnixRelay
r = TcpToUnixRelay(Path(sys.argv[1])).start()
print(r.port, flush=True)
while True:
    time.sleep(3600)
"""


def _worker(port: int, pin: bytes | None, seconds: float, out: mp.Queue[list[float]]) -> None:
    conn = PinnedHTTPSConnection("127.0.0.1", port, pin, 30.0)
    lat: list[float] = []
    deadline = time.perf_counter() + seconds
    while (t0 := time.perf_counter()) < deadline:
        conn.request("GET", "/")
        resp = conn.getresponse()
        resp.read()
        if resp.status != 200:
            raise SystemExit(f"HTTP {resp.status}")
        lat.append(time.perf_counter() - t0)
    conn.close()
    out.put(lat)


def load(port: int, pin: bytes | None, clients: int, seconds: float) -> list[float]:
    q: mp.Queue[list[float]] = mp.Queue()
    procs = [mp.Process(target=_worker, args=(port, pin, seconds, q)) for _ in range(clients)]
    for p in procs:
        p.start()
    lat = [x for _ in procs for x in q.get(timeout=seconds + 120)]
    for p in procs:
        p.join()
    return lat


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="svc-bench-") as tmp_s:
        tmp = Path(tmp_s)
        os.environ["SEALROOM_HOME"] = str(tmp / "home")
        (tmp / "app.py").write_text(APP)
        (tmp / "spec.json").write_text(
            json.dumps(
                {
                    "name": "bench",
                    "kind": "python",
                    "command": ["app.py"],
                    "port": 8080,
                    "files": {"app.py": {"source": "app.py"}},
                    "resources": {"vcpus": 2, "memory_mb": 512},
                }
            )
        )
        self_signed(tmp)  # cert.pem, key.pem
        peer_port = 18000 + os.getpid() % 1000
        peer = subprocess.Popen(
            [sys.executable, str(tmp / "app.py")],
            env={**os.environ, "PORT": str(peer_port), "BENCH_TLS_DIR": str(tmp)},
            stdout=subprocess.PIPE,
            text=True,
        )
        assert peer.stdout is not None and peer.stdout.readline().strip() == "ready"
        sock = tmp / "svc.sock"
        enclave = launch_local(
            tmp / "spec.json", tee="sim", listen=f"unix:{sock}", home=tmp / "home", is_service=True
        )
        relay = subprocess.Popen(
            [sys.executable, "-c", RELAY, str(sock)], stdout=subprocess.PIPE, text=True
        )
        try:
            assert relay.stdout is not None
            relay_port = int(relay.stdout.readline())
            policy = Policy.loads(
                json.dumps(
                    {
                        "version": 1,
                        "allow_simulated": True,
                        "require": ["snp"],
                        "snp": {
                            "measurements": [runtime_measurement().hex()],
                            "report_data": {"mode": "sealroom-v1"},
                        },
                    }
                )
            )
            roots = tuple(
                x509.load_pem_x509_certificates((tmp / "home/sim-authority/ark.pem").read_bytes())
            )
            client = ServiceClient(
                f"https://127.0.0.1:{relay_port}",
                policy,
                spec=load_spec(tmp / "spec.json"),
                extra_roots=roots,
            )
            attested = client.attest()
            pin = attested.keys.tls_spki
            print(
                f"service verified (SIMULATED={attested.simulated}), spec "
                f"{attested.spec_hash.hex()[:16]}…; {args.clients} clients x {args.seconds:g} s "
                f"x {args.rounds} rounds"
            )
            ours_lat: list[float] = []
            peer_lat: list[float] = []
            ours_t = peer_t = 0.0
            load(relay_port, pin, args.clients, 1.0)  # warm-up
            load(peer_port, None, args.clients, 1.0)
            for r in range(args.rounds):
                order = [("ours", relay_port, pin), ("peer", peer_port, None)]
                if r % 2:
                    order.reverse()
                for name, port, key in order:
                    lat = load(port, key, args.clients, args.seconds)
                    if name == "ours":
                        ours_lat += lat
                        ours_t += args.seconds
                    else:
                        peer_lat += lat
                        peer_t += args.seconds
        finally:
            relay.terminate()
            enclave.stop()
            peer.terminate()
            relay.wait()
            peer.wait()

    def stats(lat: list[float], t: float) -> tuple[float, float, float]:
        q = statistics.quantiles(lat, n=100)
        return len(lat) / t, q[49] * 1e3, q[98] * 1e3

    o, p = stats(ours_lat, ours_t), stats(peer_lat, peer_t)
    print(f"{'':34} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8}")
    print(f"{'ours: relay + enclave TLS + sandbox':34} {o[0]:9.0f} {o[1]:8.2f} {o[2]:8.2f}")
    print(f"{'peer: same handler, direct TLS':34} {p[0]:9.0f} {p[1]:8.2f} {p[2]:8.2f}")
    print(f"ratio ours/peer req/s: {o[0] / p[0]:.2f}x (target >= 0.8x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Ingest benchmark (issue 4): a large signed upload into a local enclave runtime, next to
curl uploading the same file to nginx over HTTPS on 127.0.0.1, in the same run.

Ours: `launch_local` (sim TEE) with a manifest whose dataset slot takes the file, then
`EnclaveClient.upload` timed around the call. That call includes the client's SHA-256
pre-pass over the file (the hash goes into the signed upload message), the Ed25519
signature, the TLS connection and the streamed PUT; the runtime hashes while it writes
to enclave storage and answers after the data verified. Attestation is done before the
clock starts. A fresh enclave per round (a slot is filled once).

Peer: nginx (Debian) with its WebDAV module, `dav_methods PUT`: nginx reads the whole
request body into a temporary file (client_body_temp_path) and renames it into place
before it answers 201, so the answer means every byte has been received and written.
TLS 1.3 on both sides, an EC P-256 certificate like the enclave's. The client is
`curl -T FILE` (streams the file; `--data-binary @FILE` would first read the whole file
into curl's memory), with `Expect:` disabled, as our client does not use it either.

Memory: VmHWM (peak RSS) of the runtime process after the upload, and of nginx's worker.
Rounds interleave ours and the peer (alternating which goes first) so background load
hits both alike; `sync` runs between measurements, outside the timed part.

Run:   .venv/bin/python bench/ingest_bench.py                 # 1 GiB, 3 rounds
       .venv/bin/python bench/ingest_bench.py --also-4g       # plus one 4 GiB round each
       .venv/bin/python bench/ingest_bench.py --size-mb 256 --rounds 5
Needs nginx and curl (Debian); as root the script installs missing ones with apt-get.
Not part of CI and not a `run()` row of attest_bench.py (it takes minutes and GiBs).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import NamedTuple

from benchlib import self_signed
from sealroom.attestation.sim.authority import SimAuthority
from sealroom.client.enclave import EnclaveClient
from sealroom.crypto.keys import PartyKeys
from sealroom.errors import UnavailableError
from sealroom.hostagent.launcher import LocalEnclave, launch_local, runtime_measurement
from sealroom.manifest import Manifest

MiB = 1 << 20
BLOCK = 16 * MiB
ALGORITHM = b"print('never runs: the benchmark fills only the dataset slot')\n"


# ---- helpers ----------------------------------------------------------------------------
def proc_status(pid: int, field: str) -> int:
    """A kB field of /proc/PID/status (VmHWM, VmRSS), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(f"{field} not in /proc/{pid}/status")


def children(pid: int) -> list[int]:
    found = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            with contextlib.suppress(OSError):
                stat = (d / "stat").read_text()
                if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(d.name))
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def make_file(path: Path, size: int) -> str:
    """`size` bytes: one random 16 MiB block repeated (nothing on the path compresses).
    Returns its SHA-256 hex."""
    block = os.urandom(BLOCK)
    h = hashlib.sha256()
    with path.open("wb") as f:
        left = size
        while left > 0:
            part = block[: min(BLOCK, left)]
            f.write(part)
            h.update(part)
            left -= len(part)
    return h.hexdigest()


def ensure_tools() -> None:
    missing = [pkg for pkg, exe in (("nginx", "nginx"), ("curl", "curl")) if not _which(exe)]
    if not missing:
        return
    if os.geteuid() != 0:
        sys.exit(
            f"ingest_bench: the peer needs {' and '.join(missing)} (Debian packages); "
            f"install them: sudo apt-get install -y {' '.join(missing)}"
        )
    print(f"installing {' '.join(missing)} with apt-get (running as root) ...", flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env, stdout=subprocess.DEVNULL)
    subprocess.run(
        ["apt-get", "install", "-y", "-q", *missing], check=True, env=env, stdout=subprocess.DEVNULL
    )
    if any(not _which(exe) for exe in missing):
        sys.exit(f"ingest_bench: apt-get installed {missing} but they are not on PATH")


def _which(exe: str) -> str | None:
    return shutil.which(exe) or shutil.which(exe, path="/usr/sbin:/usr/bin:/sbin:/bin")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu(who: int = resource.RUSAGE_SELF) -> float:
    ru = resource.getrusage(who)
    return ru.ru_utime + ru.ru_stime


def sync() -> None:
    os.sync()
    time.sleep(0.5)


# ---- ours -------------------------------------------------------------------------------
class Upload(NamedTuple):
    seconds: float
    server_cpu: float  # CPU seconds of the receiving process during the upload
    client_cpu: float  # CPU seconds of the sending side (this process, or curl)
    hwm: int = 0  # ours: peak RSS of the runtime process, its whole life to the upload's end
    rss_before: int = 0  # ours: RSS after start + attestation, before the upload


def write_manifest(tmp: Path, data_sha: str, size: int, provider: PartyKeys) -> Path:
    keys = {n: PartyKeys.generate(n) for n in ("lab", "reader")}
    doc = {
        "version": 1,
        "id": "ingest-bench",
        "name": "ingest benchmark",
        "algorithm": {
            "kind": "python",
            "sha256": hashlib.sha256(ALGORITHM).hexdigest(),
            "provider": keys["lab"].public.to_json_obj(),
            "entrypoint": "main.py",
            "args": [],
        },
        "datasets": [
            {
                "name": "data",
                "sha256": data_sha,
                "provider": provider.public.to_json_obj(),
                "max_size": size,
            }
        ],
        "consumers": [keys["reader"].public.to_json_obj()],
        "policy": {
            "version": 1,
            "allow_simulated": True,
            "require": ["snp"],
            "snp": {"measurements": [runtime_measurement().hex()], "vmpl": [0]},
        },
        "limits": {"vcpus": 1, "memory_mb": 256, "wall_seconds": 30, "max_result_bytes": MiB},
    }
    path = tmp / f"manifest-{size}.json"
    path.write_text(json.dumps(doc, indent=2))
    return path


def launch(manifest_path: Path, home: Path) -> LocalEnclave:
    """launch_local, retried: the sandbox probe at start-up can fail with EAGAIN while
    another runtime's algorithm on this host holds processes of the sandbox uid."""
    for attempt in range(3):
        try:
            return launch_local(manifest_path, tee="sim", home=home, workdir=home / "enclave")
        except UnavailableError as e:
            if attempt == 2:
                raise
            print(f"  (enclave did not start: {e.message}; retrying)", flush=True)
            time.sleep(3)
    raise AssertionError("unreachable")


def ours_once(tmp: Path, sha: str, data: Path, provider: PartyKeys, home: Path) -> Upload:
    # A manifest per round: it names the runtime's measurement, taken just before launch.
    manifest_path = write_manifest(tmp, sha, data.stat().st_size, provider)
    manifest = Manifest.load(manifest_path)
    with launch(manifest_path, home) as enc:
        root = SimAuthority.load_or_create(home / "sim-authority").root
        client = EnclaveClient(enc.url, manifest, extra_roots=(root,), timeout=600)
        client.attest()
        pid = enc.process.pid
        before = proc_status(pid, "VmRSS")
        server0, client0 = cpu_seconds(pid), own_cpu()
        start = time.perf_counter()
        result = client.upload("data", data, provider)
        seconds = time.perf_counter() - start
        server_cpu, client_cpu = cpu_seconds(pid) - server0, own_cpu() - client0
        hwm = proc_status(pid, "VmHWM")
        if result.size != data.stat().st_size:
            raise RuntimeError(f"enclave accepted {result.size} bytes, sent more")
    return Upload(seconds, server_cpu, client_cpu, hwm, before)


# ---- the peer: nginx + curl ---------------------------------------------------------------
NGINX_CONF = """\
worker_processes 1;
daemon off;
master_process on;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
{user}
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {d}/cert.pem;
        ssl_certificate_key {d}/key.pem;
        ssl_protocols TLSv1.3;
        client_max_body_size 0;
        location /up/ {{
            root {d}/dav;
            dav_methods PUT;
            create_full_put_path on;
            dav_access user:rw;
        }}
    }}
}}
"""


@contextlib.contextmanager
def nginx(base: Path) -> Iterator[tuple[int, int]]:
    """A throwaway nginx on 127.0.0.1; yields (port, master pid)."""
    d = base / "nginx"
    d.mkdir()
    self_signed(d)
    user = ""
    if os.geteuid() == 0:
        # The worker drops to nobody: it must reach and write its own directories.
        user = "user nobody nogroup;"
        base.chmod(0o711)
        d.chmod(0o711)
    for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi", "dav"):
        (d / sub).mkdir()
        if os.geteuid() == 0:
            os.chown(d / sub, _uid("nobody"), -1)
    port = free_port()
    (d / "nginx.conf").write_text(NGINX_CONF.format(d=d, port=port, user=user))
    exe = _which("nginx")
    assert exe is not None
    proc = subprocess.Popen(
        [exe, "-p", str(d), "-c", str(d / "nginx.conf"), "-e", str(d / "error.log")],
        stdin=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            if proc.poll() is not None:
                log = (d / "error.log").read_text() if (d / "error.log").exists() else ""
                raise RuntimeError(f"nginx exited with {proc.returncode}: {log}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            if time.monotonic() > deadline:
                raise RuntimeError("nginx did not start listening within 10 s")
            time.sleep(0.05)
        yield port, proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _uid(name: str) -> int:
    import pwd

    return pwd.getpwnam(name).pw_uid


def curl_cmd(port: int, data: Path) -> list[str]:
    exe = _which("curl")
    assert exe is not None
    return [
        exe,
        "-sS",
        "-k",
        "--http1.1",
        "-H",
        "Expect:",
        "-T",
        str(data),
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        f"https://127.0.0.1:{port}/up/data.bin",
    ]


def peer_once(port: int, data: Path, dav: Path, worker: int) -> Upload:
    server0, client0 = cpu_seconds(worker), own_cpu(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(curl_cmd(port, data), capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    server_cpu = cpu_seconds(worker) - server0
    client_cpu = own_cpu(resource.RUSAGE_CHILDREN) - client0
    if done.returncode != 0 or done.stdout.strip() not in ("201", "204"):
        raise RuntimeError(f"curl failed ({done.returncode}, HTTP {done.stdout}): {done.stderr}")
    stored = dav / "up" / "data.bin"
    if stored.stat().st_size != data.stat().st_size:
        raise RuntimeError(f"nginx stored {stored.stat().st_size} bytes")
    stored.unlink()
    return Upload(seconds, server_cpu, client_cpu)


def peer_cipher(port: int) -> str:
    exe = _which("curl")
    assert exe is not None
    out = subprocess.run(
        [exe, "-sk", "-v", "-o", "/dev/null", f"https://127.0.0.1:{port}/"],
        capture_output=True,
        text=True,
        check=False,
    ).stderr
    for line in out.splitlines():
        if "SSL connection using" in line:
            return line.split("using", 1)[1].strip()
    return "?"


# ---- the run --------------------------------------------------------------------------------
class SizeResult(NamedTuple):
    size: int
    ours: list[Upload]
    peer: list[Upload]
    peer_hwm: int
    sha_seconds: float


def mibps(size: int, seconds: float) -> float:
    return size / MiB / seconds


def measure(size: int, rounds: int, tmp: Path, port: int, master: int) -> SizeResult:
    data = tmp / f"ingest-{size}.bin"
    print(f"\n== {size / MiB:.0f} MiB: writing the test file ...", flush=True)
    provider = PartyKeys.generate("provider")
    sha = make_file(data, size)
    start = time.perf_counter()
    h = hashlib.sha256()
    with data.open("rb") as f:
        while chunk := f.read(MiB):
            h.update(chunk)
    sha_seconds = time.perf_counter() - start
    home = Path(os.environ["SEALROOM_HOME"])
    dav = tmp / "nginx" / "dav"
    ours: list[Upload] = []
    peer: list[Upload] = []
    (worker,) = children(master)
    try:
        sync()
        for r in range(rounds):
            order = ("ours", "peer") if r % 2 == 0 else ("peer", "ours")
            for who in order:
                if who == "ours":
                    u = ours_once(tmp, sha, data, provider, home)
                    ours.append(u)
                    extra = f"  peak RSS {u.hwm / MiB:.1f} MiB"
                else:
                    u = peer_once(port, data, dav, worker)
                    peer.append(u)
                    extra = ""
                line = (
                    f"{who} {mibps(size, u.seconds):7.1f} MiB/s  CPU s: server "
                    f"{u.server_cpu:.2f}, client {u.client_cpu:.2f}{extra}"
                )
                print(f"  round {r + 1}: {line}", flush=True)
                sync()
    finally:
        data.unlink(missing_ok=True)
    peer_hwm = proc_status(worker, "VmHWM")
    return SizeResult(size, ours, peer, peer_hwm, sha_seconds)


def report(results: list[SizeResult], cipher: str) -> None:
    print(f"\npeer: nginx {_version()} WebDAV PUT over TLS ({cipher}), curl -T")
    for res in results:
        size = res.size
        ours_s = statistics.median(o.seconds for o in res.ours)
        peer_s = statistics.median(p.seconds for p in res.peer)
        ours_r, peer_r = mibps(size, ours_s), mibps(size, peer_s)
        hwm = max(o.hwm for o in res.ours)
        before = max(o.rss_before for o in res.ours)
        label = f"{size / MiB:.0f} MiB upload"
        n = f"median of {len(res.ours)}"
        print(f"{label}  ours {ours_r:>8.1f} MiB/s  ({ours_s:.2f} s, {n}; sealroom upload)")
        print(f"{'':<{len(label)}}  peer {peer_r:>8.1f} MiB/s  ({peer_s:.2f} s; curl -> nginx)")
        print(f"{'':<{len(label)}}  ratio {ours_r / peer_r:>7.2f}x")
        print(
            f"{'':<{len(label)}}  peak RSS: runtime {hwm / MiB:.1f} MiB (RSS {before / MiB:.1f} "
            f"MiB before the upload); nginx worker {res.peer_hwm / MiB:.1f} MiB"
        )
        gib = size / (1 << 30)
        cpu = {
            k: statistics.median(float(getattr(u, side)) for u in runs) / gib
            for k, runs, side in (
                ("runtime", res.ours, "server_cpu"),
                ("our client", res.ours, "client_cpu"),
                ("nginx worker", res.peer, "server_cpu"),
                ("curl", res.peer, "client_cpu"),
            )
        }
        print(
            f"{'':<{len(label)}}  CPU s per GiB (median): "
            + ", ".join(f"{k} {v:.2f}" for k, v in cpu.items())
        )
        print(
            f"{'':<{len(label)}}  of ours: client SHA-256 pre-pass alone "
            f"{res.sha_seconds:.2f} s ({mibps(size, res.sha_seconds):.0f} MiB/s)"
        )


def _version() -> str:
    exe = _which("nginx")
    assert exe is not None
    out = subprocess.run([exe, "-v"], capture_output=True, text=True, check=False).stderr
    return out.strip().rsplit("/", 1)[-1]


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mb", type=int, default=1024, help="file size in MiB (default 1024)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds per size (default 3)")
    ap.add_argument("--also-4g", action="store_true", help="then a 4 GiB file as well")
    ap.add_argument("--rounds-4g", type=int, default=1, help="rounds for 4 GiB (default 1)")
    args = ap.parse_args()
    if shutil.which("bwrap") is None:
        sys.exit("ingest_bench: the runtime needs bubblewrap (Debian 'bubblewrap')")
    ensure_tools()
    signal.signal(signal.SIGTERM, _interrupt)
    plan = [(args.size_mb * MiB, args.rounds)]
    if args.also_4g:
        plan.append((4096 * MiB, args.rounds_4g))
    with tempfile.TemporaryDirectory(prefix="ingest-bench-") as tmp_s:
        tmp = Path(tmp_s)
        need = max(s for s, _ in plan) * 3
        free = shutil.disk_usage(tmp).free
        if free < need:
            sys.exit(f"ingest_bench: {free / MiB:.0f} MiB free in {tmp}, need {need / MiB:.0f}")
        os.environ["SEALROOM_HOME"] = str(tmp / "home")
        results = []
        try:
            with nginx(tmp) as (port, master):
                cipher = peer_cipher(port)
                for size, rounds in plan:
                    results.append(measure(size, rounds, tmp, port, master))
        except KeyboardInterrupt:
            print("\ninterrupted: nginx and the enclave stopped, test files removed")
            return 130
    report(results, cipher)
    return 0


if __name__ == "__main__":
    sys.exit(main())

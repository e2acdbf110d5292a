"""Confidential inference benchmark (issue 13): inferences/s and p50/p99 latency of the
attested path against onnxruntime called directly in-process, same model, same inputs,
same run; the ratio, and where the time of the attested path goes.

Ours: the model server enclave (sim TEE) on a Unix socket behind the host agent's relay
(``TcpToUnixRelay`` in its own process, as the agent runs it). The client verifies the
enclave once (evidence, policy, model spec hash, TLS key), then for every inference:
seals the input (HPKE) to the attested key, POSTs it on a kept-alive connection pinned
to the attested TLS key, and opens and checks the answer (sealed to the client, signed
by the enclave over request, response, model hash and evidence digest). In the enclave:
HPKE open, a frame to the inference worker in the sandbox (onnxruntime, 1 vCPU), sign,
seal. Peer: ``onnxruntime.InferenceSession.run`` in this process on the same model and
input (numpy), one intra-op thread like the sandbox's one vCPU.

Two models, built here with onnx.helper: ``small`` (an MLP 4-8-3, batch 1: the fixed
cost of the path) and ``large`` (an MLP 1024-4096-1024, batch 8, 32 MiB of weights:
inference dominates), each with tensors as JSON lists and as raw little-endian bytes
(``encoding="b64"``). Rounds alternate which side goes first.

Run:   .venv/bin/python bench/model_bench.py [--seconds 3] [--rounds 3]
Needs bubblewrap (Debian), as the runtime does. Not part of CI.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from sealroom.attestation.policy import Policy
from sealroom.client.model import ModelClient, TensorEncoding
from sealroom.crypto.sealing import open_bytes, seal_bytes
from sealroom.crypto.signing import signed_json
from sealroom.hostagent.launcher import launch_local, runtime_measurement
from sealroom.protocol.model import ANSWER_DOMAIN, ANSWER_INFO, REQUEST_INFO, pin_model
from sealroom.testing.onnx_models import mlp

RELAY = """\
import sys, time
from pathlib import Path
from sealroom.hostagent.relay import TcpToUnixRelay
r = TcpToUnixRelay(Path(sys.argv[1])).start()
print(r.port, flush=True)
while True:
    time.sleep(3600)
"""

MODELS = {
    # name: (n_in, hidden, n_out, batch)
    "small": (4, 8, 3, 1),
    "large": (1024, 4096, 1024, 8),
}


def timed(fn: Callable[[], Any], seconds: float) -> list[float]:
    lat: list[float] = []
    deadline = time.perf_counter() + seconds
    while (t0 := time.perf_counter()) < deadline:
        fn()
        lat.append(time.perf_counter() - t0)
    return lat


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def _decode(out: Any) -> Any:
    if isinstance(out, dict):
        raw = base64.b64decode(out["b64"])
        return np.frombuffer(raw, dtype=np.dtype(out["dtype"])).reshape(out["shape"])
    return out


def bench_model(
    name: str, tmp: Path, relay_cmd: list[str], seconds: float, rounds: int, encoding: str
) -> dict[str, Any]:
    n_in, hidden, n_out, batch = MODELS[name]
    weights = mlp(tmp / f"{name}.onnx", n_in=n_in, hidden=hidden, n_out=n_out)
    spec = pin_model(weights, name)
    spec_path = tmp / f"{name}.json"
    spec_path.write_text(json.dumps(spec.to_json_obj()))
    rng = random.Random(7)  # noqa: S311 - benchmark inputs
    x = [[rng.uniform(-1, 1) for _ in range(n_in)] for _ in range(batch)]
    x_np = np.array(x, dtype=np.float32)
    raw = {
        "dtype": "float32",
        "shape": [batch, n_in],
        "b64": base64.b64encode(x_np.tobytes()).decode(),
    }
    inputs: dict[str, Any] = {"x": raw if encoding == "b64" else x}
    enc: TensorEncoding = "b64" if encoding == "b64" else "json"

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(weights), opts, providers=["CPUExecutionProvider"])

    def peer() -> None:
        sess.run(None, {"x": x_np})

    sock = tmp / f"{name}.sock"
    enclave = launch_local(
        spec_path, tee="sim", listen=f"unix:{sock}", home=tmp / "home", weights=weights
    )
    relay = subprocess.Popen([*relay_cmd, str(sock)], stdout=subprocess.PIPE, text=True)
    try:
        assert relay.stdout is not None
        port = int(relay.stdout.readline())
        policy = Policy.loads(
            json.dumps(
                {
                    "version": 1,
                    "allow_simulated": True,
                    "require": ["snp"],
                    "snp": {
                        "measurements": [runtime_measurement().hex()],
                        "report_data": {"mode": "sealroom-v1"},
                        "host_data": spec.spec_hash.hex(),
                    },
                }
            )
        )
        roots = tuple(
            x509.load_pem_x509_certificates((tmp / "home/sim-authority/ark.pem").read_bytes())
        )
        client = ModelClient(f"https://127.0.0.1:{port}", policy, spec, extra_roots=roots)
        t0 = time.perf_counter()
        client.attest()
        verify_once = time.perf_counter() - t0
        key = X25519PrivateKey.generate()
        parts: dict[str, list[float]] = {"seal": [], "round trip": [], "open+check": []}

        def ours() -> None:
            a = time.perf_counter()
            plain, sealed = client.seal_request(inputs, key, enc)
            b = time.perf_counter()
            body = client.post_sealed(sealed)
            c = time.perf_counter()
            client.open_answer(plain, sealed, body, key)
            d = time.perf_counter()
            parts["seal"].append(b - a)
            parts["round trip"].append(c - b)
            parts["open+check"].append(d - c)

        answer = _decode(client.infer(inputs, key, enc).response["outputs"]["y"])
        assert np.allclose(answer, sess.run(None, {"x": x_np})[0], rtol=1e-5, atol=1e-6)
        timed(ours, 1.0)  # warm-up
        timed(peer, 1.0)
        for p in parts.values():
            p.clear()
        ours_lat: list[float] = []
        peer_lat: list[float] = []
        for r in range(rounds):
            order: list[tuple[str, Callable[[], None]]] = [("ours", ours), ("peer", peer)]
            if r % 2:
                order.reverse()
            for side, fn in order:
                (ours_lat if side == "ours" else peer_lat).extend(timed(fn, seconds))
        # The enclave's own crypto per request, measured here on the same payload sizes.
        plain, _ = client.seal_request(inputs, key, enc)
        resp = json.dumps(client.infer(inputs, key, enc).response).encode()
        enc_key = X25519PrivateKey.generate()
        sealed_here = seal_bytes(plain, enc_key.public_key(), info=REQUEST_INFO)
        sk = Ed25519PrivateKey.generate()

        def enclave_crypto() -> None:
            open_bytes(sealed_here, enc_key, info=REQUEST_INFO)
            st = signed_json({"r": hashlib.sha256(resp).hexdigest()}, sk, ANSWER_DOMAIN)
            seal_bytes(json.dumps({"r": len(resp), "s": st}).encode() + resp, key.public_key(),
                       info=ANSWER_INFO)  # fmt: skip

        crypto = timed(enclave_crypto, 1.0)
        client.close()
    finally:
        relay.terminate()
        relay.wait()
        enclave.stop()
    ours_rate = len(ours_lat) / (seconds * rounds)
    peer_rate = len(peer_lat) / (seconds * rounds)
    return {
        "model": name,
        "encoding": encoding,
        "shape": f"MLP {n_in}-{hidden}-{n_out}, batch {batch}",
        "weights_bytes": spec.size,
        "verify_once_ms": verify_once * 1e3,
        "ours_per_s": ours_rate,
        "peer_per_s": peer_rate,
        "ratio": ours_rate / peer_rate,
        "ours_p50_ms": pct(ours_lat, 0.5) * 1e3,
        "ours_p99_ms": pct(ours_lat, 0.99) * 1e3,
        "peer_p50_ms": pct(peer_lat, 0.5) * 1e3,
        "peer_p99_ms": pct(peer_lat, 0.99) * 1e3,
        "where_ms": {
            **{k: statistics.median(v) * 1e3 for k, v in parts.items()},
            "enclave crypto (in round trip)": statistics.median(crypto) * 1e3,
        },
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--models", default="small,large")
    ap.add_argument("--encodings", default="json,b64", help="tensors as JSON lists / raw")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="model-bench-") as tmp_s:
        tmp = Path(tmp_s)
        os.environ["SEALROOM_HOME"] = str(tmp / "home")
        relay_cmd = [sys.executable, "-c", RELAY]
        results = [
            bench_model(m, tmp, relay_cmd, args.seconds, args.rounds, e)
            for m in args.models.split(",")
            for e in args.encodings.split(",")
        ]
    if args.json:
        print(json.dumps(results, indent=1))
        return 0
    for r in results:
        print(
            f"\n{r['model']}: {r['shape']} ({r['weights_bytes']} bytes of weights), "
            f"tensors as {r['encoding']}"
        )
        print(
            f"  verify once (evidence, policy, model hash, TLS key): {r['verify_once_ms']:.1f} ms"
        )
        print(
            f"  ours (attested, sealed, signed, via relay): {r['ours_per_s']:9.1f} inf/s  "
            f"p50 {r['ours_p50_ms']:.3f} ms  p99 {r['ours_p99_ms']:.3f} ms"
        )
        print(
            f"  peer (onnxruntime in-process):              {r['peer_per_s']:9.1f} inf/s  "
            f"p50 {r['peer_p50_ms']:.3f} ms  p99 {r['peer_p99_ms']:.3f} ms"
        )
        print(f"  ratio ours/peer: {r['ratio']:.3f}")
        print(
            "  where ours goes (median ms): "
            + ", ".join(f"{k} {v:.3f}" for k, v in r["where_ms"].items())
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

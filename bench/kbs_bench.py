"""Key broker / attestation service benchmark (issue 10): our figure over HTTP, the
physical floor from the same run (in-process verification of the same evidence), the ratio.

Rows, each measured with ``paired_rates`` (alternating slices of the same wall time):
  (0) an empty round trip (``GET /healthz``) to the same server over the same connection:
      what HTTP alone costs here, the ceiling of every row below;
  (a) EAR tokens/s from the attestation service: ``POST /api/v1/attestation/verify`` of
      one piece of evidence, answered with an ES256 EAR; the client checks nothing.
  (b) Full RCAR flows/s against the key broker, as a guest runs them: ``auth`` ->
      ``attest`` (fresh TEE key, evidence bound to the session's runtime data) ->
      ``resource`` (JWE decrypted as Trustee's guest client does). The guest's own work
      (making sim evidence, key generation, JWE decryption) is in the figure.
Floor for each: ``Verifier.appraise`` of the same evidence in this process (parse, verify
signatures and chain, appraise against the same policy), no HTTP, no EAR.

Evidence: sim SEV-SNP (SIMULATED, a policy with ``allow_simulated: true``) at the current
time, and a real AMD SEV-SNP report (Trustee's AS end-to-end Genoa evidence from
../shared/vectors, read in place) at its pinned time 2025-06-01. A real report cannot be
bound to a fresh session, so its KBS row stops at ``attest``: the evidence is verified and
appraised in full and the answer is the refusal of the runtime-data binding rule
(``kbs.REPORT_DATA``); the row says so.

The server (key broker + attestation service on one port, SQLite store, as
``sealroom kbs serve`` builds it) runs in its own process under uvicorn; the client is
this process, one keep-alive connection.

Run:   .venv/bin/python bench/kbs_bench.py [--seconds 3]      Not part of CI.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives import serialization

from benchlib import Row, paired_rates, print_rows
from sealroom.attestation.ear import VerifierKey
from sealroom.attestation.evidence import EvidenceBundle
from sealroom.attestation.policy import Policy
from sealroom.attestation.sim.authority import SimAuthority
from sealroom.attestation.verifier import load_evidence
from sealroom.kbs.client import KbsClient, KbsRefused, envelope_evidence, report_data
from sealroom.kbs.verify import Verifier

HERE = Path(__file__).resolve().parent
VECTORS = (HERE / ".." / ".." / "shared" / "vectors").resolve()
REAL_SNP = VECTORS / "amd/genoa_trustee_e2e/snp_evidence.json"
PINNED = datetime(2025, 6, 1, tzinfo=UTC)
MEASUREMENT = bytes.fromhex("ab" * 48)
SECRET = b"k" * 32

RELEASE = """version: 1
id: bench-release
rules:
  - resources: "default/key/*"
    status: warning          # sim evidence is never "affirming" hardware (AR4SI)
    allow_simulated: true
    kinds: [snp]
"""

SERVER = """\
import os, sys
from datetime import datetime
from pathlib import Path

import uvicorn
from cryptography import x509

from sealroom.attestation.ear import VerifierKey
from sealroom.kbs.attestation_service import add_attestation_routes
from sealroom.kbs.server import create_app, hash_admin_key
from sealroom.kbs.store import Store
from sealroom.kbs.verify import Verifier

data, port, root, pinned = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
roots = tuple(x509.load_pem_x509_certificates(Path(root).read_bytes())) if root else ()
at = datetime.fromisoformat(pinned) if pinned else None
verifier = Verifier(
    VerifierKey.generate(), extra_roots=roots, clock=(lambda: at) if at is not None else None
)
store = Store(f"sqlite:///{data / 'kbs.db'}")
hashes = [hash_admin_key(os.environ["BENCH_KBS_ADMIN_KEY"])]
app = create_app(store, verifier, admin_key_hashes=hashes)
add_attestation_routes(app, store, verifier, admin_key_hashes=hashes)
uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
"""


def _b64url(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()


def _free_port() -> int:
    from sealroom.testing.postgres import free_port

    return free_port()


@contextmanager
def kbs_server(tmp: Path, root_pem: Path | None, pinned: datetime | None) -> Iterator[httpx.Client]:
    """The server process; yields an admin client (bearer key via the environment)."""
    data = tmp / f"kbs-{'pinned' if pinned else 'live'}"
    data.mkdir()
    port = _free_port()
    admin = secrets.token_urlsafe(24)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            SERVER,
            str(data),
            str(port),
            str(root_pem or ""),  # none: the vendor roots only
            pinned.isoformat() if pinned else "",
        ],
        env={**os.environ, "BENCH_KBS_ADMIN_KEY": admin},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                httpx.get(f"{url}/kbs/v0/resources", timeout=2)
                break
            except httpx.HTTPError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("the key broker did not start") from None
                time.sleep(0.1)
        with httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {admin}"}, timeout=60
        ) as c:
            yield c
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _ok(r: httpx.Response) -> httpx.Response:
    if r.status_code not in (200, 204):
        raise SystemExit(f"{r.request.method} {r.request.url}: {r.status_code} {r.text}")
    return r


def configure(admin: httpx.Client, policy_text: str) -> None:
    _ok(admin.put("/api/v1/attestation/policies/bench", content=policy_text))
    body = {"type": "sealroom", "policy_id": "default", "policy": _b64url(policy_text)}
    _ok(admin.post("/kbs/v0/attestation-policy", json=body))
    _ok(admin.post("/kbs/v0/resource-policy", json={"policy": _b64url(RELEASE)}))
    _ok(admin.post("/kbs/v0/resource/default/key/one", content=SECRET))


def ear_call(http: httpx.Client, url: str, body: dict[str, Any]) -> Callable[[], None]:
    raw = json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}

    def call() -> None:
        r = http.post(f"{url}/api/v1/attestation/verify", content=raw, headers=headers)
        if r.status_code != 200 or not r.json()["ok"]:
            raise SystemExit(f"attestation service refused: {r.status_code} {r.text}")

    return call


def sim_rows(tmp: Path, seconds: float) -> list[Row]:
    authority = SimAuthority.ephemeral()
    root_pem = tmp / "sim-ark.pem"
    root_pem.write_bytes(authority.root.public_bytes(serialization.Encoding.PEM))
    policy_text = (
        f"version: 1\nid: bench\nallow_simulated: true\n"
        f"snp:\n  measurements: ['{MEASUREMENT.hex()}']\n"
    )
    policy = Policy.loads(policy_text)
    floor = Verifier(VerifierKey.generate(), extra_roots=(authority.root,))
    rows: list[Row] = []
    with kbs_server(tmp, root_pem, None) as admin, httpx.Client(timeout=60) as http:
        configure(admin, policy_text)
        url = str(admin.base_url).rstrip("/")
        rep = authority.report(measurement=MEASUREMENT, report_data=bytes(64))
        bundle = EvidenceBundle.single(authority.evidence(rep))
        ours = ear_call(http, url, {"evidence": json.loads(bundle.to_json()), "policy_id": "bench"})

        def in_process() -> None:
            if not floor.appraise(bundle, policy, now=datetime.now(UTC)).ok:
                raise SystemExit("in-process appraisal refused the sim evidence")

        def round_trip() -> None:
            if http.get(f"{url}/healthz").status_code != 200:
                raise SystemExit("healthz failed")

        o, p = paired_rates(round_trip, in_process, seconds)
        rows.append(
            (
                "HTTP round trip alone (GET /healthz, same server and client)",
                o,
                "in-process verify+appraise (the floor below)",
                p,
            )
        )
        o, p = paired_rates(ours, in_process, seconds)
        rows.append(
            (
                "EAR tokens over HTTP (sim SNP, SIMULATED)",
                o,
                "in-process verify+appraise, same evidence",
                p,
            )
        )

        last: list[tuple[bytes, EvidenceBundle]] = []

        def evidence(digest: bytes) -> Any:
            r = authority.report(measurement=MEASUREMENT, report_data=report_data(digest))
            b = EvidenceBundle.single(authority.evidence(r))
            last[:] = [(digest, b)]
            return envelope_evidence(b)

        def flow() -> None:
            http.cookies.clear()  # one guest session per flow
            with KbsClient(url, "snp", evidence, http=http) as guest:
                if guest.get_resource("default/key/one") != SECRET:
                    raise SystemExit("released value differs")

        flow()
        digest, flow_bundle = last[0]

        def flow_floor() -> None:
            r = floor.appraise(flow_bundle, policy, now=datetime.now(UTC), runtime_digest=digest)
            if not r.ok:
                raise SystemExit("in-process appraisal refused the flow's evidence")

        o, p = paired_rates(flow, flow_floor, seconds, warmup=5, batch=5)
        rows.append(
            (
                "KBS auth->attest->resource flows (sim SNP, guest work included)",
                o,
                "in-process verify+appraise+binding, a flow's evidence",
                p,
            )
        )
    return rows


def real_rows(tmp: Path, seconds: float) -> list[Row]:
    if not REAL_SNP.is_file():
        print(f"real SNP rows skipped: {REAL_SNP} absent (../shared/vectors)")
        return []
    raw = REAL_SNP.read_bytes()
    bundle = load_evidence(raw, "snp")
    from sealroom.attestation.snp.kind import KIND as SNP

    meas = SNP.inspect(bundle.items[0]).to_dict()["measurement"]
    policy_text = f"version: 1\nid: bench\nsnp:\n  measurements: ['{meas}']\n"
    policy = Policy.loads(policy_text)
    floor = Verifier(VerifierKey.generate())
    rows: list[Row] = []
    with kbs_server(tmp, None, PINNED) as admin, httpx.Client(timeout=60) as http:
        configure(admin, policy_text)
        url = str(admin.base_url).rstrip("/")
        body = {"evidence_b64": base64.b64encode(raw).decode(), "kind": "snp", "policy_id": "bench"}
        ours = ear_call(http, url, body)

        def in_process() -> None:
            if not floor.appraise(bundle, policy, now=PINNED).ok:
                raise SystemExit("in-process appraisal refused the real SNP evidence")

        o, p = paired_rates(ours, in_process, seconds)
        rows.append(
            (
                "EAR tokens over HTTP (real Genoa SNP, pinned 2025-06-01)",
                o,
                "in-process verify+appraise, same evidence",
                p,
            )
        )
        trustee_json = json.loads(raw)

        def flow() -> None:
            http.cookies.clear()
            with KbsClient(url, "snp", lambda _d: trustee_json, http=http) as guest:
                try:
                    guest.attest()
                except KbsRefused as e:
                    if "kbs.REPORT_DATA" not in str(e) or "1 rule(s) failed" not in str(e):
                        raise SystemExit(f"refused for another reason: {e}") from e
                    return
            raise SystemExit("a real report not made for this session was accepted")

        digest = bytes(48)

        def flow_floor() -> None:
            r = floor.appraise(bundle, policy, now=PINNED, runtime_digest=digest)
            if r.ok or len(r.failures()) != 1:
                raise SystemExit("in-process appraisal: expected the binding rule alone to fail")

        o, p = paired_rates(flow, flow_floor, seconds, warmup=5, batch=5)
        rows.append(
            (
                "KBS auth->attest (real Genoa SNP, verified, refused at the binding)",
                o,
                "in-process verify+appraise+binding, same evidence",
                p,
            )
        )
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=3.0, help="per row (each side)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="kbs-bench-") as tmp_s:
        tmp = Path(tmp_s)
        os.environ["SEALROOM_HOME"] = str(tmp / "home")
        rows = sim_rows(tmp, args.seconds) + real_rows(tmp, args.seconds)
    print_rows(rows)
    print("target (issue 10): ours >= 0.5x the in-process floor, each row")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`sealroom demo`: the main job on embedded defaults, shown step by step.

1. sim evidence: the sim authority signs a real-layout SNP report whose measurement is
   the hash of the sealroom code and whose REPORT_DATA binds a fresh nonce;
2. it is verified and appraised (accepted only by a policy that allows simulation),
   rejected by a production policy, and rejected when a byte is flipped;
3. where ../shared/vectors is present, every real AMD SEV-SNP vector is verified and
   appraised under the starter policy, and a verdict table is printed;
4. a three-party computation runs in a SIMULATED enclave (a separate runtime process,
   sandboxed algorithm): verify, signed uploads, sealed result, receipt verified offline;
5. the same computation through the whole system: `sealroom up` (control plane, host
   agent), placement, the enclave reached through the agent's relay, the sealed result
   from the control plane's blob store, `sealroom down`.

Exits non-zero if any outcome differs from what it should be.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

import sealroom
from sealroom import paths
from sealroom.attestation import kinds
from sealroom.attestation.evidence import EvidenceBundle, EvidenceItem
from sealroom.attestation.kinds import VerifyContext
from sealroom.attestation.policy import Policy, starter_policy
from sealroom.attestation.sim.authority import SimAuthority, measure_tree
from sealroom.attestation.verifier import appraise, verify_and_appraise, verify_bundle
from sealroom.attestation.x509util import load_certificates
from sealroom.cli.common import console, home_dir, render_result
from sealroom.errors import AttestationError, SealroomError


@dataclass(frozen=True)
class VectorCase:
    path: str  # relative to the vectors folder
    vek: str
    expect_authentic: bool
    note: str = ""


SNP_VECTORS = (
    VectorCase(
        "amd/milan_gosev_debug/report.bin",
        "amd/milan_gosev_debug/vcek.der",
        True,
        "DEBUG policy bit set",
    ),
    VectorCase("amd/milan_virtee/report.hex", "amd/milan_virtee/vcek.der", True),
    VectorCase(
        "amd/milan_trustee/report.bin",
        "amd/milan_trustee/vcek.der",
        True,
        "CURRENT_TCB != REPORTED_TCB",
    ),
    VectorCase(
        "amd/milan_trustee/report.bin",
        "amd/milan_trustee/NEG_vcek_tampered_hwid_legacy.der",
        False,
        "tampered VCEK",
    ),
    VectorCase(
        "amd/milan_trustee/report.bin",
        "amd/milan_trustee/NEG_vcek_tampered_hwid_octetstring.der",
        False,
        "tampered VCEK",
    ),
    VectorCase(
        "amd/milan_vlek_aws_trustee/report.bin",
        "amd/milan_vlek_aws_trustee/vlek.der",
        True,
        "VLEK (AWS), VMPL 1",
    ),
    VectorCase("amd/milan_oak/report.bin", "amd/milan_oak/vcek.der", True),
    VectorCase("amd/genoa_trustee_e2e/snp_evidence.json", "", True, "Trustee JSON"),
    VectorCase("amd/genoa_oak/report.bin", "amd/genoa_oak/vcek.der", True, "report v5"),
    VectorCase(
        "amd/turin_oak/report.bin", "amd/turin_oak/vcek.der", True, "Turin TCB layout, 8-byte hwID"
    ),
)


def find_vectors(explicit: Path | None) -> Path | None:
    if explicit is not None:
        return explicit if explicit.is_dir() else None
    candidates = [Path.cwd() / ".." / "shared" / "vectors"]
    pkg = Path(sealroom.__file__).resolve()
    candidates += [parent / ".." / "shared" / "vectors" for parent in pkg.parents[:4]]
    for c in candidates:
        if (c / "README.md").is_file():
            return c.resolve()
    return None


def _step(n: int, text: str) -> None:
    console.print(f"\n[bold]Step {n}.[/] {text}")


def _check(ok: bool, text: str, failures: list[str]) -> None:
    console.print(("[green]✔[/] " if ok else "[bold red]✘[/] ") + text)
    if not ok:
        failures.append(text)


def _sim_demo(failures: list[str]) -> None:
    now = datetime.now(UTC)
    _step(1, "Sim authority (stands in for AMD hardware; SIMULATED, proves no confidentiality)")
    auth = SimAuthority.load_or_create(paths.sim_authority())
    console.print(f"  root: {auth.root.subject.rfc4514_string()}")
    _step(2, "Measure the code the enclave would run (the sealroom package)")
    measurement = measure_tree(Path(sealroom.__file__).resolve().parent)
    console.print(f"  measurement: {measurement.hex()}")
    _step(3, "The 'enclave' answers a challenge: fresh nonce bound into REPORT_DATA")
    nonce = secrets.token_bytes(32)
    report = auth.report(measurement=measurement, report_data=nonce + bytes(32))
    item = auth.evidence(report, collected_at=now)
    console.print(f"  nonce: {nonce.hex()}  report: {len(item.data)} bytes (real SNP layout)")
    ctx = VerifyContext(now=now, nonce=nonce, extra_roots=(auth.root,))
    dev_policy = Policy.from_dict(
        {
            "version": 1,
            "id": "demo-dev",
            "allow_simulated": True,
            "max_evidence_age": 300,
            "require": ["snp"],
            "snp": {
                "measurements": [measurement.hex()],
                "report_data": {"mode": "nonce"},
                "vmpl": [0],
                "allow_debug": False,
            },
        }
    )
    _step(4, "Verify + appraise under a development policy (allow_simulated: true)")
    result = verify_and_appraise(EvidenceBundle.single(item), dev_policy, ctx)
    render_result(result)
    _check(result.ok, "sim evidence accepted by a policy that allows simulation", failures)
    _step(5, "The same evidence under the starter (production) policy")
    prod = Policy.loads(starter_policy(["snp"]), "starter policy")
    prod_result = verify_and_appraise(EvidenceBundle.single(item), prod, ctx)
    failed = [r.field for r in prod_result.failures()]
    _check(
        not prod_result.ok and "simulated" in failed,
        f"rejected by a production policy (failed rules: {', '.join(failed)})",
        failures,
    )
    _step(6, "A flipped byte in the measurement")
    tampered = bytearray(item.data)
    tampered[0x90] ^= 1
    bad = EvidenceItem(kind="snp", data=bytes(tampered), attachments=item.attachments)
    try:
        verify_bundle(EvidenceBundle.single(bad), ctx)
        _check(False, "tampered report rejected", failures)
    except AttestationError as e:
        _check(True, f"tampered report rejected as not authentic: {e.message}", failures)
    wrong_nonce = VerifyContext(now=now, nonce=secrets.token_bytes(32), extra_roots=(auth.root,))
    replay = verify_and_appraise(EvidenceBundle.single(item), dev_policy, wrong_nonce)
    _check(not replay.ok, "replayed evidence (another verifier's nonce) rejected", failures)


def _vector_item(base: Path, case: VectorCase) -> EvidenceItem:
    bundle = kinds.get("snp").load((base / case.path).read_bytes())
    item = bundle.items[0]
    if case.vek:
        item = item.with_attachments({"cert": (base / case.vek).read_bytes()})
    return item


def _validity_time(item: EvidenceItem) -> datetime:
    """A time inside every supplied certificate's validity (for expired real vectors)."""
    certs = [
        c
        for name, data in item.attachments.items()
        if name.startswith("cert")
        for c in load_certificates(data)
    ]
    start = max(c.not_valid_before_utc for c in certs)
    end = min(c.not_valid_after_utc for c in certs)
    return start + (end - start) / 2 if end > start else start


def _vectors_demo(base: Path, failures: list[str]) -> None:
    _step(7, f"Real AMD SEV-SNP evidence from {base}")
    policy = Policy.loads(starter_policy(["snp"]), "starter policy")
    table = Table(
        title="real vectors: verified now (or within the VEK's validity) under the starter policy"
    )
    for col in ("vector", "product", "key", "ver", "authentic", "policy", "note"):
        table.add_column(col, overflow="fold")
    now = datetime.now(UTC)
    for case in SNP_VECTORS:
        label = case.path.removeprefix("amd/") + (
            ""
            if case.vek.endswith(("vcek.der", "vlek.der")) or not case.vek
            else f" + {Path(case.vek).name}"
        )
        try:
            item = _vector_item(base, case)
        except (OSError, SealroomError) as e:
            table.add_row(label, "", "", "", f"[red]unreadable: {e}[/]", "", case.note)
            failures.append(f"{label}: unreadable")
            continue
        when = now
        try:
            verified = verify_bundle(EvidenceBundle.single(item), VerifyContext(now=when))
        except AttestationError as e:
            if e.code == "certificate-expired" and case.expect_authentic:
                when = _validity_time(item)
                try:
                    verified = verify_bundle(EvidenceBundle.single(item), VerifyContext(now=when))
                except AttestationError as e2:
                    verified, e = [], e2
            else:
                verified = []
            if not verified:
                ok = not case.expect_authentic
                table.add_row(
                    label,
                    "",
                    "",
                    "",
                    ("[green]no[/]" if ok else "[red]no[/]") + f" ({e.code})",
                    "",
                    case.note + ("" if ok else " UNEXPECTED"),
                )
                if not ok:
                    failures.append(f"{label}: {e.message}")
                continue
        claims = verified[0].claims
        result = appraise(verified, policy, VerifyContext(now=when))
        fails = ", ".join(r.field for r in result.failures())
        at = "" if when == now else f" at {when.date()}"
        good = case.expect_authentic
        table.add_row(
            label,
            str(getattr(claims, "product", "")),
            str(getattr(claims, "signing_key", "")),
            str(getattr(claims, "report_version", "")),
            ("[green]yes[/]" if good else "[red]yes[/]") + at,
            "[green]accepted[/]" if result.ok else f"[yellow]rejected[/]: {fails}",
            case.note + ("" if good else " UNEXPECTED"),
        )
        if not good:
            failures.append(f"{label}: tampered evidence verified")
    console.print(table)


DEMO_ALGORITHM = b"""\
import pathlib
ages = [int(x) for x in pathlib.Path('/inputs/clinic-a').read_text().split()]
ages += [int(x) for x in pathlib.Path('/inputs/clinic-b').read_text().split()]
pathlib.Path('/results/mean-age.txt').write_text(f"{sum(ages) / len(ages):.2f}\\n")
print(f"averaged {len(ages)} private records")
"""


def _demo_computation(tmp: Path, mid: str, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Fresh party keys, the algorithm and both clinics' data written to ``tmp``, and a
    manifest for them (policy: SIMULATED allowed, this runtime's measurement, the
    sealroom-v1 REPORT_DATA binding)."""
    import hashlib

    from sealroom.crypto.keys import PartyKeys
    from sealroom.hostagent.launcher import runtime_measurement

    keys = {n: PartyKeys.generate(n) for n in ("lab", "clinic-a", "clinic-b", "analyst")}
    files = {"algorithm": DEMO_ALGORITHM, "clinic-a": b"34 51 29 62\n", "clinic-b": b"45 38 57\n"}
    for fname, data in files.items():
        (tmp / fname).write_bytes(data)
    doc = {
        "version": 1,
        "id": mid,
        "name": name,
        "algorithm": {
            "kind": "python",
            "sha256": hashlib.sha256(DEMO_ALGORITHM).hexdigest(),
            "provider": keys["lab"].public.to_json_obj(),
            "entrypoint": "main.py",
            "args": [],
        },
        "datasets": [
            {
                "name": n,
                "sha256": hashlib.sha256(files[n]).hexdigest(),
                "provider": keys[n].public.to_json_obj(),
                "max_size": 4096,
            }
            for n in ("clinic-a", "clinic-b")
        ],
        "consumers": [keys["analyst"].public.to_json_obj()],
        "policy": {
            "version": 1,
            "id": "demo-enclave",
            "allow_simulated": True,
            "require": ["snp"],
            "snp": {
                "measurements": [runtime_measurement().hex()],
                "vmpl": [0],
                "report_data": {"mode": "sealroom-v1"},
            },
        },
        "limits": {"vcpus": 1, "memory_mb": 256, "wall_seconds": 30, "max_result_bytes": 1 << 20},
    }
    return keys, doc


def _computation_demo(failures: list[str]) -> None:
    import json
    import tempfile

    from sealroom.client.enclave import EnclaveClient
    from sealroom.hostagent.launcher import launch_local
    from sealroom.manifest import Manifest

    _step(
        8,
        "A three-party computation in a SIMULATED enclave: an algorithm provider, two "
        "data providers (clinics), one result consumer",
    )
    with tempfile.TemporaryDirectory(prefix="sealroom-demo-") as tmp_s:
        tmp = Path(tmp_s)
        keys, doc = _demo_computation(tmp, "demo-mean-age", "mean age across two clinics")
        manifest_path = tmp / "manifest.json"
        manifest_path.write_text(json.dumps(doc, indent=2))
        manifest = Manifest.load(manifest_path)
        console.print(f"  manifest hash {manifest.manifest_hash.hex()}")
        with launch_local(manifest_path, tee="sim", home=home_dir()) as enclave:
            console.print(f"  enclave runtime started at {enclave.url} (SIMULATED TEE)")
            root = SimAuthority.load_or_create(paths.sim_authority()).root
            client = EnclaveClient(enclave.url, manifest, extra_roots=(root,))
            attested = client.attest()
            _check(
                attested.simulated,
                "every party verified the evidence: measurement, "
                "REPORT_DATA bound to manifest + enclave keys + nonce, TLS key pinned "
                "(SIMULATED)",
                failures,
            )
            for slot, who in (
                ("algorithm", "lab"),
                ("clinic-a", "clinic-a"),
                ("clinic-b", "clinic-b"),
            ):
                r = client.upload(slot, tmp / slot, keys[who])
                console.print(
                    f"  {who} uploaded {slot!r}: {r.size} bytes, signed for this enclave only"
                )
            seq, state = 0, ""
            while state not in ("completed", "failed"):
                for ev in client.events(seq, wait=10):
                    seq = ev.seq
                    if ev.type in ("run_started", "run_ended", "completed", "failed"):
                        console.print(f"  enclave: {ev.message}")
                    state = ev.type if ev.type in ("completed", "failed") else state
            out = tmp / "analyst-results"
            receipt = client.fetch_result(keys["analyst"], out)
            answer = (out / "mean-age.txt").read_text().strip()
            _check(
                answer == "45.14", f"the analyst decrypted the result: mean age {answer}", failures
            )
            receipt_path = tmp / "receipt.json"
            receipt_path.write_text(json.dumps(client.receipt()))
            again = client.verify_receipt(json.loads(receipt_path.read_text()))
            _check(
                again.ok and again.simulated,
                "the receipt verifies offline (signature, "
                "SIMULATED evidence bound to the receipt key, manifest hashes)",
                failures,
            )
            console.print(
                f"  receipt: results sealed to analyst, sha256 "
                f"{receipt.payload['results']['analyst']['sha256'][:16]}…"
            )


def _stack_demo(failures: list[str]) -> None:
    import tempfile

    from sealroom.cli import stack as stack_mod
    from sealroom.client.controlplane import ControlPlaneClient
    from sealroom.client.enclave import EnclaveClient
    from sealroom.manifest import Manifest

    _step(
        9,
        "The whole system: `sealroom up` (control plane + host agent + sim TEE on "
        "127.0.0.1, SQLite), the same computation placed by the control plane",
    )
    data_dir = paths.home() / "demo-stack"
    stack = stack_mod.up(data_dir, agents=1)
    try:
        console.print(f"  control plane {stack.url}; host agent online")
        admin = ControlPlaneClient(stack.url, stack.admin_key)
        org = admin.create_account("demo-org")
        cp = ControlPlaneClient(stack.url, admin.create_key(org.id).key)
        with tempfile.TemporaryDirectory(prefix="sealroom-demo-") as tmp_s:
            tmp = Path(tmp_s)
            keys, doc = _demo_computation(tmp, "demo-stack-mean-age", "mean age, via the stack")
            manifest = Manifest.from_dict(doc)
            created = cp.create_computation(doc)
            console.print(f"  computation {created.id} placed on host {created.host_id}")
            comp = cp.wait_for(created.id, ("awaiting_inputs",), 90)
            root = SimAuthority.load_or_create(paths.sim_authority()).root
            enclave = EnclaveClient(comp.enclave_url or "", manifest, extra_roots=(root,))
            _check(
                enclave.attest().simulated,
                "parties verified the enclave through the "
                "agent's relay (TLS end to end; the host sees ciphertext)",
                failures,
            )
            for slot, who in (
                ("algorithm", "lab"),
                ("clinic-a", "clinic-a"),
                ("clinic-b", "clinic-b"),
            ):
                enclave.upload(slot, tmp / slot, keys[who])
            done = cp.wait_for(comp.id, ("completed", "destroyed"), 120)
            console.print(f"  computation {done.state.value}")
            out = tmp / "out"
            receipt = None
            for _ in range(100):
                try:
                    receipt = cp.fetch_result(
                        comp.id, manifest, keys["analyst"], out, extra_roots=(root,)
                    )
                    break
                except SealroomError:
                    time.sleep(0.3)
            answer = (out / "mean-age.txt").read_text().strip() if receipt else "(none)"
            _check(
                answer == "45.14",
                f"the analyst fetched the sealed result from the "
                f"control plane's blob store, verified the receipt, decrypted: {answer}",
                failures,
            )
    finally:
        stack_mod.down(data_dir)
        console.print("  stack stopped (`sealroom down`)")


def demo_cmd(
    vectors: Annotated[
        Path | None, typer.Option("--vectors", help="Vectors folder (default: ../shared/vectors).")
    ] = None,
) -> None:
    """Run the attestation pipeline end to end on this machine and show each step."""
    console.print("[bold]sealroom demo[/]: attestation core on embedded defaults")
    failures: list[str] = []
    _sim_demo(failures)
    base = find_vectors(vectors)
    if base is None:
        console.print("\n(../shared/vectors not found: real-vector table skipped)")
    else:
        _vectors_demo(base, failures)
    _computation_demo(failures)
    _stack_demo(failures)
    if failures:
        console.print(f"\n[bold red]{len(failures)} unexpected outcome(s)[/]")
        raise typer.Exit(1)
    console.print("\n[bold green]demo complete: every outcome as expected[/]")

"""`sealroom attest verify` on many files: the same verification, one process per core.

Every worker builds the verifier's inputs (policy, roots, collateral, nonce) itself from
the same command-line arguments, then verifies its share of the files; each file gets
its own verdict (the exit code its single-file verification would have had), and the
command exits with the worst of them. Verification is CPU-bound (ECDSA, X.509) and holds
the interpreter lock, so processes, not threads, use the cores.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.markup import escape

from sealroom import paths
from sealroom.attestation.appraise import AppraisalResult
from sealroom.attestation.binding import ReportDataInputs
from sealroom.attestation.collateral import FileCollateralHistory, NoCollateral
from sealroom.attestation.evidence import EvidenceBundle
from sealroom.attestation.kinds import VerifyContext
from sealroom.attestation.policy import Policy
from sealroom.attestation.snp.foreign import load_snpguest_dir
from sealroom.attestation.verifier import appraise, load_evidence, verify_bundle
from sealroom.attestation.x509util import load_certificates
from sealroom.cli.common import console, parse_hex, parse_now, print_json, read_input
from sealroom.cli.online import chain, online_source
from sealroom.collateral_online import OnlineCollateral
from sealroom.errors import (
    AttestationError,
    InvalidInputError,
    PolicyViolationError,
    SealroomError,
    UnavailableError,
)

# Worst first: not authentic, policy violation, unavailable, bad input; then accepted.
SEVERITY = {2: 4, 4: 3, 3: 2, 1: 1, 0: 0}
VERDICT = {0: "ACCEPTED", 1: "BAD INPUT", 2: "NOT AUTHENTIC", 3: "UNAVAILABLE", 4: "REJECTED"}


@dataclass(frozen=True)
class VerifyArgs:
    """What `attest verify` was given, in a form a worker process can receive."""

    policy: Path
    kind: str | None = None
    certs: tuple[Path, ...] = ()
    collateral: Path | None = None
    ak: tuple[Path, ...] = ()
    pcrs: Path | None = None
    roots: tuple[Path, ...] = ()
    now: str | None = None
    nonce: str | None = None
    manifest_hash: str | None = None
    keys_digest: str | None = None
    option: tuple[str, ...] = ()
    online: bool = False
    offline: bool = False
    cache: Path | None = None
    kds_url: str | None = None
    pcs_url: str | None = None
    tcb_update: str | None = None


@dataclass(frozen=True)
class Setup:
    kind: str | None
    policy: Policy
    ctx: VerifyContext
    attachments: dict[str, bytes]
    net: OnlineCollateral | None


def attachments(certs: Iterable[Path], pcrs: Path | None) -> dict[str, bytes]:
    """What the CLI adds to the evidence itself: certificates that chain to roots the
    verifier trusts anyway, and PCR values the quote's digest must match. Trust inputs (AK
    pins, collateral, roots, nonces) go into the VerifyContext instead (ADR 0020)."""
    out: dict[str, bytes] = {}
    for n, p in enumerate(certs):
        if p.is_dir():  # snpguest's certificates directory (vcek.pem, ask.pem, ark.pem, ...)
            out.update(load_snpguest_dir(p))
            continue
        out["cert" if n == 0 else f"cert.{n}"] = read_input(str(p), "certificate file")
    if pcrs is not None:
        out["pcrs"] = read_input(str(pcrs), "PCR values file")
    return out


def load_bundle(file: str, kind: str | None, extra: dict[str, bytes]) -> EvidenceBundle:
    bundle = load_evidence(read_input(file, "evidence"), kind)
    if not extra:
        return bundle
    return EvidenceBundle(tuple(i.with_attachments(extra) for i in bundle.items))


def verifier_collateral(path: Path | None) -> dict[str, bytes]:
    """A collateral file the verifier names: Intel collateral (any form the tdx kind reads)
    under ``collateral``; a CRL also under ``crl``, where the snp kind takes the AMD CRL."""
    if path is None:
        return {}
    data = read_input(str(path), "collateral file")
    out = {"collateral": data}
    if data.lstrip().startswith(b"-----BEGIN X509 CRL") or data[:1] == b"\x30":
        out["crl"] = data
    return out


def parse_options(option: Iterable[str]) -> dict[str, str]:
    options = {}
    for o in option:
        key, sep, value = o.partition("=")
        if not sep or not key:
            raise InvalidInputError(f"--option must be KEY=VALUE, got {o!r}")
        options[key] = value
    return options


def build(a: VerifyArgs) -> Setup:
    """The policy and the verifier's trust inputs, from the arguments (ADR 0020)."""
    pol = Policy.load(a.policy)
    collateral_dir = a.collateral if a.collateral is not None and a.collateral.is_dir() else None
    collateral_file = (
        a.collateral if a.collateral is not None and not a.collateral.is_dir() else None
    )
    ctx_now = parse_now(a.now)
    net = online_source(
        online=a.online,
        offline=a.offline,
        kds_url=a.kds_url,
        pcs_url=a.pcs_url,
        cache=a.cache,
        tcb_update=a.tcb_update,
        now=ctx_now,
    )
    source = chain(collateral_dir, net) or NoCollateral()
    extra_roots = []
    for p in a.roots:
        extra_roots.extend(load_certificates(read_input(str(p), "root certificate"), str(p)))
    mh = parse_hex(a.manifest_hash, "--manifest-hash", 32)
    kd = parse_hex(a.keys_digest, "--keys-digest", 32)
    if (mh is None) != (kd is None):
        raise InvalidInputError("--manifest-hash and --keys-digest go together")
    ctx = VerifyContext(
        now=ctx_now,
        collateral=source,
        nonce=parse_hex(a.nonce, "--nonce"),
        extra_roots=tuple(extra_roots),
        report_data_inputs=ReportDataInputs(mh, kd) if mh is not None and kd is not None else None,
        options=parse_options(a.option),
        ak_pins=tuple(read_input(str(p), "AK file") for p in a.ak),
        verifier_collateral=verifier_collateral(collateral_file),
        collateral_history=FileCollateralHistory(paths.verifier_dir() / "collateral-seen.json"),
    )
    return Setup(a.kind, pol, ctx, attachments(a.certs, a.pcrs), net)


def expand_inputs(items: Iterable[str]) -> list[str]:
    """Files as given; a directory stands for the regular files directly in it (sorted,
    hidden ones skipped). '-' (stdin) only alone."""
    out: list[str] = []
    for item in items:
        p = Path(item)
        if item != "-" and p.is_dir():
            out.extend(
                str(f) for f in sorted(p.iterdir()) if f.is_file() and not f.name.startswith(".")
            )
        else:
            out.append(item)
    if "-" in out and len(out) > 1:
        raise InvalidInputError("'-' (stdin) is one evidence file: give it alone")
    if not out:
        raise InvalidInputError("no evidence files (the directories given are empty)")
    return out


@dataclass(frozen=True)
class FileVerdict:
    file: str
    exit: int
    code: str  # "accepted", or the error's code
    message: str
    simulated: bool
    result: dict[str, Any] | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "verdict": VERDICT.get(self.exit, "FAILED").lower().replace(" ", "-"),
            "exit": self.exit,
            "code": self.code,
            "message": self.message,
            "simulated": self.simulated,
            "result": self.result,
        }


_SETUP: Setup | None = None


def _init(a: VerifyArgs) -> None:
    global _SETUP
    _SETUP = build(a)


def verify_one(file: str) -> FileVerdict:
    """One file through parse -> verify -> appraise, its outcome as a verdict (never an
    exception for what the evidence is: that is the verdict)."""
    setup = _SETUP
    if setup is None:
        raise RuntimeError("verify_one outside a worker set up by _init")
    result: AppraisalResult | None = None
    try:
        bundle = load_bundle(file, setup.kind, setup.attachments)
        result = appraise(verify_bundle(bundle, setup.ctx), setup.policy, setup.ctx)
        if not result.ok:
            raise PolicyViolationError(
                f"policy {setup.policy.id!r} rejected the evidence: "
                + "; ".join(
                    f"{r.field} is {r.got}, policy wants {r.want}" for r in result.failures()
                ),
                result,
            )
    except SealroomError as e:
        return FileVerdict(
            file,
            e.exit_code,
            e.code,
            e.message,
            _simulated(result),
            result.to_dict() if result is not None else None,
        )
    return FileVerdict(
        file,
        0,
        "accepted",
        "authentic, and every rule passed",
        _simulated(result),
        result.to_dict(),
    )


def _simulated(result: AppraisalResult | None) -> bool:
    return result is not None and any(s.claims.simulated for s in result.submods)


def verify_many(args: VerifyArgs, files: list[str], *, jobs: int | None, as_json: bool) -> None:
    """Verify ``files`` on ``jobs`` processes (default: one per core); print one verdict
    per file; raise the error of the worst verdict (its exit code)."""
    build(args)  # bad arguments (policy, roots, nonce) fail once, here, not per file
    workers = max(1, min(jobs or os.cpu_count() or 1, len(files)))
    if workers == 1:
        _init(args)
        verdicts = [verify_one(f) for f in files]
    else:
        chunk = max(1, len(files) // (workers * 8))
        with ProcessPoolExecutor(workers, initializer=_init, initargs=(args,)) as ex:
            verdicts = list(ex.map(verify_one, files, chunksize=chunk))
    worst = max(verdicts, key=lambda v: SEVERITY.get(v.exit, 5))
    if as_json:
        print_json({"files": [v.to_dict() for v in verdicts], "exit": worst.exit})
    else:
        for v in verdicts:
            sim = " (SIMULATED)" if v.simulated else ""
            word = VERDICT.get(v.exit, "FAILED")
            colour = "green" if v.exit == 0 else "red"
            line = f"[bold {colour}]{word}{sim}[/] {escape(v.file)}"
            if v.exit:
                line += f": \\[{escape(v.code)}] {escape(v.message)}"
            console.print(line, soft_wrap=True)
        bad = sum(1 for v in verdicts if v.exit)
        console.print(f"{len(verdicts)} files: {len(verdicts) - bad} accepted, {bad} not")
    if worst.exit == 0:
        return
    n = sum(1 for v in verdicts if v.exit)
    msg = (
        f"{n} of {len(verdicts)} evidence files not accepted; worst: {worst.file}: {worst.message}"
    )
    err: SealroomError
    if worst.exit == 2:
        err = AttestationError(msg, code=worst.code)
    elif worst.exit == 3:
        err = UnavailableError(msg, code=worst.code)
    elif worst.exit == 4:
        err = PolicyViolationError(msg, None, code=worst.code)
    else:
        err = InvalidInputError(msg, code=worst.code)
    raise err

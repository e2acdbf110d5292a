"""`sealroom attest ...`: inspect, verify and appraise evidence; starter policies."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

import typer

from sealroom import paths
from sealroom.attestation import kinds
from sealroom.attestation.appraise import AppraisalResult
from sealroom.attestation.collateral import DirectoryCollateral
from sealroom.attestation.ear import VerifierKey, issue_ear
from sealroom.attestation.kinds import VerifyContext
from sealroom.attestation.policy import Policy, starter_policy
from sealroom.attestation.verifier import appraise, verify_bundle
from sealroom.cli.common import (
    console,
    parse_hex,
    parse_now,
    print_json,
    read_input,
    render_claims,
    render_result,
)
from sealroom.cli.online import (
    CacheOpt,
    KdsUrlOpt,
    OfflineOpt,
    OnlineOpt,
    PcsUrlOpt,
    RecordingCollateral,
    TcbUpdateOpt,
    online_source,
    render_uses,
    report_stale,
)
from sealroom.cli.verify_many import (
    VerifyArgs,
    attachments,
    build,
    expand_inputs,
    load_bundle,
    parse_options,
    verify_many,
)
from sealroom.errors import InvalidInputError, PolicyViolationError, SealroomError
from sealroom.files import write_private

attest_app = typer.Typer(help="Inspect, verify and appraise TEE evidence.", no_args_is_help=True)
policy_app = typer.Typer(help="Appraisal policies.", no_args_is_help=True)
attest_app.add_typer(policy_app, name="policy")

KindOpt = Annotated[
    str | None, typer.Option("--kind", help="Evidence kind (default: recognised from content).")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
CertsOpt = Annotated[
    list[Path], typer.Option("--certs", help="Certificates (VCEK/VLEK, chains), repeatable.")
]
NowOpt = Annotated[
    str | None, typer.Option("--now", help="Check at this ISO 8601 time (default: now).")
]
OptionOpt = Annotated[
    list[str], typer.Option("--option", help="Kind option KEY=VALUE, e.g. snp.product=Milan.")
]


@attest_app.command("inspect")
def inspect_cmd(
    file: Annotated[str, typer.Argument(help="Evidence file ('-' for stdin).")],
    kind: KindOpt = None,
    certs: Annotated[list[Path], typer.Option("--certs", help="Certificate file(s).")] = [],  # noqa: B006
    as_json: JsonOpt = False,
) -> None:
    """Parse evidence and show its claims. Checks NOTHING: use `verify` for a verdict."""
    bundle = load_bundle(file, kind, attachments(certs, None))
    out = {}
    for n, item in enumerate(bundle.items):
        claims = kinds.get(item.kind).inspect(item)
        name = item.name or f"item{n}"
        if as_json:
            out[name] = claims.to_dict()
        else:
            render_claims(name, claims)
    if as_json:
        print_json({"verified": False, "items": out})


@attest_app.command("verify")
def verify_cmd(
    files: Annotated[
        list[str],
        typer.Argument(
            help="Evidence file(s) ('-' for stdin), or directories (each file in them).",
            show_default=False,
        ),
    ],
    policy: Annotated[
        Path | None, typer.Option("--policy", help="Appraisal policy (YAML/JSON).")
    ] = None,
    kind: KindOpt = None,
    certs: CertsOpt = [],  # noqa: B006
    collateral: Annotated[
        Path | None,
        typer.Option("--collateral", help="Collateral directory (offline cache) or file."),
    ] = None,
    ak: Annotated[
        list[Path],
        typer.Option("--ak", help="TPM attestation key you pin (repeatable): ak_trust 'pinned'."),
    ] = [],  # noqa: B006
    pcrs: Annotated[Path | None, typer.Option("--pcrs", help="TPM PCR values (JSON).")] = None,
    device_root: Annotated[
        list[Path], typer.Option("--device-root", help="Extra device root (NVIDIA).")
    ] = [],  # noqa: B006
    root: Annotated[
        list[Path],
        typer.Option(
            "--root",
            help="Extra trusted root, e.g. a sim authority's ARK. Evidence "
            "anchored there is reported as SIMULATED.",
        ),
    ] = [],  # noqa: B006
    now: NowOpt = None,
    nonce: Annotated[str | None, typer.Option("--nonce", help="Verifier nonce (hex).")] = None,
    manifest_hash: Annotated[
        str | None, typer.Option("--manifest-hash", help="For report_data mode sealroom-v1.")
    ] = None,
    keys_digest: Annotated[
        str | None, typer.Option("--keys-digest", help="For report_data mode sealroom-v1.")
    ] = None,
    option: OptionOpt = [],  # noqa: B006
    as_json: JsonOpt = False,
    ear: Annotated[
        Path | None, typer.Option("--ear", help="Write an EAR attestation-result token here.")
    ] = None,
    ear_key: Annotated[
        Path | None,
        typer.Option("--ear-key", help="Verifier signing key (default: created in SEALROOM_HOME)."),
    ] = None,
    ear_ttl: Annotated[int, typer.Option("--ear-ttl", help="EAR lifetime, seconds.")] = 3600,
    online: OnlineOpt = False,
    offline: OfflineOpt = False,
    kds_url: KdsUrlOpt = None,
    pcs_url: PcsUrlOpt = None,
    cache: CacheOpt = None,
    tcb_update: TcbUpdateOpt = None,
    jobs: Annotated[
        int | None,
        typer.Option(
            "--jobs", "-j", help="Processes for many files (default: one per core).", min=1
        ),
    ] = None,
    service: Annotated[
        str | None,
        typer.Option("--service", help="Verify remotely at this attestation service URL."),
    ] = None,
    service_jwks: Annotated[
        Path | None,
        typer.Option(
            "--service-jwks",
            help="With --service: the service's JWKS you pinned (never taken from the answer).",
        ),
    ] = None,
    policy_id: Annotated[
        str | None, typer.Option("--policy-id", help="With --service: the service's policy id.")
    ] = None,
) -> None:
    """Verify evidence (signatures, chains, revocation) and appraise it against a policy.

    Collateral is the verifier's: --collateral, then (with --online) AMD KDS / Intel PCS
    through the local cache (--offline: the cache alone). Collateral carried with the
    evidence is used only where the verifier has none, and never when older than what this
    verifier has seen before (SEALROOM_HOME/verifier/collateral-seen.json).

    Exit codes: 0 accepted, 1 bad input, 2 not authentic, 3 collateral unavailable,
    4 policy violation. With several files (or a directory) they are verified in parallel
    (--jobs), one verdict per file, and the exit code is the worst of them: not
    authentic, then policy violation, then unavailable, then bad input.
    """
    evidence = expand_inputs(files)
    if service is not None:
        if len(evidence) != 1:
            raise InvalidInputError("--service takes one evidence file")
        _verify_at_service(
            evidence[0],
            kind,
            attachments(certs, pcrs),
            service,
            service_jwks,
            policy_id,
            now,
            nonce,
            as_json,
            ear,
        )
        return
    if policy is None:
        raise InvalidInputError("--policy is required (or --service with --policy-id)")
    if len(evidence) != 1 or any(f != "-" and Path(f).is_dir() for f in files):
        if ear is not None or online:
            raise InvalidInputError(
                "--ear and --online take one evidence file (verify many files offline: "
                "--collateral DIR, or --offline with a filled cache)"
            )
        args = VerifyArgs(
            policy=policy,
            kind=kind,
            certs=tuple(certs),
            collateral=collateral,
            ak=tuple(ak),
            pcrs=pcrs,
            roots=(*root, *device_root),
            now=now,
            nonce=nonce,
            manifest_hash=manifest_hash,
            keys_digest=keys_digest,
            option=tuple(option),
            offline=offline,
            cache=cache,
            kds_url=kds_url,
            pcs_url=pcs_url,
            tcb_update=tcb_update,
        )
        verify_many(args, evidence, jobs=jobs, as_json=as_json)
        return
    file = evidence[0]
    setup = build(
        VerifyArgs(
            policy=policy,
            kind=kind,
            certs=tuple(certs),
            collateral=collateral,
            ak=tuple(ak),
            pcrs=pcrs,
            roots=(*root, *device_root),
            now=now,
            nonce=nonce,
            manifest_hash=manifest_hash,
            keys_digest=keys_digest,
            option=tuple(option),
            online=online,
            offline=offline,
            cache=cache,
            kds_url=kds_url,
            pcs_url=pcs_url,
            tcb_update=tcb_update,
        )
    )
    pol, ctx, net = setup.policy, setup.ctx, setup.net
    bundle = load_bundle(file, kind, setup.attachments)
    try:
        verified = verify_bundle(bundle, ctx)
    finally:
        report_stale(net)
    result = appraise(verified, pol, ctx)
    if ear is not None:
        _write_ear(result, ear, ear_key, ctx, ear_ttl)
    if as_json:
        out = result.to_dict()
        if net is not None:
            out = {**out, "collateral": [u.to_dict() for u in net.uses]}
        print_json(out)
    else:
        render_result(result)
        if net is not None:
            render_uses(net.uses)
        if ear is not None:
            console.print(f"EAR token written to {ear}")
    if not result.ok:
        bad = result.failures()
        raise PolicyViolationError(
            f"policy {pol.id!r} rejected the evidence: {len(bad)} rule(s) failed", result
        )


def _verify_at_service(
    file: str,
    kind: str | None,
    extra: dict[str, bytes],
    service: str,
    service_jwks: Path | None,
    policy_id: str | None,
    now: str | None,
    nonce: str | None,
    as_json: bool,
    ear: Path | None,
) -> None:
    from sealroom.kbs.as_client import verify_remote

    if service_jwks is None or policy_id is None:
        raise InvalidInputError(
            "--service needs --policy-id and --service-jwks: the service's JWKS, pinned "
            "beforehand over a channel you trust (e.g. from its operator); the key is never "
            "taken from the same answer it is meant to check"
        )
    verdict = verify_remote(
        service,
        load_bundle(file, kind, extra),
        policy_id,
        read_input(str(service_jwks), "pinned JWKS"),
        now=parse_now(now),
        nonce=parse_hex(nonce, "--nonce"),
    )
    if ear is not None:
        write_private(ear, verdict.raw.encode(), overwrite=True, what="EAR token")
    submods = {
        n: {"status": s.status.value, "simulated": verdict.token.simulated(n)}
        for n, s in verdict.token.submods.items()
    }
    summary: dict[str, Any] = {
        "service": service,
        "status": verdict.token.status.value,
        "key": verdict.token.key_thumbprint,
        "submods": submods,
        "failed_rules": verdict.failed_rules,
    }
    if as_json:
        print_json(summary)
    else:
        console.print(
            f"EAR from {service} verified against the pinned JWKS: status "
            f"[bold]{summary['status']}[/]"
        )
        for n, sub in submods.items():
            sim = " (SIMULATED)" if sub["simulated"] else ""
            console.print(f"  {n}: {sub['status']}{sim}")
        for r in verdict.failed_rules:
            console.print(f"  [red]failed[/] {r.get('submod')}: {r}")
    if not verdict.ok:
        raise PolicyViolationError(
            f"the attestation service's EAR says the evidence failed policy {policy_id!r}: "
            f"{len(verdict.failed_rules)} rule(s) failed",
            None,
        )


@attest_app.command("challenge")
def challenge_cmd(
    service: Annotated[str, typer.Option("--service", help="Attestation service URL.")],
) -> None:
    """A fresh single-use nonce from an attestation service (hex, for --report-data/--nonce)."""
    from sealroom.kbs.as_client import challenge

    typer.echo(challenge(service).hex())


@attest_app.command("fetch")
def fetch_cmd(
    file: Annotated[str, typer.Argument(help="Evidence file ('-' for stdin).")],
    out: Annotated[Path, typer.Option("--out", help="Directory to save the collateral in.")],
    kind: KindOpt = None,
    certs: CertsOpt = [],  # noqa: B006
    now: NowOpt = None,
    option: OptionOpt = [],  # noqa: B006
    offline: OfflineOpt = False,
    kds_url: KdsUrlOpt = None,
    pcs_url: PcsUrlOpt = None,
    cache: CacheOpt = None,
    tcb_update: TcbUpdateOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Fetch the collateral verifying this evidence needs, and save it for offline use.

    Runs verification (no policy) against AMD KDS / Intel PCS through the cache and saves
    exactly the items it asked for into --out, in the layout `attest verify --collateral
    DIR` reads. Exit 0 when verification succeeded; otherwise what was fetched is still
    saved and the verification error's exit code is returned.
    """
    ctx_now = parse_now(now)
    net = online_source(
        online=not offline,
        offline=offline,
        kds_url=kds_url,
        pcs_url=pcs_url,
        cache=cache,
        tcb_update=tcb_update,
        now=ctx_now,
    )
    assert net is not None
    recorder = RecordingCollateral(net)
    ctx = VerifyContext(now=ctx_now, collateral=recorder, options=parse_options(option))
    bundle = load_bundle(file, kind, attachments(certs, None))
    failure: SealroomError | None = None
    try:
        verify_bundle(bundle, ctx)
    except SealroomError as e:
        failure = e
    finally:
        report_stale(net)
    out.mkdir(parents=True, exist_ok=True)
    target = DirectoryCollateral(out)
    saved = [(req, target.store(req, data)) for req, data in recorder.got]
    if as_json:
        print_json(
            {
                "saved": [
                    {"item": f"{r.kind} {r.item}", "url": r.url, "path": str(p)} for r, p in saved
                ],
                "collateral": [u.to_dict() for u in net.uses],
                "verified": failure is None,
                "error": failure.message if failure is not None else None,
            }
        )
    else:
        render_uses(net.uses)
        for r, p in saved:
            console.print(f"saved {r.kind} {r.item} -> {p}")
        if not saved:
            console.print("nothing to save: the evidence carries all the collateral it needs")
    if failure is not None:
        raise failure


def _write_ear(
    result: AppraisalResult, out: Path, key_path: Path | None, ctx: VerifyContext, ttl: int
) -> None:
    key = VerifierKey.load_or_create(key_path or paths.verifier_dir() / "ear-key.pem")
    token = issue_ear(result, key, now=ctx.now, ttl=timedelta(seconds=ttl), nonce=ctx.nonce)
    out.write_text(token + "\n")


@policy_app.command("init")
def policy_init(
    kind: Annotated[
        list[str], typer.Option("--kind", help="Evidence kinds to include (default: snp).")
    ] = [],  # noqa: B006
    out: Annotated[Path | None, typer.Option("--out", help="Write here instead of stdout.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite --out.")] = False,
) -> None:
    """Print a commented starter policy."""
    for k in kind:
        kinds.get(k)
    text = starter_policy(kind or None)
    Policy.loads(text, "starter policy")  # the starter must itself be a valid policy
    if out is None:
        typer.echo(text, nl=False)
        return
    if out.exists() and not force:
        raise InvalidInputError(f"{out} exists; pass --force to overwrite")
    out.write_text(text)
    console.print(f"policy written to {out}")


@policy_app.command("check")
def policy_check(policy: Annotated[Path, typer.Argument(help="Policy file.")]) -> None:
    """Validate a policy file and print it normalised."""
    pol = Policy.load(policy)
    typer.echo(pol.to_json())

"""``sealroom ear``: verify EAR attestation-result tokens and manage the verifier key.

Commands raise only SealroomError subclasses; the main CLI maps ``exc.exit_code``:
0 the token is authentic and every submodule is acceptable, 1 bad input, 2 not authentic
(signature, key, expiry, nonce), 4 authentic but a submodule is not acceptable.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from sealroom.attestation.appraise import AppraisalResult, RuleResult, Trust
from sealroom.attestation.ear import (
    EAR_PROFILE,
    EarStatus,
    EarToken,
    VerifierKey,
    load_jwks,
    tier_of,
    verify_ear,
)
from sealroom.errors import ConflictError, InvalidInputError, PolicyViolationError

ear_app = typer.Typer(
    help="EAR attestation results (signed appraisal tokens): verify one, publish or create "
    "the verifier key.",
    no_args_is_help=True,
)

_STYLE = {
    EarStatus.AFFIRMING: "bold green",
    EarStatus.WARNING: "bold yellow",
    EarStatus.CONTRAINDICATED: "bold red",
    EarStatus.NONE: "dim",
}


def _read_token(source: str) -> str:
    if source == "-":
        return sys.stdin.read().strip()
    try:
        p = Path(source)
        is_file = p.is_file()
    except (OSError, ValueError):  # a long token string is no file name
        is_file = False
    if is_file:
        try:
            return p.read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError) as e:
            raise InvalidInputError(f"cannot read EAR token file {source}: {e}") from e
    if source.count(".") == 2:
        return source.strip()
    raise InvalidInputError(
        f"TOKEN {source[:40]!r} is neither a readable file, '-' (stdin), nor a JWT",
        code="ear-token-unreadable",
    )


def _parse_now(text: str | None) -> datetime:
    if text is None:
        return datetime.now(UTC)
    try:
        when = datetime.fromisoformat(text)
    except ValueError as e:
        raise InvalidInputError(f"--now {text!r} is not an ISO 8601 date-time") from e
    if when.tzinfo is None:
        raise InvalidInputError(
            f"--now {text!r} has no UTC offset; write e.g. 2025-07-09T11:00:00Z"
        )
    return when


def _parse_nonce(text: str | None) -> bytes | None:
    if text is None:
        return None
    try:
        return bytes.fromhex(text)
    except ValueError as e:
        raise InvalidInputError(f"--nonce {text[:40]!r} is not hex") from e


def _summary(tok: EarToken) -> dict[str, Any]:
    return {
        "verified": True,
        "status": tok.status.value,
        "eat_profile": tok.eat_profile,
        "verifier_id": {"developer": tok.verifier_id.developer, "build": tok.verifier_id.build},
        "key_thumbprint": tok.key_thumbprint,
        "iat": tok.iat.isoformat(),
        "exp": tok.exp.isoformat() if tok.exp else None,
        "nonce": tok.nonce.hex() if tok.nonce is not None else None,
        "submods": {
            name: {
                "status": s.status.value,
                "trustworthiness_vector": s.vector,
                "policy_id": s.policy_id,
                "simulated": tok.simulated(name),
            }
            for name, s in tok.submods.items()
        },
    }


def _print_pretty(tok: EarToken) -> None:
    console = Console()
    if any(tok.simulated(n) for n in tok.submods):
        console.print(
            "[bold black on yellow] SIMULATED [/] this result is about simulated TEE evidence: "
            "it proves nothing about confidentiality"
        )
    console.print(
        f"EAR from [bold]{tok.verifier_id.developer}[/] ({tok.verifier_id.build}), "
        f"key {tok.key_thumbprint}"
    )
    exp = tok.exp.isoformat() if tok.exp else "never"
    console.print(f"issued {tok.iat.isoformat()}, expires {exp}, profile {tok.eat_profile}")
    table = Table("submodule", "status", "trustworthiness vector", "policy")
    for name, s in tok.submods.items():
        vec = ", ".join(f"{k}={v}" for k, v in s.vector.items() if v != 0) or "(no claims)"
        label = name + (" [yellow](SIMULATED)[/]" if tok.simulated(name) else "")
        table.add_row(
            label, f"[{_STYLE[s.status]}]{s.status.value}[/]", vec, s.policy_id or "(none)"
        )
    console.print(table)


def _trust_of(category: str) -> Trust:
    try:
        return Trust(category)
    except ValueError:
        return Trust.CONFIGURATION


def _require_acceptable(tok: EarToken, accepted: tuple[EarStatus, ...]) -> None:
    want = " or ".join(s.value for s in accepted)
    rules: list[RuleResult] = []
    for name, s in tok.submods.items():
        if s.status in accepted:
            continue
        rules.append(RuleResult("ear.status", s.status.value, want, False, submod=name))
        for cat, value in s.vector.items():
            if tier_of(value) is EarStatus.CONTRAINDICATED:
                rules.append(
                    RuleResult(
                        f"ear.trustworthiness-vector.{cat}",
                        str(value),
                        "affirming or warning tier (below 96)",
                        False,
                        _trust_of(cat),
                        name,
                    )
                )
    if not rules:
        return
    bad = [r for r in rules if r.field == "ear.status"]
    first = bad[0]
    vec = tok.submods[first.submod].vector
    detail = ", ".join(
        f"{k} {v}"
        for k, v in vec.items()
        if tier_of(v) in (EarStatus.WARNING, EarStatus.CONTRAINDICATED)
    )
    raise PolicyViolationError(
        f"EAR is authentic but submodule {first.submod!r} is {first.got}"
        + (f" ({detail})" if detail else "")
        + f"; accepted: {want}"
        + (f"; {len(bad) - 1} more submodule(s) not accepted" if len(bad) > 1 else ""),
        AppraisalResult("ear-acceptance", (), tuple(rules)),
    )


@ear_app.command("verify")
def verify_cmd(
    token: Annotated[
        str, typer.Argument(help="The EAR JWT: a file, the token itself, or - for stdin.")
    ],
    jwks: Annotated[
        Path,
        typer.Option(
            "--jwks", help="JWKS (or a single JWK) of the verifier you trust.", show_default=False
        ),
    ],
    now: Annotated[
        str | None,
        typer.Option("--now", help="Check validity at this ISO 8601 time (default: now)."),
    ] = None,
    nonce: Annotated[
        str | None, typer.Option("--nonce", help="Hex nonce the token's eat_nonce must carry.")
    ] = None,
    leeway: Annotated[
        int, typer.Option("--leeway", min=0, help="Clock skew tolerated, in seconds.")
    ] = 0,
    affirming_only: Annotated[
        bool,
        typer.Option("--affirming-only", help="Treat 'warning' submodules as not acceptable."),
    ] = False,
    allow_no_exp: Annotated[
        bool,
        typer.Option(
            "--allow-no-exp",
            help="Accept a token without exp (it never expires). Refused by default.",
        ),
    ] = False,
    accept_profile: Annotated[
        list[str],
        typer.Option(
            "--accept-profile",
            help="Also accept this eat_profile (e.g. Trustee's); repeatable. Default: the EAR "
            "profile only.",
        ),
    ] = [],  # noqa: B006
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Verify an EAR token's signature, validity and nonce; print each submodule's status.

    Exit 0 only when the token is authentic and every submodule is affirming (or warning,
    unless --affirming-only); exit 4 when it is authentic but a submodule is not.
    """
    when = _parse_now(now)
    expected = _parse_nonce(nonce)
    try:
        jwks_bytes = jwks.read_bytes()
    except OSError as e:
        raise InvalidInputError(f"cannot read --jwks {jwks}: {e.strerror or e}") from e
    keys = load_jwks(jwks_bytes)
    tok = verify_ear(
        _read_token(token),
        keys,
        now=when,
        expected_nonce=expected,
        leeway=timedelta(seconds=leeway),
        profiles=(EAR_PROFILE, *accept_profile),
        allow_missing_exp=allow_no_exp,
    )
    if as_json:
        typer.echo(json.dumps(_summary(tok), indent=2))
    else:
        _print_pretty(tok)
    accepted = (
        (EarStatus.AFFIRMING,) if affirming_only else (EarStatus.AFFIRMING, EarStatus.WARNING)
    )
    _require_acceptable(tok, accepted)


@ear_app.command("jwks")
def jwks_cmd(
    key: Annotated[
        Path, typer.Option("--key", help="Verifier key (PEM) to publish.", show_default=False)
    ],
) -> None:
    """Print the JWKS (public key set) relying parties need to verify this verifier's EARs."""
    typer.echo(json.dumps(VerifierKey.load(key).jwks(), indent=2))


@ear_app.command("keygen")
def keygen_cmd(
    path: Annotated[Path, typer.Argument(help="Where to write the new key (PEM, mode 0600).")],
    force: Annotated[bool, typer.Option("--force", help="Replace an existing key.")] = False,
) -> None:
    """Create an ES256 (P-256) verifier key for signing EAR tokens."""
    if path.exists() and not force:
        raise ConflictError(
            f"{path} already exists; refusing to replace a verifier key (tokens it signed "
            "would no longer verify against a new JWKS). Pass --force to replace it.",
            code="key-exists",
        )
    key = VerifierKey.generate()
    try:
        key.save(path, overwrite=True)
    except FileExistsError as e:  # pragma: no cover - overwrite=True never raises this
        raise ConflictError(f"{path} already exists", code="key-exists") from e
    typer.echo(f"wrote verifier key {path} (kid {key.kid})")

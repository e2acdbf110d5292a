"""`sealroom ear ...`: driven through a tiny app that mirrors the main CLI's error mapping."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.core import TyperGroup
from typer.testing import CliRunner, Result

from sealroom.attestation.appraise import AppraisalResult, RuleResult, SubmodResult, Trust
from sealroom.attestation.claims import Claims
from sealroom.attestation.ear import TRUSTEE_EAR_PROFILE, VerifierKey, issue_ear
from sealroom.cli.ear_cmd import ear_app
from sealroom.errors import SealroomError

REPO = Path(__file__).resolve().parents[2]
VECTORS = REPO / ".." / "shared" / "vectors" / "ear"
NOW = datetime(2026, 11, 21, 8, 0, 0, tzinfo=UTC)


class _MirrorMain(TyperGroup):
    """What src/sealroom/cli/main.py does in one place: SealroomError -> stderr + exit code."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except SealroomError as exc:
            typer.echo(f"error [{exc.code}]: {exc.diagnostics()}", err=True)
            raise typer.Exit(exc.exit_code) from exc


def _app() -> typer.Typer:
    app = typer.Typer(cls=_MirrorMain)
    app.add_typer(ear_app, name="ear")
    return app


def run(*args: str, stdin: str | None = None) -> Result:
    result = CliRunner().invoke(_app(), list(args), input=stdin)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def _vectors() -> Path:
    if not VECTORS.is_dir():
        pytest.skip(f"EAR vectors not found at {VECTORS} (../shared/vectors/ear)")
    return VECTORS


def _token(name: str) -> dict[str, Any]:
    tokens: dict[str, Any] = json.loads((_vectors() / "veraison_ear_jwt_vectors.json").read_text())[
        "tokens"
    ]
    token: dict[str, Any] = tokens[name]
    return token


def _iso(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


@dataclass(frozen=True, kw_only=True)
class FakeClaims(Claims):
    measurement: bytes = b"\x11" * 8


def _issue(
    key: VerifierKey,
    *,
    config_ok: bool = True,
    simulated: bool = False,
    nonce: bytes | None = None,
) -> str:
    claims = FakeClaims(kind="sim" if simulated else "snp", simulated=simulated, verified=True)
    rules = (
        RuleResult("simulated", "x", "y", True, Trust.HARDWARE, "cpu0"),
        RuleResult("POLICY.DEBUG", "true", "false", config_ok, Trust.CONFIGURATION, "cpu0"),
    )
    result = AppraisalResult("policy-1", (SubmodResult("cpu0", claims, rules),))
    return issue_ear(result, key, now=NOW, ttl=timedelta(hours=1), nonce=nonce)


@pytest.fixture
def keyfiles(tmp_path: Path) -> tuple[VerifierKey, Path]:
    key = VerifierKey.generate()
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps(key.jwks()))
    return key, jwks


# ---------------------------------------------------------------- real vectors


@pytest.mark.vectors
def test_verify_veraison_token_from_file_exits_0(tmp_path: Path) -> None:
    t = _token("arc_testJWT")
    tok = tmp_path / "ear.jwt"
    tok.write_text(t["token"] + "\n")
    r = run(
        "ear",
        "verify",
        str(tok),
        "--jwks",
        str(_vectors() / "veraison_test_pub.jwk.json"),
        "--now",
        _iso(t["iat"]),
        "--allow-no-exp",
    )
    assert r.exit_code == 0, r.stderr
    assert "affirming" in r.stdout
    assert "Acme Inc." in r.stdout


@pytest.mark.vectors
def test_verify_token_given_inline_and_on_stdin_json() -> None:
    t = _token("verify_pass_0")
    jwks = str(_vectors() / "veraison_test_pub.jwk.json")
    inline = run(
        "ear",
        "verify",
        t["token"],
        "--jwks",
        jwks,
        "--now",
        _iso(t["iat"]),
        "--json",
        "--allow-no-exp",
    )
    stdin = run(
        "ear",
        "verify",
        "-",
        "--jwks",
        jwks,
        "--now",
        _iso(t["iat"]),
        "--json",
        "--allow-no-exp",
        stdin=t["token"] + "\n",
    )
    for r in (inline, stdin):
        assert r.exit_code == 0, r.stderr
        out = json.loads(r.stdout)
        assert out["verified"] is True
        assert out["submods"]["test"]["status"] == "affirming"
        assert out["submods"]["test"]["policy_id"] == "policy://test/01234"


@pytest.mark.vectors
def test_ear_without_exp_refused_by_cli_unless_allowed() -> None:
    t = _token("arc_testJWT")
    args = ("ear", "verify", t["token"], "--jwks", str(_vectors() / "veraison_test_pub.jwk.json"))
    r = run(*args, "--now", _iso(t["iat"]))
    assert r.exit_code == 2
    assert "ear-exp-missing" in r.stderr
    assert "--allow-no-exp" in r.stderr


@pytest.mark.vectors
def test_trustee_token_with_header_key_only_is_not_authentic() -> None:
    t = _token("arc_testRealmJWT")
    r = run(
        "ear",
        "verify",
        t["token"],
        "--jwks",
        str(_vectors() / "veraison_test_pub.jwk.json"),
        "--now",
        _iso(t["iat"]),
    )
    assert r.exit_code == 2
    assert "ear-key-untrusted" in r.stderr


@pytest.mark.vectors
def test_trustee_token_verifies_with_its_key_until_exp(tmp_path: Path) -> None:
    t = _token("arc_testRealmJWT")
    jwk = tmp_path / "trustee.jwk.json"
    jwk.write_text(json.dumps(t["header"]["jwk"]))
    trustee = ("--accept-profile", TRUSTEE_EAR_PROFILE)
    wrong = run("ear", "verify", t["token"], "--jwks", str(jwk), "--now", "2025-07-09T11:08:00Z")
    assert wrong.exit_code == 2
    assert "ear-profile-unknown" in wrong.stderr
    ok = run(
        "ear", "verify", t["token"], "--jwks", str(jwk), "--now", "2025-07-09T11:08:00Z", *trustee
    )
    assert ok.exit_code == 0, ok.stderr
    assert "cpu0" in ok.stdout
    late = run(
        "ear", "verify", t["token"], "--jwks", str(jwk), "--now", "2025-07-10T00:00:00Z", *trustee
    )
    assert late.exit_code == 2
    assert "ear-expired" in late.stderr


@pytest.mark.vectors
@pytest.mark.parametrize(
    ("name", "exit_code"),
    [
        ("verify_fail_0 (non-matching alg (HS256))", 2),
        ('verify_fail_1 (alg "none")', 2),
        ("verify_fail_2 (bad JWT formatting)", 1),
        ("verify_fail_3 (empty attestation results)", 2),
        ("verify_fail_4 (JWT with trailing rubbish)", 1),
    ],
)
def test_negative_vectors_exit_codes(name: str, exit_code: int) -> None:
    t = _token(name)
    r = run(
        "ear",
        "verify",
        t["token"],
        "--jwks",
        str(_vectors() / "veraison_test_pub.jwk.json"),
        "--now",
        "2022-10-18T11:09:33Z",
    )
    assert r.exit_code == exit_code, r.stderr
    assert r.stderr.startswith("error [")


# ---------------------------------------------------------------- own tokens


def test_contraindicated_token_exits_4_naming_the_submodule(
    keyfiles: tuple[VerifierKey, Path],
) -> None:
    key, jwks = keyfiles
    r = run(
        "ear", "verify", _issue(key, config_ok=False), "--jwks", str(jwks), "--now", NOW.isoformat()
    )
    assert r.exit_code == 4
    assert "'cpu0' is contraindicated" in r.stderr
    assert "configuration 96" in r.stderr
    assert "contraindicated" in r.stdout  # the table is still printed


def test_simulated_warning_exits_0_and_says_simulated(keyfiles: tuple[VerifierKey, Path]) -> None:
    key, jwks = keyfiles
    token = _issue(key, simulated=True)
    r = run("ear", "verify", token, "--jwks", str(jwks), "--now", NOW.isoformat())
    assert r.exit_code == 0, r.stderr
    assert "SIMULATED" in r.stdout
    assert "warning" in r.stdout
    strict = run(
        "ear", "verify", token, "--jwks", str(jwks), "--now", NOW.isoformat(), "--affirming-only"
    )
    assert strict.exit_code == 4
    assert "'cpu0' is warning" in strict.stderr


def test_nonce_option(keyfiles: tuple[VerifierKey, Path]) -> None:
    key, jwks = keyfiles
    nonce = bytes(range(32))
    token = _issue(key, nonce=nonce)
    base = ("ear", "verify", token, "--jwks", str(jwks), "--now", NOW.isoformat())
    assert run(*base, "--nonce", nonce.hex()).exit_code == 0
    wrong = run(*base, "--nonce", "00" * 32)
    assert wrong.exit_code == 2
    assert "ear-nonce-mismatch" in wrong.stderr
    assert run(*base, "--nonce", "zz").exit_code == 1


def test_expired_and_leeway(keyfiles: tuple[VerifierKey, Path]) -> None:
    key, jwks = keyfiles
    token = _issue(key)
    later = (NOW + timedelta(hours=1, seconds=5)).isoformat()
    assert run("ear", "verify", token, "--jwks", str(jwks), "--now", later).exit_code == 2
    ok = run("ear", "verify", token, "--jwks", str(jwks), "--now", later, "--leeway", "10")
    assert ok.exit_code == 0, ok.stderr


def test_token_signed_by_another_key_exits_2(keyfiles: tuple[VerifierKey, Path]) -> None:
    _, jwks = keyfiles
    r = run(
        "ear",
        "verify",
        _issue(VerifierKey.generate()),
        "--jwks",
        str(jwks),
        "--now",
        NOW.isoformat(),
    )
    assert r.exit_code == 2
    assert "ear-key-unknown" in r.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("--now", "2026-11-21T08:00:00"),  # no UTC offset
        ("--now", "yesterday"),
        ("--nonce", "abc"),
    ],
)
def test_bad_options_exit_1(keyfiles: tuple[VerifierKey, Path], args: tuple[str, str]) -> None:
    key, jwks = keyfiles
    r = run("ear", "verify", _issue(key), "--jwks", str(jwks), *args)
    assert r.exit_code == 1
    assert "error [" in r.stderr


def test_unreadable_inputs_exit_1(tmp_path: Path, keyfiles: tuple[VerifierKey, Path]) -> None:
    key, jwks = keyfiles
    assert run("ear", "verify", _issue(key), "--jwks", str(tmp_path / "nope")).exit_code == 1
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    r = run("ear", "verify", _issue(key), "--jwks", str(bad))
    assert r.exit_code == 1
    assert "jwks-invalid" in r.stderr
    r = run("ear", "verify", str(tmp_path / "missing.jwt"), "--jwks", str(jwks))
    assert r.exit_code == 1
    assert "ear-token-unreadable" in r.stderr


# ---------------------------------------------------------------- keys


def test_keygen_then_jwks_then_verify(tmp_path: Path) -> None:
    keyfile = tmp_path / "verifier.pem"
    r = run("ear", "keygen", str(keyfile))
    assert r.exit_code == 0, r.stderr
    assert stat.S_IMODE(keyfile.stat().st_mode) == 0o600
    key = VerifierKey.load(keyfile)
    assert key.kid in r.stdout

    r = run("ear", "jwks", "--key", str(keyfile))
    assert r.exit_code == 0, r.stderr
    published = json.loads(r.stdout)
    assert published == key.jwks()
    jwks = tmp_path / "jwks.json"
    jwks.write_text(r.stdout)
    ok = run("ear", "verify", _issue(key), "--jwks", str(jwks), "--now", NOW.isoformat())
    assert ok.exit_code == 0, ok.stderr


def test_keygen_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    keyfile = tmp_path / "verifier.pem"
    assert run("ear", "keygen", str(keyfile)).exit_code == 0
    kid = VerifierKey.load(keyfile).kid
    r = run("ear", "keygen", str(keyfile))
    assert r.exit_code == 1
    assert "key-exists" in r.stderr
    assert VerifierKey.load(keyfile).kid == kid
    assert run("ear", "keygen", str(keyfile), "--force").exit_code == 0
    assert VerifierKey.load(keyfile).kid != kid


def test_jwks_of_missing_key_exits_1(tmp_path: Path) -> None:
    r = run("ear", "jwks", "--key", str(tmp_path / "absent.pem"))
    assert r.exit_code == 1
    assert "key-unreadable" in r.stderr


def test_no_args_shows_help() -> None:
    r = CliRunner().invoke(_app(), ["ear"])
    assert "verify" in r.output
    assert "keygen" in r.output


# ---------------------------------------------------------------- the real entry point


def _main_mounts_ear() -> bool:
    main = REPO / "src" / "sealroom" / "cli" / "main.py"
    return main.is_file() and "ear_app" in main.read_text()


@pytest.mark.skipif(
    not _main_mounts_ear(), reason="src/sealroom/cli/main.py does not mount ear yet"
)
def test_installed_sealroom_ear_verify(tmp_path: Path, keyfiles: tuple[VerifierKey, Path]) -> None:
    exe = Path(sys.executable).parent / "sealroom"
    if not exe.exists():
        pytest.skip(f"{exe} is not installed (pip install -e .)")
    key, jwks = keyfiles
    ok = subprocess.run(
        [
            str(exe),
            "ear",
            "verify",
            _issue(key),
            "--jwks",
            str(jwks),
            "--now",
            NOW.isoformat(),
            "--json",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["submods"]["cpu0"]["status"] == "affirming"
    bad = subprocess.run(
        [
            str(exe),
            "ear",
            "verify",
            _issue(key, config_ok=False),
            "--jwks",
            str(jwks),
            "--now",
            NOW.isoformat(),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 4
    assert "cpu0" in bad.stderr
    other = subprocess.run(
        [
            str(exe),
            "ear",
            "verify",
            _issue(VerifierKey.generate()),
            "--jwks",
            str(jwks),
            "--now",
            NOW.isoformat(),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert other.returncode == 2

"""`sealroom attest verify --online` and `sealroom attest fetch` as a user runs them, against
the fake KDS/PCS on 127.0.0.1 serving the real vectors' certificates and collateral."""

from __future__ import annotations

import json
import stat
import subprocess
from pathlib import Path

import pytest

from sealroom.testing.fake_vendor_services import FakeVendorServer, Reply

from ..cli.test_attest_cli import sealroom
from .conftest import load_dcap_bundle, pcs_response


def verify(
    evidence: Path | str, policy: Path | str, now: str, *args: str, home: Path
) -> subprocess.CompletedProcess[str]:
    return sealroom(
        "attest", "verify", str(evidence), "--policy", str(policy), "--now", now, *args, home=home
    )


def verify_milan(
    vectors: Path, policy: Path, *args: str, home: Path
) -> subprocess.CompletedProcess[str]:
    """The Milan report of Oak's vectors, verified at a time its VCEK is valid."""
    return verify(
        vectors / "amd/milan_oak/report.bin", policy, "2025-06-01T00:00:00Z", *args, home=home
    )


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


def _policy(tmp_path: Path, home: Path, kind: str, **overrides: str) -> Path:
    out = tmp_path / f"{kind}-policy.yaml"
    r = sealroom("attest", "policy", "init", "--kind", kind, "--out", str(out), home=home)
    assert r.returncode == 0, r.stderr
    text = out.read_text()
    for key, value in overrides.items():
        lines = text.splitlines()
        hit = [i for i, line in enumerate(lines) if line.strip().startswith(f"{key}:")]
        assert hit, f"starter policy has no {key}"
        indent = lines[hit[0]][: len(lines[hit[0]]) - len(lines[hit[0]].lstrip())]
        lines[hit[0]] = f"{indent}{key}: {value}"
        text = "\n".join(lines) + "\n"
    out.write_text(text)
    return out


@pytest.fixture
def snp_policy(tmp_path: Path, home: Path) -> Path:
    return _policy(tmp_path, home, "snp")


@pytest.fixture
def tdx_policy(tmp_path: Path, home: Path) -> Path:
    return _policy(tmp_path, home, "tdx")


# report dir, --now, extra args (v2 reports do not name their product)
SNP_ONLINE = {
    "milan": ("milan_oak", "2025-06-01T00:00:00Z", ()),
    "milan_v2": ("milan_trustee", "2024-06-01T00:00:00Z", ("--option", "snp.product=Milan")),
    "genoa": ("genoa_oak", "2025-09-01T00:00:00Z", ()),
    "genoa_e2e": ("genoa_trustee_e2e", "2025-06-01T00:00:00Z", ()),
    "turin": ("turin_oak", "2025-09-01T00:00:00Z", ()),
}


@pytest.mark.parametrize("name", sorted(SNP_ONLINE))
def test_online_vcek_fetch_verifies_real_report(
    name: str, vectors: Path, kds: FakeVendorServer, snp_policy: Path, home: Path
) -> None:
    d, now, extra = SNP_ONLINE[name]
    args = ["--policy", str(snp_policy), "--now", now, "--online", "--kds-url", kds.url]
    r = sealroom(
        "attest",
        "verify",
        str(vectors / "amd" / d / "report.bin"),
        *args,
        *extra,
        "--json",
        home=home,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    out = json.loads(r.stdout)
    assert out["ok"] is True
    vcek = [u for u in out["collateral"] if u["item"] == "snp vcek"]
    assert len(vcek) == 1 and vcek[0]["origin"] == "network"
    assert vcek[0]["url"].startswith(f"{kds.url}/vcek/v1/")
    assert kds.count("/vcek/v1/") >= 1


def test_online_vcek_fetch_verifies_real_milan_report(
    vectors: Path, kds: FakeVendorServer, snp_policy: Path, home: Path
) -> None:
    """The human-readable path, and the VCEK the KDS served is exactly the real one."""
    r = verify_milan(vectors, snp_policy, "--online", "--kds-url", kds.url, home=home)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "ACCEPTED" in r.stdout and "network" in r.stdout
    cache = home / "collateral"
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    blobs = [p.read_bytes() for p in (cache / "entries").glob("*.bin")]
    assert (vectors / "amd/milan_oak/vcek.der").read_bytes() in blobs
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in (cache / "entries").iterdir())


def test_online_vlek_report_verifies_with_presented_vlek(
    vectors: Path, kds: FakeVendorServer, snp_policy: Path, home: Path
) -> None:
    # KDS serves VLEKs to cloud providers only: the VLEK comes with the evidence; the
    # online source is asked for the VLEK CRL (absent here: no real AMD CRL was captured).
    d = vectors / "amd/milan_vlek_aws_trustee"
    r = sealroom(
        "attest",
        "verify",
        str(d / "report.bin"),
        "--certs",
        str(d / "vlek.der"),
        "--policy",
        str(snp_policy),
        "--now",
        "2025-06-01T00:00:00Z",
        "--online",
        "--kds-url",
        kds.url,
        "--json",
        home=home,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    uses = json.loads(r.stdout)["collateral"]
    assert [u["url"] for u in uses] == [f"{kds.url}/vlek/v1/Milan/crl"]
    assert uses[0]["origin"] == "missing" and kds.count("/vlek/v1/Milan/crl") == 1


def test_unknown_vcek_is_unavailable_naming_the_url(
    vectors: Path, snp_policy: Path, home: Path
) -> None:
    with FakeVendorServer() as empty:  # a KDS that knows no chip: 404
        r = verify_milan(vectors, snp_policy, "--online", "--kds-url", empty.url, home=home)
    assert r.returncode == 3, r.stdout + r.stderr
    assert f"{empty.url}/vcek/v1/Milan/" in r.stderr and "404" in r.stderr


def test_network_failure_without_cache_is_unavailable_naming_the_url(
    vectors: Path, snp_policy: Path, home: Path
) -> None:
    with FakeVendorServer() as gone:
        url = gone.url
    r = verify_milan(vectors, snp_policy, "--online", "--kds-url", url, home=home)
    assert r.returncode == 3, r.stdout + r.stderr
    assert f"{url}/vcek/v1/Milan/" in r.stderr


def test_cache_hit_with_server_down(
    vectors: Path, kds: FakeVendorServer, snp_policy: Path, home: Path
) -> None:
    args = [
        "attest",
        "verify",
        str(vectors / "amd/milan_oak/report.bin"),
        "--policy",
        str(snp_policy),
        "--now",
        "2025-06-01T00:00:00Z",
        "--kds-url",
        kds.url,
        "--json",
    ]
    first = sealroom(*args, "--online", home=home)
    assert first.returncode == 0, first.stdout + first.stderr
    kds.stop()
    for mode in ("--online", "--offline"):
        r = sealroom(*args, mode, home=home)
        assert r.returncode == 0, (mode, r.stdout + r.stderr)
        vcek = next(u for u in json.loads(r.stdout)["collateral"] if u["item"] == "snp vcek")
        assert vcek["origin"] == "cache" and vcek["stale"] is False


def test_offline_without_cache_is_unavailable(vectors: Path, snp_policy: Path, home: Path) -> None:
    r = verify_milan(vectors, snp_policy, "--offline", home=home)
    assert r.returncode == 3 and "offline and not in the cache" in r.stderr


def test_tdx_quote_verifies_with_pcs_collateral(
    vectors: Path, pcs: FakeVendorServer, tdx_policy: Path, home: Path
) -> None:
    load_dcap_bundle(pcs, vectors / "intel/tdx_v4_phala/collateral.json")
    r = verify(
        str(vectors / "intel/tdx_v4_phala/quote.bin"),
        str(tdx_policy),
        "2025-07-01T00:00:00Z",
        "--online",
        "--pcs-url",
        pcs.url,
        "--json",
        home=home,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    out = json.loads(r.stdout)
    got = {u["item"]: u["origin"] for u in out["collateral"]}
    assert got["tdx TCB info"] == got["tdx QE identity"] == "network"
    assert got["tdx PCK platform CA CRL"] == got["tdx Intel SGX Root CA CRL"] == "network"
    # The TCB Signing chain came URL-decoded from a response header, never as a body.
    assert got["tdx TCB signing chain"] in ("network", "cache")
    assert pcs.count("/tdx/certification/v4/tcb?fmspc=b0c06f000000") == 1
    assert pcs.count("/sgx/certification/v4/pckcrl?ca=platform&encoding=der") == 1


def test_sgx_quote_verifies_with_pcs_collateral_and_early_update(
    vectors: Path, pcs: FakeVendorServer, tmp_path: Path, home: Path
) -> None:
    load_dcap_bundle(pcs, vectors / "intel/sgx_v3_phala/collateral.json")
    policy = _policy(
        tmp_path,
        home,
        "sgx",
        accepted_tcb_statuses="[UpToDate, ConfigurationAndSWHardeningNeeded]",
    )
    r = verify(
        str(vectors / "intel/sgx_v3_phala/quote.bin"),
        str(policy),
        "2025-07-01T00:00:00Z",
        "--online",
        "--pcs-url",
        pcs.url,
        "--tcb-update",
        "early",
        "--json",
        home=home,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert pcs.count("/sgx/certification/v4/tcb?fmspc=00a067110000&update=early") == 1
    assert pcs.count("/sgx/certification/v4/pckcrl?ca=processor&encoding=der") == 1


# FMSPC 90c06f000000: go-tdx-guest's TCB info (issued 2026-02-01, nextUpdate 03-03) and a
# later one from dcap-qvl's sample (issued 2026-02-18, nextUpdate 03-20): real successive
# releases of the same series.
def _fmspc_90c06f(vectors: Path) -> tuple[bytes, bytes, bytes]:
    older = (vectors / "intel/tdx_v5_gotdx/tcbinfo_response.json").read_bytes()
    b = json.loads((vectors / "intel/tdx_v5_phala_tcb_unmatched/collateral.json").read_text())
    newer = pcs_response("tcbInfo", b["tcb_info"], b["tcb_info_signature"])
    chain = (vectors / "intel/Intel_SGX_TCB_Signing_chain.pem").read_bytes()
    return older, newer, chain


def _verify_v5(vectors: Path, policy: Path, home: Path, now: str, *mode: str) -> dict[str, str]:
    r = verify(
        str(vectors / "intel/tdx_v5_gotdx/quote.bin"), str(policy), now, *mode, "--json", home=home
    )
    uses = json.loads(r.stdout)["collateral"] if r.stdout.startswith("{") else []
    tcb: dict[str, object] = next((u for u in uses if u["item"] == "tdx TCB info"), {})
    return {"rc": str(r.returncode), "stderr": r.stderr, **{k: str(v) for k, v in tcb.items()}}


@pytest.fixture
def tcb_only_policy(tmp_path: Path, home: Path) -> Path:
    return _policy(
        tmp_path,
        home,
        "tdx",
        require_crl="false",
        require_collateral="false",
        accepted_tcb_statuses="[UpToDate, SWHardeningNeeded, OutOfDate]",
    )


def test_stale_cache_refreshed(
    vectors: Path, pcs: FakeVendorServer, tcb_only_policy: Path, home: Path
) -> None:
    older, newer, chain = _fmspc_90c06f(vectors)
    pcs.add_tcb_info(True, "90c06f000000", older, chain)
    online = ("--online", "--pcs-url", pcs.url)
    first = _verify_v5(vectors, tcb_only_policy, home, "2026-02-15T00:00:00Z", *online)
    assert first["rc"] == "0" and first["origin"] == "network", first
    assert first["valid_until"].startswith("2026-03-03")
    tcb_path = "/tdx/certification/v4/tcb?fmspc=90c06f000000"
    # Still current on 02-20: the cache answers, the server is not asked.
    again = _verify_v5(vectors, tcb_only_policy, home, "2026-02-20T00:00:00Z", *online)
    assert again["origin"] == "cache" and pcs.count(tcb_path) == 1, again
    # Past nextUpdate: refreshed from the server, which now has the next release.
    pcs.add_tcb_info(True, "90c06f000000", newer, chain)
    later = _verify_v5(vectors, tcb_only_policy, home, "2026-03-10T00:00:00Z", *online)
    assert later["origin"] == "network" and later["valid_until"].startswith("2026-03-20"), later
    assert pcs.count(tcb_path) == 2


def test_stale_cache_offline_is_reported_and_verification_decides(
    vectors: Path, pcs: FakeVendorServer, tcb_only_policy: Path, home: Path
) -> None:
    older, _, chain = _fmspc_90c06f(vectors)
    pcs.add_tcb_info(True, "90c06f000000", older, chain)
    ok = _verify_v5(
        vectors, tcb_only_policy, home, "2026-02-15T00:00:00Z", "--online", "--pcs-url", pcs.url
    )
    assert ok["rc"] == "0", ok
    pcs.stop()
    stale = _verify_v5(
        vectors, tcb_only_policy, home, "2026-03-10T00:00:00Z", "--offline", "--pcs-url", pcs.url
    )
    assert "STALE collateral used" in stale["stderr"] and "TCB info" in stale["stderr"]
    # The stale TCB info is judged at --now like any collateral: expired, not authentic.
    assert stale["rc"] == "2" and "expired" in stale["stderr"], stale


def test_older_tcb_info_than_seen_is_refused(
    vectors: Path, pcs: FakeVendorServer, tcb_only_policy: Path, home: Path
) -> None:
    older, newer, chain = _fmspc_90c06f(vectors)
    pcs.add_tcb_info(True, "90c06f000000", newer, chain)
    ok = _verify_v5(
        vectors, tcb_only_policy, home, "2026-03-10T00:00:00Z", "--online", "--pcs-url", pcs.url
    )
    assert ok["rc"] == "0", ok
    # A server (or a man in the middle) now replays the older, still-signed release.
    pcs.add_tcb_info(True, "90c06f000000", older, chain)
    r = _verify_v5(
        vectors, tcb_only_policy, home, "2026-03-25T00:00:00Z", "--online", "--pcs-url", pcs.url
    )
    assert r["rc"] == "2" and "rollback" in r["stderr"], r


def test_attest_fetch_saves_what_offline_verification_needs(
    vectors: Path, pcs: FakeVendorServer, tdx_policy: Path, home: Path, tmp_path: Path
) -> None:
    load_dcap_bundle(pcs, vectors / "intel/tdx_v4_phala/collateral.json")
    quote = str(vectors / "intel/tdx_v4_phala/quote.bin")
    out = tmp_path / "saved"
    r = sealroom(
        "attest",
        "fetch",
        quote,
        "--out",
        str(out),
        "--pcs-url",
        pcs.url,
        "--now",
        "2025-07-01T00:00:00Z",
        "--json",
        home=home,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    saved = {s["item"] for s in json.loads(r.stdout)["saved"]}
    assert saved == {
        "tdx TCB info",
        "tdx QE identity",
        "tdx PCK platform CA CRL",
        "tdx Intel SGX Root CA CRL",
        "tdx TCB signing chain",
    }
    pcs.stop()
    ok = verify(
        quote,
        str(tdx_policy),
        "2025-07-01T00:00:00Z",
        "--collateral",
        str(out),
        home=tmp_path / "other-home",
    )
    assert ok.returncode == 0 and "ACCEPTED" in ok.stdout, ok.stdout + ok.stderr


def test_attest_fetch_snp_vcek_for_offline_use(
    vectors: Path, kds: FakeVendorServer, snp_policy: Path, home: Path, tmp_path: Path
) -> None:
    report = str(vectors / "amd/turin_oak/report.bin")
    out = tmp_path / "saved"
    r = sealroom(
        "attest",
        "fetch",
        report,
        "--out",
        str(out),
        "--kds-url",
        kds.url,
        "--now",
        "2025-09-01T00:00:00Z",
        home=home,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    vcek = [p for p in out.rglob("*") if p.is_file() and "/vcek/v1/Turin/" in str(p)]
    assert [p.read_bytes() for p in vcek] == [(vectors / "amd/turin_oak/vcek.der").read_bytes()]
    kds.stop()
    ok = verify(
        report,
        str(snp_policy),
        "2025-09-01T00:00:00Z",
        "--collateral",
        str(out),
        home=tmp_path / "other-home",
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr


def test_pcs_answering_with_a_web_page_is_not_cached(
    vectors: Path, pcs: FakeVendorServer, tdx_policy: Path, home: Path
) -> None:
    load_dcap_bundle(pcs, vectors / "intel/tdx_v4_phala/collateral.json")
    page = Reply(200, b"<html>maintenance</html>", {"Content-Type": "text/html"})
    pcs.set("/sgx/certification/v4/rootcacrl", page)
    r = verify(
        str(vectors / "intel/tdx_v4_phala/quote.bin"),
        str(tdx_policy),
        "2025-07-01T00:00:00Z",
        "--online",
        "--pcs-url",
        pcs.url,
        home=home,
    )
    assert r.returncode == 3 and "not the Intel SGX Root CA CRL asked for" in r.stderr
    assert not any(
        p.read_bytes() == page.body for p in (home / "collateral" / "entries").glob("*.bin")
    )


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (("--online", "--offline"), "exclude each other"),
        (("--kds-url", "http://127.0.0.1:9"), "need --online"),
    ],
)
def test_contradictory_online_flags_are_bad_input(
    flags: tuple[str, ...], message: str, vectors: Path, snp_policy: Path, home: Path
) -> None:
    r = verify(
        vectors / "amd/milan_oak/report.bin", snp_policy, "2025-06-01T00:00:00Z", *flags, home=home
    )
    assert r.returncode == 1 and message in r.stderr

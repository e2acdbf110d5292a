"""Every starter policy (``sealroom attest policy init --kind K``) against every real vector
of that kind: the verdict a careful verifier expects from the starter as written.

A starter must be safe as written: a debug guest, an unvouched TPM key, an outdated or
unevaluated Intel TCB are refused; genuine current evidence of the kind passes (with the
verifier's nonce bound where the vector has one, and "freshness not checked" said plainly
where it has none)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest

from sealroom.attestation import kinds
from sealroom.attestation.evidence import EvidenceBundle
from sealroom.attestation.kinds import VerifyContext
from sealroom.attestation.policy import Policy, starter_policy
from sealroom.attestation.verifier import appraise, load_evidence, verify_bundle
from sealroom.attestation.x509util import load_certificates


@dataclass(frozen=True)
class Case:
    kind: str
    evidence: str
    now: datetime
    accepted: bool
    #: rules that must fail (exactly these) when not accepted
    failing: tuple[str, ...] = ()
    attachments: dict[str, str] = field(default_factory=dict)
    collateral: dict[str, str] = field(default_factory=dict)
    nonce: bytes | None = None
    roots: tuple[str, ...] = ()
    pins: tuple[str, ...] = ()


def _t(y: int, m: int, d: int) -> datetime:
    return datetime(y, m, d, tzinfo=UTC)


A = "amd/"
I = "intel/"  # noqa: E741
V = "vtpm/"
N = "nvidia/"
TCB_CHAIN = I + "Intel_SGX_TCB_Signing_chain.pem"
# 2023 collateral is signed by the 2018 issue of the TCB Signing certificate (ADR 0006).
TCB_SIGNING_2018 = str(Path(__file__).parent / "tdx" / "data" / "Intel_SGX_TCB_Signing_2018.pem")
# Azure's test VMs have their serial console enabled: the starter's vm_configuration
# refuses that (and nothing else: no Intel collateral is needed, ADR 0006).
AZURE_FAILS = ("vm_configuration.console-enabled",)

CASES = {
    # ---- snp: genuine, non-debug reports pass; the debug one is refused.
    "snp/milan_gosev_debug": Case(
        "snp",
        A + "milan_gosev_debug/report.bin",
        _t(2024, 1, 1),
        False,
        ("POLICY.DEBUG",),
        {"vcek": A + "milan_gosev_debug/vcek.der"},
    ),
    "snp/milan_virtee": Case(
        "snp",
        A + "milan_virtee/report.hex",
        _t(2024, 1, 1),
        True,
        attachments={"vcek": A + "milan_virtee/vcek.der"},
    ),
    "snp/milan_trustee": Case(
        "snp",
        A + "milan_trustee/report.bin",
        _t(2024, 6, 1),
        True,
        attachments={"vcek": A + "milan_trustee/vcek.der"},
    ),
    "snp/milan_vlek_aws": Case(
        "snp",
        A + "milan_vlek_aws_trustee/report.bin",
        _t(2025, 6, 1),
        True,
        attachments={"vlek": A + "milan_vlek_aws_trustee/vlek.der"},
    ),
    "snp/milan_oak": Case(
        "snp",
        A + "milan_oak/report.bin",
        _t(2025, 6, 1),
        True,
        attachments={"vcek": A + "milan_oak/vcek.der"},
    ),
    "snp/genoa_trustee_e2e": Case(
        "snp",
        A + "genoa_trustee_e2e/report.bin",
        _t(2025, 6, 1),
        True,
        attachments={"vcek": A + "genoa_trustee_e2e/vcek.der"},
    ),
    "snp/genoa_oak": Case(
        "snp",
        A + "genoa_oak/report.bin",
        _t(2025, 9, 1),
        True,
        attachments={"vcek": A + "genoa_oak/vcek.der"},
    ),
    "snp/turin_oak": Case(
        "snp",
        A + "turin_oak/report.bin",
        _t(2025, 9, 1),
        True,
        attachments={"vcek": A + "turin_oak/vcek.der"},
    ),
    # ---- tdx/sgx: only UpToDate with collateral and both CRLs passes.
    "tdx/v4_phala": Case(
        "tdx",
        I + "tdx_v4_phala/quote.bin",
        _t(2025, 7, 1),
        True,
        collateral={"collateral": I + "tdx_v4_phala/collateral.json"},
    ),
    "tdx/v5_phala_tcb_unmatched": Case(
        "tdx",
        I + "tdx_v5_phala_tcb_unmatched/quote.bin",
        _t(2026, 3, 1),
        False,
        ("tcb_status",),
        collateral={"collateral": I + "tdx_v5_phala_tcb_unmatched/collateral.json"},
    ),
    "tdx/v4_gotdx_spr": Case(
        "tdx",
        I + "tdx_v4_gotdx_spr/quote_with_trailing_text.bin",
        _t(2023, 6, 20),
        False,
        ("tcb_status", "TD_ATTRIBUTES.SEPT_VE_DISABLE"),
        collateral={
            "tcb_info": I + "tdx_v4_gotdx_spr/tcbinfo_response.json",
            "qe_identity": I + "tdx_v4_gotdx_spr/qe_identity_response.json",
            "pck_crl": I + "tdx_v4_gotdx_spr/pck_platform_crl.der",
            "root_ca_crl": I + "tdx_v4_gotdx_spr/root_ca_crl.der",
            "cert": TCB_SIGNING_2018,
        },
    ),
    "tdx/v5_gotdx_tcbinfo_only": Case(
        "tdx",
        I + "tdx_v5_gotdx/quote.bin",
        _t(2026, 2, 15),
        False,
        ("collateral", "crl_checked"),
        collateral={"tcb_info": I + "tdx_v5_gotdx/tcbinfo_response.json", "cert": TCB_CHAIN},
    ),
    "tdx/trustee_debug_td_no_collateral": Case(
        "tdx",
        I + "trustee/tdx_v4_debug_td_quote.bin",
        _t(2025, 1, 1),
        False,
        ("tcb_status", "collateral", "crl_checked", "TD_ATTRIBUTES.DEBUG"),
    ),
    "tdx/trustee_v5_no_collateral": Case(
        "tdx",
        I + "trustee/tdx_v5_quote.bin",
        _t(2025, 1, 1),
        False,
        ("tcb_status", "collateral", "crl_checked", "MRSERVICETD"),
    ),
    "tdx/trustee_out_of_date": Case(
        "tdx",
        I + "trustee/tdx_v4_quote_fmspc00a06d080000.bin",
        _t(2025, 11, 1),
        False,
        ("tcb_status", "crl_checked"),
        collateral={
            "tcb_info": I + "trustee/tcbinfo_fmspc00a06d080000_response.json",
            "qe_identity": I + "trustee/td_qe_identity_response.json",
            "cert": TCB_CHAIN,
        },
    ),
    "sgx/v3_phala": Case(
        "sgx",
        I + "sgx_v3_phala/quote.bin",
        _t(2025, 7, 1),
        False,
        ("tcb_status",),
        collateral={"collateral": I + "sgx_v3_phala/collateral.json"},
        nonce=b"Hello, world!",
    ),
    "sgx/trustee_debug_enclave": Case(
        "sgx",
        I + "trustee/sgx_v3_debug_enclave_quote.bin",
        _t(2025, 1, 1),
        False,
        ("tcb_status", "collateral", "crl_checked", "ATTRIBUTES.DEBUG"),
    ),
    # ---- tpm: a vouched-for, restricted AK passes; a software TPM's key does not.
    "tpm/gce_google_roots": Case(
        "tpm",
        V + "gce_shielded_vm/attestation_nonce9009.pb",
        _t(2025, 6, 1),
        True,
        nonce=bytes.fromhex("9009"),
        roots=(
            V + "gce_shielded_vm/tpm_ek_root_1.cer",
            V + "gce_shielded_vm/tpm_ek_intermediate_2.crt",
        ),
    ),
    "tpm/gce_no_root": Case(
        "tpm",
        V + "gce_shielded_vm/attestation_no_nonce.pb",
        _t(2025, 6, 1),
        False,
        ("ak_trust",),
    ),
    "tpm/swtpm_unpinned": Case(
        "tpm",
        V + "swtpm_trustee/tpm_evidence.json",
        _t(2025, 6, 1),
        False,
        ("ak_trust", "ak_restricted"),
    ),
    # ---- Azure CVMs: the AK is certified by the hardware report.
    **{
        f"az-snp-vtpm/{name}": Case(
            "az-snp-vtpm",
            V + rel,
            _t(2025, 6, 1),
            False,
            AZURE_FAILS,
            nonce=b"challenge" if nonce else None,
        )
        for name, rel, nonce in (
            ("genoa", "azure_snp_genoa/evidence.json", False),
            ("milan_v0", "azure_snp_milan/evidence_v0.json", True),
            ("milan_v1", "azure_snp_milan/evidence_v1.json", True),
            ("milan_v2", "azure_snp_milan/evidence_v2_userdata.json", False),
        )
    },
    "az-tdx-vtpm/v1": Case(
        "az-tdx-vtpm",
        V + "azure_tdx/evidence_v1.json",
        _t(2025, 6, 1),
        False,
        AZURE_FAILS,
        nonce=b"challenge",
    ),
    # ---- nvidia: embedded root, the verifier's nonce bound.
    "nvidia/h100_nvtrust": Case(
        "nvidia",
        N + "h100_nvtrust/attestation_report.hex",
        _t(2024, 9, 1),
        True,
        attachments={"cert": N + "h100_nvtrust/cert_chain.pem"},
        nonce=bytes.fromhex("931d8dd0add203ac3d8b4fbde75e115278eefcdceac5b87671a748f32364dfcb"),
    ),
}


def _read(vectors: Path, rel: str) -> bytes:
    return (vectors / rel).read_bytes()


@pytest.mark.vectors
@pytest.mark.parametrize("name", sorted(CASES))
def test_starter_policy_verdict_on_real_vector(vectors: Path, name: str) -> None:
    case = CASES[name]
    policy = Policy.loads(starter_policy([case.kind]), f"starter policy ({case.kind})")
    bundle = load_evidence(_read(vectors, case.evidence), case.kind)
    extra = {k: _read(vectors, v) for k, v in case.attachments.items()}
    bundle = EvidenceBundle(tuple(i.with_attachments(extra) for i in bundle.items))
    roots = tuple(c for r in case.roots for c in load_certificates(_read(vectors, r)))
    ctx = VerifyContext(
        now=case.now,
        nonce=case.nonce,
        extra_roots=roots,
        verifier_collateral={k: _read(vectors, v) for k, v in case.collateral.items()},
        ak_pins=tuple(_read(vectors, p) for p in case.pins),
    )
    result = appraise(verify_bundle(bundle, ctx), policy, ctx)
    failed = sorted({r.field for r in result.failures()})
    assert result.ok is case.accepted, [r.describe() for r in result.failures()]
    if not case.accepted:
        assert failed == sorted(case.failing), [r.describe() for r in result.failures()]
    # Freshness is said plainly either way.
    for sub in result.submods:
        assert sub.freshness == ("nonce" if case.nonce is not None else "not-checked")


def test_every_kind_has_a_starter_case() -> None:
    assert {c.kind for c in CASES.values()} == set(kinds.names())

"""The ``nvidia`` policy section: parsing and every appraisal rule, on real vectors."""

from __future__ import annotations

from typing import Any

import pytest

from sealroom.attestation import kinds, verifier
from sealroom.attestation.appraise import AppraisalResult
from sealroom.attestation.evidence import EvidenceBundle
from sealroom.attestation.kinds import VerifyContext
from sealroom.attestation.nvidia.claims import NvidiaClaims
from sealroom.attestation.nvidia.policy import STARTER, driver_version_key, vbios_version_key
from sealroom.attestation.policy import Policy, starter_policy
from sealroom.attestation.x509util import fingerprint
from sealroom.errors import InvalidInputError, PolicyViolationError

from ._fakes import NONCE, FakeDevice
from ._fakes import NOW as FAKE_NOW
from ._support import NOW, VECTORS, read_vector

KIND = kinds.get("nvidia")
PPCIE_NONCE = bytes.fromhex("4760e30534a0621357d458b1a7936551b5dc4cd1e69718adf7ed9fb0252a537e")
NVTRUST_NONCE = bytes.fromhex("931d8dd0add203ac3d8b4fbde75e115278eefcdceac5b87671a748f32364dfcb")
NVIDIA_ROOT = "102bf659d5419614c9d8e6aecebc80454eb26b1df6a769ac720b9a690b167b48"


def _policy(section: dict[str, Any], **top: Any) -> Policy:
    return Policy.from_dict({"version": 1, "id": "t", "nvidia": section, **top})


def _nvtrust_bundle() -> EvidenceBundle:
    item = KIND.load(read_vector("h100_nvtrust/attestation_report.hex")).items[0]
    return EvidenceBundle.single(
        item.with_attachments({"cert": read_vector("h100_nvtrust/cert_chain.pem")})
    )


def _run(bundle: EvidenceBundle, policy: Policy, ctx: VerifyContext) -> AppraisalResult:
    return verifier.appraise(verifier.verify_bundle(bundle, ctx), policy, ctx)


def _rule(result: AppraisalResult, field: str, submod: str = "gpu0") -> tuple[bool, str, str]:
    for r in result.all_rules():
        if r.field == field and r.submod == submod:
            return r.passed, r.got, r.want
    raise AssertionError(f"no rule {field!r} for {submod}: {[r.field for r in result.all_rules()]}")


def _nvtrust(section: dict[str, Any], nonce: bytes | None = NVTRUST_NONCE) -> AppraisalResult:
    ctx = VerifyContext(now=NOW["h100_nvtrust"], nonce=nonce)
    return _run(_nvtrust_bundle(), _policy(section), ctx)


# --- nonce --------------------------------------------------------------------------------


@pytest.mark.vectors
def test_right_nonce_passes() -> None:
    result = _nvtrust({})
    assert result.ok
    assert _rule(result, "nonce")[0]


@pytest.mark.vectors
def test_wrong_nonce_fails_with_got_and_want() -> None:
    wrong = bytes(32)
    result = _nvtrust({}, nonce=wrong)
    passed, got, want = _rule(result, "nonce")
    assert not passed
    assert got == NVTRUST_NONCE.hex()
    assert want.startswith(wrong.hex())
    with pytest.raises(PolicyViolationError, match="nonce"):
        result.require_ok()


@pytest.mark.vectors
def test_no_nonce_fails_when_nonce_is_required() -> None:
    passed, _, want = _rule(_nvtrust({}, nonce=None), "nonce")
    assert not passed
    assert "nonce is required for freshness" in want


@pytest.mark.vectors
def test_no_nonce_passes_when_policy_waives_it() -> None:
    result = _nvtrust({"require_nonce": False}, nonce=None)
    assert result.ok
    assert "not checked" in _rule(result, "nonce")[2]


# --- roots ----------------------------------------------------------------------------------


def test_caller_root_is_not_accepted_by_default_policy() -> None:
    dev = FakeDevice()
    bundle = EvidenceBundle.single(dev.item())
    ctx = VerifyContext(now=FAKE_NOW, nonce=NONCE, extra_roots=(dev.root,))
    result = _run(bundle, _policy({}), ctx)
    passed, got, want = _rule(result, "root")
    assert not passed
    assert got == fingerprint(dev.root)
    assert NVIDIA_ROOT in want
    listed = _run(bundle, _policy({"accepted_roots": [fingerprint(dev.root)]}), ctx)
    assert listed.ok


@pytest.mark.vectors
def test_nvidia_root_rejected_when_policy_lists_only_another() -> None:
    result = _nvtrust({"accepted_roots": ["ab" * 32]})
    assert not _rule(result, "root")[0]


# --- versions, measurements, kinds, opaque ----------------------------------------------------


@pytest.mark.vectors
@pytest.mark.parametrize(
    ("gpu", "field", "passes"),
    [
        ({"min_driver_version": "550.54.14"}, "driver_version", True),
        ({"min_driver_version": "550.90.07"}, "driver_version", True),
        ({"min_driver_version": "550.100"}, "driver_version", False),
        ({"allowed_driver_versions": ["550.90.07", "560.35.03"]}, "driver_version", True),
        ({"allowed_driver_versions": ["560.35.03"]}, "driver_version", False),
        ({"min_vbios_version": "96.00.9f.00.01"}, "vbios_version", True),
        ({"min_vbios_version": "96.00.A0.00.01"}, "vbios_version", False),
        ({"allowed_vbios_versions": ["96.00.9f.00.01"]}, "vbios_version", True),
        ({"allowed_vbios_versions": ["96.00.5E.00.01"]}, "vbios_version", False),
        ({"opaque": {"project": ["1010"], "chip_sku": ["882"]}}, "opaque.project", True),
        ({"opaque": {"feature_flag": ["PPCIE"]}}, "opaque.feature_flag", False),
    ],
)
def test_gpu_version_and_opaque_rules(gpu: dict[str, Any], field: str, passes: bool) -> None:
    result = _nvtrust({"gpu": gpu})
    assert _rule(result, field)[0] is passes
    assert result.ok is passes


@pytest.mark.vectors
def test_measurement_allow_list() -> None:
    claims = KIND.verify(_nvtrust_bundle().items[0], VerifyContext(now=NOW["h100_nvtrust"]))
    assert isinstance(claims, NvidiaClaims)
    good = claims.measurements[2]
    ok = _nvtrust({"gpu": {"measurements": {2: ["00" * 48, good]}}})
    assert ok.ok
    flipped = ("ff" if good[:2] != "ff" else "00") + good[2:]
    bad = _nvtrust({"gpu": {"measurements": {2: [flipped]}}})
    passed, got, want = _rule(bad, "measurements[2]")
    assert not passed
    assert got == good
    assert flipped in want
    missing = _nvtrust({"gpu": {"measurements": {200: [good]}}})
    assert not _rule(missing, "measurements[200]")[0]


@pytest.mark.vectors
def test_device_kind_and_arch_rules() -> None:
    assert _nvtrust({"device_kinds": ["gpu"], "archs": ["HOPPER"]}).ok
    switches_only = _nvtrust({"device_kinds": ["nvswitch"]})
    assert not _rule(switches_only, "device_kind")[0]
    assert not _rule(_nvtrust({"archs": ["BLACKWELL"]}), "arch")[0]


@pytest.mark.vectors
def test_switch_section_applies_to_switches_only() -> None:
    gpus = KIND.load(read_vector("hgx_ppcie/gpu_evidence_8xH100.json"))
    switches = KIND.load(read_vector("hgx_ppcie/switch_evidence_4xLS10.json"))
    bundle = EvidenceBundle(gpus.items + switches.items)
    ctx = VerifyContext(now=NOW["hgx_ppcie"], nonce=PPCIE_NONCE)
    policy = _policy(
        {
            "device_kinds": ["gpu", "nvswitch"],
            "archs": ["HOPPER", "LS10"],
            "gpu": {"min_driver_version": "590.12", "opaque": {"feature_flag": ["PPCIE"]}},
            "nvswitch": {"min_vbios_version": "96.10.73.00.01"},
        }
    )
    result = _run(bundle, policy, ctx)
    assert result.ok, [r.describe() for r in result.failures()]
    assert len(result.submods) == 12
    assert _rule(result, "driver_version", "gpu7")[0]
    assert _rule(result, "vbios_version", "switch3")[0]
    with pytest.raises(AssertionError):
        _rule(result, "driver_version", "switch0")  # no driver on a switch, no rule
    newer = _policy({"nvswitch": {"min_vbios_version": "96.10.74.00.01"}})
    failed = _run(bundle, newer, ctx)
    assert {r.submod for r in failed.failures()} == {f"switch{i}" for i in range(4)}


@pytest.mark.vectors
def test_cpu_and_gpu_policy_requires_both() -> None:
    """require: [snp, nvidia] is the CPU+GPU case: GPUs alone do not satisfy it.

    The CPU and GPU vectors come from different machines, so no one nonce binds both: the
    policy checks no nonce (a nonce given would be refused as unbound for the CPU)."""
    policy = Policy.from_dict(
        {
            "version": 1,
            "id": "cpu+gpu",
            "require": ["snp", "nvidia"],
            "snp": {},
            "nvidia": {"require_nonce": False},
        }
    )
    gpus = KIND.load(read_vector("hgx_ppcie/gpu_evidence_8xH100.json"))
    ctx = VerifyContext(now=NOW["hgx_ppcie"])
    result = _run(gpus, policy, ctx)
    assert [r.field for r in result.failures()] == ["require.snp"]
    snp = kinds.get("snp")
    amd = VECTORS / ".." / "amd" / "milan_oak"
    cpu = (
        snp.load((amd / "report.bin").read_bytes())
        .items[0]
        .with_attachments({"vcek": (amd / "vcek.der").read_bytes()})
    )
    both = _run(EvidenceBundle((cpu, *gpus.items)), policy, ctx)
    assert both.ok, [r.describe() for r in both.failures()]
    assert [s.name for s in both.submods] == ["cpu0"] + [f"gpu{i}" for i in range(8)]


# --- policy parsing ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"accepted_roots": ["not-a-fingerprint"]}, "SHA-256 fingerprint"),
        ({"gpu": {"min_driver_version": "latest"}}, "dotted decimal"),
        ({"gpu": {"min_vbios_version": "96.zz"}}, "dotted hex"),
        ({"nvswitch": {"min_driver_version": "550.1"}}, "nvswitch.min_driver_version"),
        ({"device_kinds": ["cpu"]}, "device_kinds"),
        ({"gpu": {"measurements": {0: ["00"]}}}, "measurements"),
        ({"unknown": 1}, "unknown"),
    ],
)
def test_bad_policy_section_is_invalid_input(section: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        _policy(section)


def test_root_fingerprint_accepts_colons_and_upper_case() -> None:
    colons = ":".join(NVIDIA_ROOT[i : i + 2] for i in range(0, 64, 2)).upper()
    section = _policy({"accepted_roots": [colons]}).sections["nvidia"]
    assert section.model_dump()["accepted_roots"] == [NVIDIA_ROOT]


def test_starter_policy_loads() -> None:
    assert "require_nonce: false" in STARTER  # a nonce given is always checked
    policy = Policy.loads(starter_policy(["nvidia"]))
    assert "nvidia" in policy.sections


def test_version_keys() -> None:
    assert driver_version_key("550.90.07") < driver_version_key("550.100.1")
    assert vbios_version_key("96.00.9F.00.01") > vbios_version_key("96.00.5E.00.01")
    assert vbios_version_key("96.zz") == ()

"""TPM quote verification benchmark: our TPM quotes verified per second next to the bare
signature verify rate of the same crypto library (pyca/cryptography) for the AK's algorithm,
over the same bytes, in the same run.

Rows:
  1. one TPM 2.0 quote (Trustee's swtpm vector; AK pinned): parse, RSASSA-SHA256 signature,
     PCR digest over 24 PCRs, claims -- vs bare RSA-2048 PKCS#1 v1.5 verify;
  2. a GCE Shielded VM attestation (3 quotes, AK certificate chain, event log replay) -- vs
     the same bare RSA verify (it does 3 quote and 2 chain signatures, so expect < 1/5).
Without ../shared/vectors a locally signed quote stands in for row 1.

Run: .venv/bin/python bench/tpm_bench.py   (attest_bench.py also collects run()).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from benchlib import Row, paired_rates, print_rows
from sealroom.attestation import kinds
from sealroom.attestation.evidence import EvidenceItem
from sealroom.attestation.kinds import VerifyContext
from sealroom.attestation.tpm.abi import (
    Alg,
    Attest,
    ClockInfo,
    PcrSelection,
    Public,
    Scheme,
    Signature,
    SymDef,
    digest,
)
from sealroom.attestation.tpm.formats import decode_tpm_item, load_ak, pcrs_json
from sealroom.attestation.x509util import load_certificate

HERE = Path(__file__).resolve().parent
VTPM = (HERE / ".." / ".." / "shared" / "vectors" / "vtpm").resolve()
NOW = datetime(2025, 6, 1, tzinfo=UTC)
TPM = kinds.get("tpm")


def _local_quote() -> EvidenceItem:
    key = rsa.generate_private_key(65537, 2048)
    values = {i: digest(Alg.SHA256, bytes([i])) for i in range(24)}
    attest = Attest(
        qualified_signer=b"\x00\x0b" + bytes(32),
        extra_data=b"bench nonce",
        clock_info=ClockInfo(1, 0, 0, True),
        firmware_version=1,
        pcr_select=(PcrSelection.of(Alg.SHA256, list(range(24))),),
        pcr_digest=digest(Alg.SHA256, b"".join(values[i] for i in range(24))),
    ).to_bytes()
    sig = key.sign(attest, padding.PKCS1v15(), hashes.SHA256())
    n = key.public_key().public_numbers().n
    pub = Public(
        Alg.RSA, Alg.SHA256, 0x00050072, b"", SymDef(Alg.NULL), Scheme(Alg.RSASSA, Alg.SHA256),
        rsa_bits=2048, modulus=n.to_bytes(256, "big"),
    ).to_bytes()  # fmt: skip
    return EvidenceItem(
        "tpm",
        attest,
        {
            "signature": Signature(Alg.RSASSA, Alg.SHA256, sig=sig).to_bytes(),
            "pcrs": pcrs_json({Alg.SHA256: values}),
            "ak": pub,
        },
    )


def _bare_verify(item: EvidenceItem) -> Callable[[], None]:
    """The AK's bare signature verify over the same TPMS_ATTEST bytes."""
    ev = decode_tpm_item(item)
    attest, sig = ev.quotes[0]
    ak = load_ak(item.attachments.get("ak") or ev.ak_pub or b"", "AK")
    key = ak.key
    assert isinstance(key, rsa.RSAPublicKey)
    data, signature = attest.raw, sig.sig
    return lambda: key.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())


def run() -> list[Row]:
    rows: list[Row] = []
    trustee = VTPM / "swtpm_trustee" / "tpm_evidence.json"
    if trustee.is_file():
        (item,) = TPM.load(trustee.read_bytes()).items
        item = item.with_attachments({"ak": item.attachments["ak_pub"]})
        label = "sealroom TPM quote verify (swtpm vector, 24 PCRs, AK pinned)"
    else:
        item = _local_quote()
        label = "sealroom TPM quote verify (local quote; vectors absent)"
    ctx = VerifyContext(now=NOW)
    TPM.verify(item, ctx)  # must succeed before it is timed
    bare = _bare_verify(item)
    ours, peer = paired_rates(lambda: TPM.verify(item, ctx), bare)
    rows.append((label, ours, "bare RSA-2048 PKCS#1 v1.5 verify (cryptography)", peer))

    gce = VTPM / "gce_shielded_vm"
    if (gce / "attestation_nonce9009.pb").is_file():
        roots = (
            load_certificate((gce / "tpm_ek_root_1.cer").read_bytes()),
            load_certificate((gce / "tpm_ek_intermediate_2.crt").read_bytes()),
        )
        gctx = VerifyContext(now=NOW, extra_roots=roots)
        gitem = EvidenceItem("tpm", (gce / "attestation_nonce9009.pb").read_bytes())
        TPM.verify(gitem, gctx)
        ours_g, peer_g = paired_rates(lambda: TPM.verify(gitem, gctx), _bare_verify(gitem))
        rows.append(
            (
                "sealroom GCE attestation verify (3 quotes + AK chain + event log)",
                ours_g,
                "bare RSA-2048 PKCS#1 v1.5 verify (one signature)",
                peer_g,
            )
        )
    return rows


def main() -> int:
    print_rows(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())

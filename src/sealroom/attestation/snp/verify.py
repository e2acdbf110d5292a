"""Verify an SEV-SNP attestation report: signature, chain to AMD (or a chosen sim) root,
VCEK/VLEK extensions against the report, and revocation when a CRL is available.

Steps (AMD #56860 "Attestation", AMD #57230 "VCEK certificate"):
1. parse the report (abi.py) and collect certificates (attachments, cert table, collateral);
2. choose the product from the report's CPUID (v3+), the VEK's productName, or the
   caller's ``snp.product`` option, and refuse if they disagree;
3. VEK <- ASK/ASVK <- ARK, RSA-PSS SHA-384, each valid at ``now``; ARK must be an embedded
   AMD root or a root the caller added (then the claims say ``simulated``);
   every signature RSASSA-PSS with exactly SHA-384, MGF1-SHA-384, salt 48 (pinned, not
   taken from the certificate), and the ARK's self-signature verified;
4. a report with MASK_CHIP_KEY=1 cannot be VCEK-signed (the VCEK is then not used);
5. ECDSA P-384 SHA-384 signature over report bytes [0x0, 0x2A0) with the VEK;
6. VCEK hwID == CHIP_ID (Turin: 8-byte hwID) unless CHIP_ID is all zero (MASK_CHIP_ID
   hosts), VEK TCB SPLs == REPORTED_TCB and each <= CURRENT_TCB's;
7. CRL (signed by the ARK with the same PSS parameters, thisUpdate not after ``now``,
   nextUpdate not passed): the verifier's (``--collateral`` file or source) wins; one
   carried with the evidence is used only where the verifier has none and never when
   older than one the verifier has seen (ADR 0020).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding

from sealroom.attestation.collateral import (
    SeenMark,
    crl_series,
    refuse_rollback,
    require,
    seen_by_verifier,
)
from sealroom.attestation.kinds import VerifyContext
from sealroom.attestation.snp import kds
from sealroom.attestation.snp.abi import SIG_ALGO_ECDSA_P384_SHA384, Product, Report, SigningKey
from sealroom.attestation.snp.certs import (
    VekInfo,
    VekKind,
    amd_arks,
    amd_chains,
    check_amd_pss,
    is_self_signed,
    is_vek,
    parse_cert_table,
    vek_info,
)
from sealroom.attestation.snp.claims import SnpClaims, claims_from_report
from sealroom.attestation.snp.foreign import load_thim_json, looks_like_thim_json
from sealroom.attestation.x509util import (
    check_crl,
    check_validity,
    fingerprint,
    load_certificates,
    load_crl,
    public_key,
    subject_cn,
    verify_chain,
    verify_issued_by,
)
from sealroom.errors import AttestationError, InvalidInputError, UnavailableError


@dataclass(frozen=True, eq=False)
class SnpCerts:
    """Certificates that came with the evidence, sorted by role.

    Compared and hashed by identity: ``collect_certs`` returns the same object for the
    same attachment bytes, which is what the chain memo below keys on.
    """

    veks: tuple[x509.Certificate, ...] = ()
    intermediates: tuple[x509.Certificate, ...] = ()
    arks: tuple[x509.Certificate, ...] = ()
    crl: bytes | None = None
    vek_infos: tuple[VekInfo, ...] = ()  # parallel to ``veks``
    source: tuple[tuple[str, bytes], ...] = ()  # the attachments these came from


def collect_certs(attachments: Mapping[str, bytes]) -> SnpCerts:
    """Sort every certificate in the attachments by role (by content, not by name).

    Names accepted: vcek, vlek, ask, asvk, ark, cert*, cert_chain (PEM bundle), certtable
    (a GHCB certificate table, e.g. configfs-tsm auxblob), crl. A certificate attachment
    may also be Azure's THIM JSON (``{vcekCert, certificateChain, tcbm, cacheControl}``).
    """
    return _collect_certs(tuple(sorted(attachments.items())))


@lru_cache(maxsize=256)
def _collect_certs(attachments: tuple[tuple[str, bytes], ...]) -> SnpCerts:
    blobs: list[tuple[str, bytes]] = []
    crl = None
    for name, data in attachments:
        if name == "crl":
            crl = data
        elif name in ("certtable", "auxblob"):
            blobs.extend(parse_cert_table(data).items())
        elif name in ("vcek", "vlek", "ask", "asvk", "ark") or name.startswith("cert"):
            if looks_like_thim_json(data):  # Azure IMDS THIM answer: VCEK + chain
                pems = load_thim_json(data, f"attachment {name} (THIM JSON)")
                blobs.extend((f"{name}.thim.{n}", pem) for n, pem in enumerate(pems))
            else:
                blobs.append((name, data))
    veks, inters, arks = [], [], []
    for name, data in blobs:
        for cert in load_certificates(data, f"attachment {name}"):
            if is_vek(cert):
                veks.append(cert)
            elif is_self_signed(cert):
                arks.append(cert)
            else:
                inters.append(cert)
    return SnpCerts(
        tuple(veks), tuple(inters), tuple(arks), crl, tuple(vek_info(v) for v in veks), attachments
    )


def _choose_product(report: Report, info: VekInfo | None, forced: str | None) -> Product | None:
    cpu = report.cpuid_product
    cert = info.product if info else None
    want: Product | None = None
    if forced:
        try:
            want = Product(forced.capitalize())
        except ValueError as e:
            raise InvalidInputError(
                f"snp.product is {forced!r}, expected one of {', '.join(p.value for p in Product)}"
            ) from e
    if want and cpu and want is not cpu:
        raise AttestationError(
            f"report CPUID says {cpu.value} (family {report.cpuid_fam_id:#x} model "
            f"{report.cpuid_mod_id:#x}), but product {want.value} was requested",
            code="snp-product-mismatch",
        )
    product = want or cpu or cert
    if cert and product and cert is not product:
        raise AttestationError(
            f"{(info.kind.value if info else 'VEK').upper()} productName is "
            f"{info.product_name if info else None!r}, but the report is from {product.value}",
            code="snp-product-mismatch",
        )
    return product


def _pick_vek(report: Report, certs: SnpCerts, ctx: VerifyContext) -> tuple[SnpCerts, int]:
    """The certificate set holding the VEK the report names, and the VEK's index in it.

    A VCEK missing from the evidence is fetched through the collateral source and added
    to the set (memoised by bytes like any supplied certificate)."""
    if report.mask_chip_key and report.signing_key is SigningKey.VCEK:
        # MASK_CHIP_KEY=1: the firmware does not use the VCEK for this guest, so a report
        # claiming a VCEK signature is not one the AMD-SP produced.
        raise AttestationError(
            "report MASK_CHIP_KEY is 1 (the VCEK is not used) but SIGNING_KEY says VCEK: "
            "no genuine report is both",
            code="snp-mask-chip-key-vcek",
        )
    wanted = {SigningKey.VCEK: VekKind.VCEK, SigningKey.VLEK: VekKind.VLEK}.get(report.signing_key)
    if wanted is None:
        raise AttestationError(
            "report SIGNING_KEY is 7 (no key): the report is unsigned", code="snp-unsigned"
        )
    matching = [n for n, info in enumerate(certs.vek_infos) if info.kind is wanted]
    if len(matching) > 1:
        raise InvalidInputError(f"more than one {wanted.value.upper()} certificate was supplied")
    if matching:
        return certs, matching[0]
    others = [info.kind.value.upper() for info in certs.vek_infos]
    if wanted is VekKind.VLEK:
        raise UnavailableError(
            "report SIGNING_KEY is VLEK but no VLEK certificate was supplied"
            + (f" (got {', '.join(others)})" if others else "")
            + "; AMD KDS serves VLEKs only to cloud providers: pass it with --certs",
            code="snp-vlek-unavailable",
        )
    # VCEK: try the collateral source (an offline cache or an online KDS client).
    product = report.cpuid_product
    forced = ctx.options.get("snp.product")
    if forced:
        product = Product(forced.capitalize())
    if product is None or product is Product.SIMULATED:
        raise UnavailableError(
            "no VCEK certificate was supplied and the report (version "
            f"{report.version}) does not say its product, so the KDS URL cannot be built; "
            "pass the VCEK with --certs or the product with --option snp.product=Milan",
            code="snp-collateral-unavailable",
        )
    req = kds.vcek_request(product, report.chip_id, report.tcb("reported", product))
    fetched = require(ctx.collateral, req)
    augmented = _collect_certs(tuple(sorted((*certs.source, ("cert.collateral", fetched)))))
    if not any(i.kind is VekKind.VCEK for i in augmented.vek_infos):
        raise AttestationError(
            f"collateral for {req.describe()} is not a VCEK certificate", code="snp-vcek-invalid"
        )
    return augmented, next(n for n, i in enumerate(augmented.vek_infos) if i.kind is VekKind.VCEK)


def _check_vek_against_report(report: Report, info: VekInfo, product: Product | None) -> bool:
    """VEK extensions must describe this report. Returns whether CHIP_ID was checked."""
    tcb = report.tcb("reported", product)
    pairs = [
        ("blSPL", info.bl_spl, tcb.bootloader),
        ("teeSPL", info.tee_spl, tcb.tee),
        ("snpSPL", info.snp_spl, tcb.snp),
        ("ucodeSPL", info.ucode_spl, tcb.microcode),
    ]
    if tcb.fmc is not None:
        pairs.append(("fmcSPL", info.fmc_spl, tcb.fmc))
    for name, got, want in pairs:
        if got != want:
            raise AttestationError(
                f"{info.kind.value.upper()} {name} is {got}, REPORTED_TCB says {want} "
                f"(REPORTED_TCB {tcb}): the certificate is for another TCB",
                code="snp-vek-tcb-mismatch",
            )
    current = report.tcb("current", product)
    above = [
        (name, got, want)
        for name, got, want in (
            ("blSPL", info.bl_spl, current.bootloader),
            ("teeSPL", info.tee_spl, current.tee),
            ("snpSPL", info.snp_spl, current.snp),
            ("ucodeSPL", info.ucode_spl, current.microcode),
            ("fmcSPL", info.fmc_spl, current.fmc),
        )
        if got is not None and want is not None and got > want
    ]
    if above:
        name, got, want = above[0]
        raise AttestationError(
            f"{info.kind.value.upper()} {name} is {got}, above CURRENT_TCB's {want} "
            f"(CURRENT_TCB {current}): a certificate for firmware newer than the running one",
            code="snp-vek-tcb-above-current",
        )
    if info.kind is VekKind.VLEK:
        return False
    if not any(report.chip_id):
        # MASK_CHIP_ID=1 hosts report an all-zero CHIP_ID: nothing to compare (the claims
        # say chip_id_checked: false).
        return False
    if info.hwid is None:
        raise AttestationError("VCEK has no hwID extension", code="snp-vcek-hwid-missing")
    if product is Product.TURIN:
        ok = info.hwid == report.chip_id[:8] and not any(report.chip_id[8:])
    else:
        ok = info.hwid == report.chip_id
    if not ok:
        raise AttestationError(
            f"VCEK hwID is {info.hwid.hex()}, report CHIP_ID is {report.chip_id.hex()}: "
            "the VCEK belongs to another chip",
            code="snp-vcek-wrong-chip",
        )
    return True


@lru_cache(maxsize=512)
def _chain_for(
    vek: x509.Certificate,
    info: VekInfo,
    product: Product | None,
    intermediates: tuple[x509.Certificate, ...],
) -> tuple[tuple[str, x509.Certificate], ...]:
    """VEK and the intermediate that issued it (memoised: pure in its arguments)."""
    candidates = list(intermediates)
    for pc in amd_chains():
        if product in (None, pc.product) and pc.vek_kind is info.kind:
            candidates.append(pc.intermediate)
    for inter in candidates:
        if inter.subject == vek.issuer:
            label = "ASVK" if info.kind is VekKind.VLEK else "ASK"
            return ((info.kind.value.upper(), vek), (f"{label} {subject_cn(inter)!r}", inter))
    where = f"the {product.value} " if product else "any "
    raise AttestationError(
        f"{info.kind.value.upper()} is issued by {vek.issuer.rfc4514_string()!r}, which is not "
        f"{where}AMD {'ASVK' if info.kind is VekKind.VLEK else 'ASK'} (wrong product root?)",
        code="snp-wrong-product-root",
    )


def _verify_signature(report: Report, vek: x509.Certificate, key: object = None) -> None:
    if report.signature_algo != SIG_ALGO_ECDSA_P384_SHA384:
        raise AttestationError(
            f"SIGNATURE_ALGO is {report.signature_algo}, only 1 (ECDSA P-384 SHA-384) is defined",
            code="snp-signature-algorithm",
        )
    key = key or public_key(vek, "VEK")
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp384r1":
        raise AttestationError("VEK key is not ECDSA P-384", code="snp-signature-invalid")
    der = encode_dss_signature(report.signature_r, report.signature_s)
    try:
        key.verify(der, report.signed_bytes, ec.ECDSA(hashes.SHA384()))
    except InvalidSignature as e:
        raise AttestationError(
            "report signature over bytes [0x0, 0x2A0) does not verify with the "
            f"{report.signing_key.name} (fingerprint {fingerprint(vek)[:16]}…)",
            code="snp-signature-invalid",
        ) from e


@dataclass(frozen=True)
class _Anchor:
    """What a VEK and its chain resolve to; independent of the report and of time."""

    vek: x509.Certificate
    info: VekInfo
    product: Product | None
    chain: tuple[tuple[str, x509.Certificate], ...]
    root: x509.Certificate
    simulated: bool
    vek_fingerprint: str
    vek_key: object
    root_cn: str
    validity: tuple[tuple[str, x509.Certificate], ...]


@lru_cache(maxsize=256)
def _anchor(
    certs: SnpCerts,
    index: int,
    product: Product | None,
    extra_roots: tuple[x509.Certificate, ...],
) -> _Anchor:
    """Chain signatures and trust anchor for ``certs.veks[index]``: memoised, as none of
    it depends on the report or on time (validity is checked by the caller, every time)."""
    vek, info = certs.veks[index], certs.vek_infos[index]
    chain = _chain_for(vek, info, product, certs.intermediates)
    trusted = list(amd_arks()) + [r for r in extra_roots if is_self_signed(r)]
    # An ARK shipped with the evidence is only a hint: it must equal a trusted root.
    for ark in certs.arks:
        if ark not in trusted:
            raise AttestationError(
                f"evidence carries root {subject_cn(ark)!r}, which is not a trusted root",
                code="untrusted-root",
            )
    root = verify_chain(chain, trusted, None)
    root_name = f"ARK {subject_cn(root)!r}"
    for name, cert in (*chain, (root_name, root)):
        check_amd_pss(cert.public_bytes(Encoding.DER), name)
    # Trusted because named by the verifier; its self-signature must verify all the same
    # (the chain only proves the ARK's key signed the ASK).
    verify_issued_by(root, root, f"{root_name} (self-signed)")
    return _Anchor(
        vek=vek,
        info=info,
        product=product,
        chain=chain,
        root=root,
        simulated=root not in amd_arks(),
        vek_fingerprint=fingerprint(vek),
        vek_key=public_key(vek, info.kind.value.upper()),
        root_cn=subject_cn(root),
        validity=(*chain, (subject_cn(root), root)),
    )


def _choose_crl(
    presented: bytes | None,
    product: Product | None,
    info: VekInfo,
    anchor: _Anchor,
    ctx: VerifyContext,
) -> bytes | None:
    """The verifier's CRL (its file, then its source) wins; the presenter's is used only
    where the verifier has none and never when older than one it has seen (ADR 0020)."""
    mine = ctx.verifier_collateral.get("crl")
    if mine is None and product is not None and not anchor.simulated:
        mine = ctx.collateral.fetch(kds.crl_request(product, info.kind.value))
    if mine is not None or presented is None:
        return mine
    crl = load_crl(presented, "AMD CRL (carried with the evidence)")
    series = crl_series(crl.issuer.rfc4514_string())
    seen = seen_by_verifier(ctx.collateral, ctx.collateral_history, series)
    refuse_rollback("AMD CRL", series, SeenMark(None, crl.last_update_utc), seen)
    return presented


def verify_report(report: Report, certs: SnpCerts, ctx: VerifyContext) -> SnpClaims:
    certs, index = _pick_vek(report, certs, ctx)
    vek, info = certs.veks[index], certs.vek_infos[index]
    product = _choose_product(report, info, ctx.options.get("snp.product"))
    anchor = _anchor(certs, index, product, ctx.extra_roots)
    for name, cert in anchor.validity:
        check_validity(cert, ctx.now, name)
    _verify_signature(report, vek, anchor.vek_key)
    chip_checked = _check_vek_against_report(report, info, product)
    crl_checked = False
    crl_bytes = _choose_crl(certs.crl, product, info, anchor, ctx)
    if crl_bytes is not None:
        crl = load_crl(crl_bytes, "AMD CRL")
        check_amd_pss(crl.public_bytes(Encoding.DER), "AMD CRL")
        series = crl_series(crl.issuer.rfc4514_string())
        try:
            check_crl(crl, anchor.root, anchor.chain, ctx.now, "AMD CRL")
        except AttestationError as e:
            if e.code == "certificate-revoked" and ctx.collateral_history is not None:
                ctx.collateral_history.observe(series, SeenMark(None, crl.last_update_utc))
            raise
        if ctx.collateral_history is not None:
            ctx.collateral_history.observe(series, SeenMark(None, crl.last_update_utc))
        crl_checked = True
    return claims_from_report(
        report,
        product,
        verified=True,
        simulated=anchor.simulated,
        vek_fingerprint=anchor.vek_fingerprint,
        csp_id=info.csp_id,
        root=anchor.root_cn,
        chip_id_checked=chip_checked,
        crl_checked=crl_checked,
    )

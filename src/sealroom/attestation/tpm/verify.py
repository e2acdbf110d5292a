"""Verify TPM 2.0 quote evidence: AK signature, PCR digest, AK trust, event log replay.

For every quote (TPM 2.0 Part 3, TPM2_Quote; Part 1, 18.4 "Attestation"):

1. the TPMT_SIGNATURE verifies over the TPMS_ATTEST bytes as signed, with the AK and the
   hash the signature names (RSASSA-PKCS1-v1_5, RSASSA-PSS with any salt length, ECDSA);
2. ``pcrDigest`` == H_sig(concatenation of the selected PCR values, selections in order,
   indices ascending) over the PCR values supplied with the evidence;
3. all quotes of one piece of evidence agree on extraData, firmware version and signer.

The AK is decided once, and only the verifier vouches for it: an AK that comes with the
evidence (``ak_pub``, or an envelope's ``ak`` attachment) is the presenter's claim and must
be one of the verifier's pins (``ctx.ak_pins``, ``--ak``) when any are given; an AK
certificate must certify that same key and chain to a root in ``ctx.extra_roots`` (a root
named SIMULATED makes the claims ``simulated``). ``ak_trust`` records what vouches for the
AK ("pinned", "certified", "none") and the policy decides; an unpinned, uncertified AK is
never an error here (the signature is still checked) but the default policy rejects it.
A TCG event log, where present, must replay to the quoted value of every quoted PCR it has
events for.
"""

from __future__ import annotations

import hmac
import warnings
from collections.abc import Mapping

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from sealroom.attestation.kinds import VerifyContext
from sealroom.attestation.tpm import eventlog
from sealroom.attestation.tpm.abi import (
    OBJ_FIXED_TPM,
    OBJ_RESTRICTED,
    OBJ_SIGN,
    Alg,
    Attest,
    Signature,
    alg_name,
    crypto_hash,
    digest,
    hash_name,
)
from sealroom.attestation.tpm.claims import (
    AkTrust,
    EventClaims,
    EventLogClaims,
    GceInstanceClaims,
    QuoteClaims,
    TpmClaims,
)
from sealroom.attestation.tpm.formats import AkKey, PcrBanks, TpmEvidence, load_ak
from sealroom.attestation.x509util import (
    is_simulated_root,
    load_certificate,
    load_certificates,
    public_key,
    subject_cn,
    verify_chain,
)
from sealroom.errors import AttestationError, MalformedEvidenceError, UnavailableError


def verify_quote_signature(attest: Attest, sig: Signature, ak: AkKey, what: str) -> None:
    """The quote's TPMT_SIGNATURE over ``attest.raw`` with ``ak`` (AttestationError if not)."""
    try:
        h = crypto_hash(sig.hash_alg)
    except ValueError as e:
        raise AttestationError(f"{what}: {e}", code="tpm-signature-unsupported") from e
    key = ak.key
    try:
        if isinstance(key, rsa.RSAPublicKey):
            if sig.sig_alg == Alg.RSASSA:
                key.verify(sig.sig, attest.raw, padding.PKCS1v15(), h)
            elif sig.sig_alg == Alg.RSAPSS:
                pss = padding.PSS(mgf=padding.MGF1(h), salt_length=padding.PSS.AUTO)
                key.verify(sig.sig, attest.raw, pss, h)
            else:
                raise AttestationError(
                    f"{what}: signature scheme is {alg_name(sig.sig_alg)}, the AK is an RSA key",
                    code="tpm-signature-scheme-mismatch",
                )
        else:
            if sig.sig_alg != Alg.ECDSA:
                raise AttestationError(
                    f"{what}: signature scheme is {alg_name(sig.sig_alg)}, sealroom verifies "
                    "ECDSA for ECC AKs",
                    code="tpm-signature-scheme-mismatch",
                )
            der = encode_dss_signature(int.from_bytes(sig.r, "big"), int.from_bytes(sig.s, "big"))
            key.verify(der, attest.raw, ec.ECDSA(h))
    except InvalidSignature as e:
        raise AttestationError(
            f"{what}: {alg_name(sig.sig_alg)}/{hash_name(sig.hash_alg)} signature does not "
            f"verify with AK {ak.algorithm} {fingerprint_of(ak)[:16]}…",
            code="tpm-quote-signature-invalid",
        ) from e
    except UnsupportedAlgorithm as e:
        raise AttestationError(f"{what}: {e}", code="tpm-signature-unsupported") from e


def fingerprint_of(ak: AkKey) -> str:
    return ak.fingerprint


def check_pcr_digest(
    attest: Attest, sig: Signature, supplied: PcrBanks, what: str
) -> dict[int, dict[int, bytes]]:
    """pcrDigest against the supplied values; returns the quoted values {alg: {idx: v}}."""
    quoted: dict[int, dict[int, bytes]] = {}
    parts: list[bytes] = []
    for sel in attest.pcr_select:
        bank = supplied.get(sel.hash_alg, {})
        missing = [i for i in sel.indices if i not in bank]
        if missing:
            raise UnavailableError(
                f"{what}: PCR values for {sel.bank} PCR {', '.join(map(str, missing))} were not "
                'supplied; pass them with --pcrs ({"' + sel.bank + '": {"0": "<hex>", ...}})',
                code="tpm-pcrs-missing",
            )
        for i in sel.indices:
            parts.append(bank[i])
            quoted.setdefault(sel.hash_alg, {})[i] = bank[i]
    try:
        got = digest(sig.hash_alg, b"".join(parts))
    except ValueError as e:
        raise AttestationError(f"{what}: {e}", code="tpm-signature-unsupported") from e
    if not hmac.compare_digest(got, attest.pcr_digest):
        sel_desc = "; ".join(f"{s.bank} {list(s.indices)}" for s in attest.pcr_select)
        raise AttestationError(
            f"{what}: pcrDigest is {attest.pcr_digest.hex()}, but {hash_name(sig.hash_alg)} over "
            f"the supplied PCR values ({sel_desc}) is {got.hex()}: the PCR values are not the "
            "ones quoted",
            code="tpm-pcr-digest-mismatch",
        )
    return quoted


def _ak_from_cert(cert: x509.Certificate) -> AkKey:
    key = public_key(cert, "AK certificate")
    if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        raise AttestationError(
            f"AK certificate holds a {type(key).__name__}, an AK is RSA or ECC",
            code="tpm-ak-cert-invalid",
        )
    return AkKey(key)


def _certify(
    cert_der: bytes, intermediates: tuple[bytes, ...], ak: AkKey, ctx: VerifyContext
) -> tuple[bool, str, bool]:
    """(certified, description, simulated root). Raises for a broken chain; an unknown root
    is not an error (the AK is then not certified)."""
    cert = load_certificate(cert_der, "AK certificate")
    if _ak_from_cert(cert).spki != ak.spki:
        raise AttestationError(
            "AK certificate certifies another key than the AK that signed the quote "
            f"(certificate key {fingerprint_of(_ak_from_cert(cert))[:16]}…, "
            f"AK {fingerprint_of(ak)[:16]}…)",
            code="tpm-ak-cert-mismatch",
        )
    chain: list[tuple[str, x509.Certificate]] = [("AK certificate", cert)]
    for n, blob in enumerate(intermediates):
        for m, c in enumerate(load_certificates(blob, f"AK intermediate {n}")):
            chain.append((f"AK intermediate {n}.{m}" if m else f"AK intermediate {n}", c))
    if not ctx.extra_roots:
        return (
            False,
            "AK certificate present, but no root was given (--root) to check it against",
            False,
        )
    try:
        with warnings.catch_warnings():
            # Google's EK/AK CA names carry CNs longer than X.520's 64 characters; cryptography
            # warns on comparing them. The names are Google's; the signatures decide.
            warnings.filterwarnings("ignore", message="Attribute's length", category=UserWarning)
            root = verify_chain(chain, ctx.extra_roots, ctx.now)
            root_name = subject_cn(root)
    except AttestationError as e:
        if e.code == "untrusted-root":
            return False, f"AK certificate does not chain to a given root: {e.message}", False
        raise
    return True, f"x509:{root_name}", is_simulated_root(root)


def _quote_claims(attest: Attest, sig: Signature) -> QuoteClaims:
    c = attest.clock_info
    return QuoteClaims(
        pcr_select={s.bank: s.indices for s in attest.pcr_select},
        pcr_digest=attest.pcr_digest,
        signature_alg=alg_name(sig.sig_alg),
        hash_alg=hash_name(sig.hash_alg),
        qualified_signer=attest.qualified_signer,
        clock=c.clock,
        reset_count=c.reset_count,
        restart_count=c.restart_count,
        safe=c.safe,
    )


def _agree(ev: TpmEvidence) -> None:
    first = ev.quotes[0][0]
    for n, (a, _) in enumerate(ev.quotes[1:], start=1):
        for name, got, want in (
            ("extraData", a.extra_data, first.extra_data),
            ("firmwareVersion", a.firmware_version, first.firmware_version),
            ("qualifiedSigner", a.qualified_signer, first.qualified_signer),
        ):
            if got != want:
                raise AttestationError(
                    f"quote {n}: {name} differs from quote 0 ({got!r} vs {want!r}); quotes of "
                    "one piece of evidence come from one TPM and one challenge",
                    code="tpm-quotes-disagree",
                )


def _merge_quoted(all_quoted: list[dict[int, dict[int, bytes]]]) -> dict[int, dict[int, bytes]]:
    merged: dict[int, dict[int, bytes]] = {}
    for quoted in all_quoted:
        for alg, values in quoted.items():
            bank = merged.setdefault(alg, {})
            for i, v in values.items():
                if bank.get(i, v) != v:
                    raise AttestationError(
                        f"two quotes disagree about {hash_name(alg)} PCR {i}",
                        code="tpm-quotes-disagree",
                    )
                bank[i] = v
    return merged


def _event_claims(log: eventlog.EventLog) -> tuple[EventClaims, ...]:
    return tuple(
        EventClaims(
            seq=e.seq,
            pcr=e.pcr,
            type=e.type_name,
            digests={hash_name(a): d for a, d in e.digests.items()},
            data=e.data,
        )
        for e in log.events
    )


def parse_log_claims(raw: bytes) -> EventLogClaims:
    log = eventlog.parse_event_log(raw)
    return EventLogClaims(
        format="crypto-agile" if log.crypto_agile else "sha1",
        banks=tuple(log.banks()),
        replayed={},
        unquoted_pcrs=(),
        events=_event_claims(log),
    )


def replay_log(raw: bytes, quoted: Mapping[int, Mapping[int, bytes]]) -> EventLogClaims:
    """Replay every bank both the log and the quotes have; mismatch -> AttestationError."""
    log = eventlog.parse_event_log(raw)
    replayed: dict[str, tuple[int, ...]] = {}
    logged = sorted({e.pcr for e in log.events if e.event_type != eventlog.EV_NO_ACTION})
    covered: set[int] = set()
    for alg, values in quoted.items():
        if alg not in log.algorithms:
            continue
        pcrs = eventlog.replay(log, alg)
        ok: list[int] = []
        for idx in sorted(pcrs):
            if idx not in values:
                continue
            if not hmac.compare_digest(pcrs[idx], values[idx]):
                raise AttestationError(
                    f"event log replay: {hash_name(alg)} PCR {idx} replays to {pcrs[idx].hex()}, "
                    f"the quote has {values[idx].hex()}: the event log is not the one measured",
                    code="tpm-eventlog-replay-mismatch",
                )
            ok.append(idx)
            covered.add(idx)
        replayed[hash_name(alg)] = tuple(ok)
    return EventLogClaims(
        format="crypto-agile" if log.crypto_agile else "sha1",
        banks=tuple(log.banks()),
        replayed=replayed,
        unquoted_pcrs=tuple(i for i in logged if i not in covered),
        events=_event_claims(log),
    )


def _gce_claims(ev: TpmEvidence) -> GceInstanceClaims | None:
    g = ev.gce_instance
    if g is None:
        return None
    return GceInstanceClaims(g.zone, g.project_id, g.project_number, g.instance_name, g.instance_id)


def _claims(
    ev: TpmEvidence,
    *,
    verified: bool,
    pcrs: Mapping[int, Mapping[int, bytes]],
    ak: AkKey | None,
    trust: AkTrust,
    certification: str | None,
    log: EventLogClaims | None,
    notes: tuple[str, ...] = (),
    format: str | None = None,
    simulated: bool = False,
) -> TpmClaims:
    first = ev.quotes[0][0]
    c = first.clock_info
    pub = ak.public if ak else None
    return TpmClaims(
        kind="tpm",
        simulated=simulated,
        verified=verified,
        format=format or ev.format,
        extra_data=first.extra_data,
        firmware_version=first.firmware_version,
        clock=c.clock,
        reset_count=c.reset_count,
        restart_count=c.restart_count,
        safe=c.safe,
        pcrs={hash_name(a): dict(sorted(v.items())) for a, v in pcrs.items()},
        quotes=tuple(_quote_claims(a, s) for a, s in ev.quotes),
        ak_fingerprint=fingerprint_of(ak) if ak else "",
        ak_algorithm=ak.algorithm if ak else "",
        ak_trust=trust,
        ak_certification=certification,
        ak_restricted=pub.has(OBJ_RESTRICTED) if pub else None,
        ak_fixed_tpm=pub.has(OBJ_FIXED_TPM) if pub else None,
        event_log=log,
        gce_instance=_gce_claims(ev),
        notes=notes,
    )


def inspect_tpm_evidence(ev: TpmEvidence) -> TpmClaims:
    """Parse-only claims: supplied PCR values inside the selections, nothing checked."""
    pcrs: dict[int, dict[int, bytes]] = {}
    for (attest, _), supplied in zip(ev.quotes, ev.pcrs, strict=True):
        for sel in attest.pcr_select:
            bank = supplied.get(sel.hash_alg, {})
            for i in sel.indices:
                if i in bank:
                    pcrs.setdefault(sel.hash_alg, {})[i] = bank[i]
    ak = None
    if ev.ak_pub:
        try:
            ak = load_ak(ev.ak_pub, "AK")
        except MalformedEvidenceError:
            ak = None
    log = parse_log_claims(ev.event_log) if ev.event_log else None
    return _claims(ev, verified=False, pcrs=pcrs, ak=ak, trust="none", certification=None, log=log)


def _pins(ctx: VerifyContext) -> tuple[AkKey, ...]:
    return tuple(load_ak(p, f"pinned AK {n} (--ak)") for n, p in enumerate(ctx.ak_pins))


def _pinned_signer(ev: TpmEvidence, pins: tuple[AkKey, ...]) -> AkKey | None:
    """The pinned AK whose signature verifies the first quote (evidence carrying no AK)."""
    attest, sig = ev.quotes[0]
    for pin in pins:
        try:
            verify_quote_signature(attest, sig, pin, "quote")
        except AttestationError:
            continue
        return pin
    return None


def verify_tpm_evidence(
    ev: TpmEvidence,
    ctx: VerifyContext,
    *,
    presented_ak: bytes | None = None,
    bound_ak: tuple[AkKey, str] | None = None,
    format: str | None = None,
) -> TpmClaims:
    """Check every quote and decide AK trust.

    Only the verifier pins: ``ctx.ak_pins`` (``--ak``). An AK that arrives with the
    evidence (``ak_pub``, a GCE ``ak_pub``, or an envelope's ``ak`` attachment passed here
    as ``presented_ak``) is a claim: it is checked against the signature and against any
    other AK, and vouched for only by a pin, a certificate chain to a root in
    ``ctx.extra_roots``, or ``bound_ak``: an AK certified by other verified evidence (Azure:
    the HCL runtime data bound into a hardware report) with a description ("certified").
    """
    pins = _pins(ctx)
    claimed = load_ak(presented_ak, "AK presented with the evidence") if presented_ak else None
    carried = load_ak(ev.ak_pub, "AK carried by the evidence") if ev.ak_pub else None
    cert = load_certificate(ev.ak_cert, "AK certificate") if ev.ak_cert else None

    ak: AkKey | None = None
    for candidate in (bound_ak[0] if bound_ak else None, carried, claimed):
        if candidate is None:
            continue
        if ak is None:
            ak = candidate
        elif candidate.spki != ak.spki:
            raise AttestationError(
                f"the AKs disagree: {candidate.algorithm} {fingerprint_of(candidate)[:16]}… vs "
                f"{ak.algorithm} {fingerprint_of(ak)[:16]}… (every AK that comes with the "
                "evidence must be the same key)",
                code="tpm-ak-mismatch",
            )
        elif ak.public is None and candidate.public is not None:
            ak = candidate
    if ak is None and cert is not None:
        ak = _ak_from_cert(cert)
    pinned = False
    if ak is None and pins:
        ak = _pinned_signer(ev, pins)
        if ak is None:
            raise AttestationError(
                f"the quote signature verifies with none of the {len(pins)} pinned AK(s) (--ak)",
                code="tpm-ak-mismatch",
            )
        pinned = True
    elif ak is not None and pins:
        match = next((p for p in pins if p.spki == ak.spki), None)
        if match is None:
            raise AttestationError(
                f"the evidence's AK {ak.algorithm} {fingerprint_of(ak)[:16]}… is not a pinned "
                f"AK (--ak: {', '.join(fingerprint_of(p)[:16] + '…' for p in pins)})",
                code="tpm-ak-mismatch",
            )
        pinned = True
        if ak.public is None and match.public is not None:
            ak = match
    if ak is None:
        raise UnavailableError(
            "no attestation key: the evidence carries none; pin one with --ak FILE "
            "(PEM/DER public key, TPMT_PUBLIC or TPM2B_PUBLIC)",
            code="tpm-ak-missing",
        )
    if ak.public is not None and not ak.public.has(OBJ_SIGN):
        raise AttestationError(
            "the AK's TPMT_PUBLIC lacks the sign attribute: it cannot have signed a quote",
            code="tpm-ak-invalid",
        )

    _agree(ev)
    quoted_all = []
    for n, ((attest, sig), supplied) in enumerate(zip(ev.quotes, ev.pcrs, strict=True)):
        what = f"quote {n}" if len(ev.quotes) > 1 else "quote"
        verify_quote_signature(attest, sig, ak, what)
        quoted_all.append(check_pcr_digest(attest, sig, supplied, what))
    quoted = _merge_quoted(quoted_all)

    certified, certification, sim_root = False, None, False
    if bound_ak is not None:
        certified, certification = True, bound_ak[1]
    elif cert is not None:
        certified, certification, sim_root = _certify(ev.ak_cert or b"", ev.intermediates, ak, ctx)
    trust: AkTrust = "pinned" if pinned else ("certified" if certified else "none")

    log = replay_log(ev.event_log, quoted) if ev.event_log else None
    return _claims(
        ev,
        verified=True,
        pcrs=quoted,
        ak=ak,
        trust=trust,
        certification=certification,
        log=log,
        format=format,
        simulated=sim_root,
    )

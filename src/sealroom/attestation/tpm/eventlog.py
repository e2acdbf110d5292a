"""TCG PC Client event log: parse (crypto-agile and SHA-1 formats) and replay into PCRs.

Layout per the TCG PC Client Platform Firmware Profile, section 10: the first event is a
``TCG_PCClientPCREvent`` (SHA-1 form). In a crypto-agile log its data is the
``TCG_EfiSpecIDEvent`` ("Spec ID Event03") listing the digest algorithms and sizes; every
later event is a ``TCG_PCR_EVENT2`` carrying one digest per listed algorithm. A log
without that header is the older SHA-1-only format. Integers are little-endian (unlike TPM
structures). Parsing is strict (sizes, algorithm sets, duplicates); all-zero bytes after
the last event are accepted as the padding firmware logs carry.

Replay extends each event's digest into its PCR: ``PCR = H(PCR || digest)``, starting from
zeros, except PCR 0 whose start value carries the locality of a ``StartupLocality``
EV_NO_ACTION event. EV_NO_ACTION events are never extended. The digests are what the TPM
extended; whether an event's data hashes to its digest is type-specific and not checked.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from sealroom.attestation.tpm.abi import HASH_SIZES, Alg, Reader, alg_name, digest, hash_name
from sealroom.errors import MalformedEvidenceError

EV_NO_ACTION = 0x3
SPEC_ID_EVENT03 = b"Spec ID Event03\x00"
STARTUP_LOCALITY = b"StartupLocality\x00"
MAX_PCR_INDEX = 31
MAX_EVENT_DATA = 1 << 24  # 16 MiB: far beyond any real event, bounds hostile sizes

EVENT_TYPES: dict[int, str] = {
    0x0: "EV_PREBOOT_CERT",
    0x1: "EV_POST_CODE",
    0x2: "EV_UNUSED",
    0x3: "EV_NO_ACTION",
    0x4: "EV_SEPARATOR",
    0x5: "EV_ACTION",
    0x6: "EV_EVENT_TAG",
    0x7: "EV_S_CRTM_CONTENTS",
    0x8: "EV_S_CRTM_VERSION",
    0x9: "EV_CPU_MICROCODE",
    0xA: "EV_PLATFORM_CONFIG_FLAGS",
    0xB: "EV_TABLE_OF_DEVICES",
    0xC: "EV_COMPACT_HASH",
    0xD: "EV_IPL",
    0xE: "EV_IPL_PARTITION_DATA",
    0xF: "EV_NONHOST_CODE",
    0x10: "EV_NONHOST_CONFIG",
    0x11: "EV_NONHOST_INFO",
    0x12: "EV_OMIT_BOOT_DEVICE_EVENTS",
    0x80000001: "EV_EFI_VARIABLE_DRIVER_CONFIG",
    0x80000002: "EV_EFI_VARIABLE_BOOT",
    0x80000003: "EV_EFI_BOOT_SERVICES_APPLICATION",
    0x80000004: "EV_EFI_BOOT_SERVICES_DRIVER",
    0x80000005: "EV_EFI_RUNTIME_SERVICES_DRIVER",
    0x80000006: "EV_EFI_GPT_EVENT",
    0x80000007: "EV_EFI_ACTION",
    0x80000008: "EV_EFI_PLATFORM_FIRMWARE_BLOB",
    0x80000009: "EV_EFI_HANDOFF_TABLES",
    0x8000000A: "EV_EFI_PLATFORM_FIRMWARE_BLOB2",
    0x8000000B: "EV_EFI_HANDOFF_TABLES2",
    0x8000000C: "EV_EFI_VARIABLE_BOOT2",
    0x80000010: "EV_EFI_HCRTM_EVENT",
    0x800000E0: "EV_EFI_VARIABLE_AUTHORITY",
    0x800000E1: "EV_EFI_SPDM_FIRMWARE_BLOB",
    0x800000E2: "EV_EFI_SPDM_FIRMWARE_CONFIG",
}


def event_type_name(t: int) -> str:
    return EVENT_TYPES.get(t, f"EV_{t:#010x}")


@dataclass(frozen=True)
class Event:
    seq: int
    pcr: int
    event_type: int
    digests: Mapping[int, bytes]  # hash alg -> digest
    data: bytes

    @property
    def type_name(self) -> str:
        return event_type_name(self.event_type)


@dataclass(frozen=True)
class EventLog:
    crypto_agile: bool
    algorithms: Mapping[int, int]  # hash alg -> digest size, in header order
    events: tuple[Event, ...]  # every event after the header (EV_NO_ACTION included)
    startup_locality: int | None
    raw: bytes = b""

    def banks(self) -> list[str]:
        return [hash_name(a) for a in self.algorithms]


def _LE(data: bytes) -> Reader:
    return Reader(data, "event log", little=True, code="tpm-eventlog-truncated")


def _bad(msg: str) -> MalformedEvidenceError:
    return MalformedEvidenceError(f"event log: {msg}", code="tpm-eventlog-invalid")


def _pcr(r: Reader, where: str) -> int:
    pcr = r.u32(f"{where}.pcrIndex")
    if pcr > MAX_PCR_INDEX:
        raise _bad(f"{where}.pcrIndex is {pcr}, at most {MAX_PCR_INDEX} allowed")
    return pcr


def _data(r: Reader, where: str) -> bytes:
    size = r.u32(f"{where}.eventSize")
    if size > MAX_EVENT_DATA:
        raise _bad(f"{where}.eventSize is {size}, at most {MAX_EVENT_DATA} allowed")
    return r.take(size, f"{where}.event")


def _spec_id(data: bytes) -> dict[int, int]:
    r = _LE(data)
    r.take(16, "SpecID.signature")
    r.u32("SpecID.platformClass")
    r.take(4, "SpecID.version")  # minor, major, errata, uintnSize
    n = r.u32("SpecID.numberOfAlgorithms")
    if n == 0 or n > 16:
        raise _bad(f"SpecID.numberOfAlgorithms is {n}, expected 1..16")
    algs: dict[int, int] = {}
    for i in range(n):
        alg = r.u16(f"SpecID.digestSizes[{i}].algorithmId")
        size = r.u16(f"SpecID.digestSizes[{i}].digestSize")
        if alg in algs:
            raise _bad(f"SpecID lists {alg_name(alg)} twice")
        if HASH_SIZES.get(alg) != size:
            raise _bad(
                f"SpecID.digestSizes[{i}] is {alg_name(alg)} with {size} bytes, "
                f"expected {HASH_SIZES.get(alg, 'a known hash')}"
            )
        algs[alg] = size
    vendor = r.u8("SpecID.vendorInfoSize")
    r.take(vendor, "SpecID.vendorInfo")
    if r.pos != len(data):
        raise _bad(f"SpecID event has {len(data) - r.pos} trailing bytes")
    return algs


def parse_event_log(data: bytes) -> EventLog:
    r = _LE(bytes(data))
    # First event: always the SHA-1 TCG_PCClientPCREvent form.
    pcr = _pcr(r, "event[0]")
    etype = r.u32("event[0].eventType")
    d0 = r.take(20, "event[0].digest")
    data0 = _data(r, "event[0]")
    events: list[Event] = []
    locality: int | None = None
    if etype == EV_NO_ACTION and data0.startswith(SPEC_ID_EVENT03):
        if pcr != 0 or any(d0):
            raise _bad("the Spec ID event must be in PCR 0 with a zero digest")
        algs = _spec_id(data0)
        seq = 1
        while r.pos < len(r.data) and not r.at_padding():
            where = f"event[{seq}]"
            pcr = _pcr(r, where)
            etype = r.u32(f"{where}.eventType")
            count = r.u32(f"{where}.digests.count")
            if count != len(algs):
                raise _bad(f"{where} carries {count} digests, the SpecID header lists {len(algs)}")
            digests: dict[int, bytes] = {}
            for i in range(count):
                alg = r.u16(f"{where}.digests[{i}].hashAlg")
                if alg not in algs:
                    raise _bad(f"{where}.digests[{i}] is {alg_name(alg)}, not in the SpecID header")
                if alg in digests:
                    raise _bad(f"{where} carries two {alg_name(alg)} digests")
                digests[alg] = r.take(algs[alg], f"{where}.digests[{i}].digest")
            ev_data = _data(r, where)
            if etype == EV_NO_ACTION and pcr == 0 and ev_data.startswith(STARTUP_LOCALITY):
                if len(ev_data) != len(STARTUP_LOCALITY) + 1:
                    raise _bad(f"{where}: StartupLocality event must carry exactly one byte")
                if locality is not None:
                    raise _bad(f"{where}: a second StartupLocality event")
                locality = ev_data[-1]
            events.append(Event(seq, pcr, etype, MappingProxyType(digests), ev_data))
            seq += 1
        return EventLog(True, MappingProxyType(algs), tuple(events), locality, bytes(data))
    # SHA-1 log: every event, the first included, is a TCG_PCClientPCREvent.
    events.append(Event(0, pcr, etype, MappingProxyType({Alg.SHA1: d0}), data0))
    seq = 1
    while r.pos < len(r.data) and not r.at_padding():
        where = f"event[{seq}]"
        pcr = _pcr(r, where)
        etype = r.u32(f"{where}.eventType")
        d = r.take(20, f"{where}.digest")
        events.append(Event(seq, pcr, etype, MappingProxyType({Alg.SHA1: d}), _data(r, where)))
        seq += 1
    return EventLog(False, MappingProxyType({Alg.SHA1: 20}), tuple(events), None, bytes(data))


def replay(log: EventLog, hash_alg: int) -> dict[int, bytes]:
    """PCR index -> value after extending every event of that PCR (only PCRs with events).

    MalformedEvidenceError if the log carries no digests for ``hash_alg``.
    """
    size = log.algorithms.get(hash_alg)
    if size is None:
        raise MalformedEvidenceError(
            f"event log has no {hash_name(hash_alg)} digests (it has {', '.join(log.banks())})",
            code="tpm-eventlog-bank-missing",
        )
    pcrs: dict[int, bytes] = {}
    for ev in log.events:
        if ev.event_type == EV_NO_ACTION:
            continue
        old = pcrs.get(ev.pcr)
        if old is None:
            old = bytes(size)
            if ev.pcr == 0 and log.startup_locality is not None:
                old = bytes(size - 1) + bytes([log.startup_locality])
        try:
            pcrs[ev.pcr] = digest(hash_alg, old + ev.digests[hash_alg])
        except ValueError as e:
            raise MalformedEvidenceError(
                f"event log: cannot replay: {e}", code="tpm-eventlog-bank-missing"
            ) from e
    return pcrs

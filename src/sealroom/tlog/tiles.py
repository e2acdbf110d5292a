"""C2SP tlog-tiles (c2sp.org/tlog-tiles): tile paths, tile contents and entry bundles.

A tile at level L, index N holds, for i in 0..255, MTH(D[(N*256+i) * 256**L : (N*256+i+1) *
256**L]), i.e. the hash of the perfect subtree at Merkle level 8*L, index N*256+i ("Merkle
Tree"). Full tiles are 256 hashes; the rightmost tile at a level for tree size s is partial,
``floor(s / 256**L) mod 256`` hashes wide, path suffix ``.p/<W>`` ("Partial Tiles"). Index
N is written as zero-padded 3-digit path elements, all but the last prefixed with ``x``.
Entry bundles are big-endian uint16 length-prefixed entries ("Log entries").
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from sealroom.errors import InvalidInputError
from sealroom.tlog.merkle import HashSource

TILE_HEIGHT = 8
TILE_WIDTH = 1 << TILE_HEIGHT  # 256
MAX_ENTRY = 0xFFFF  # uint16 length prefix


def encode_index(n: int) -> str:
    """1234067 -> ``x001/x234/067``."""
    if n < 0:
        raise ValueError(f"tile index {n}")
    groups = []
    while True:
        groups.append(n % 1000)
        n //= 1000
        if n == 0:
            break
    groups.reverse()
    return "/".join([f"x{g:03d}" for g in groups[:-1]] + [f"{groups[-1]:03d}"])


@dataclass(frozen=True)
class TileRef:
    level: int  # -1 for an entry bundle
    index: int
    width: int  # 256 for a full tile

    def path(self) -> str:
        lvl = "entries" if self.level < 0 else str(self.level)
        suffix = "" if self.width == TILE_WIDTH else f".p/{self.width}"
        return f"tile/{lvl}/{encode_index(self.index)}{suffix}"


_PATH = re.compile(
    r"tile/(entries|0|[1-9][0-9]?)/((?:x[0-9]{3}/)*)([0-9]{3})(?:\.p/([1-9][0-9]{0,2}))?"
)


def parse_path(path: str) -> TileRef:
    """Parse ``tile/<L>/<N>[.p/<W>]`` or ``tile/entries/<N>[.p/<W>]`` strictly (no leading
    zeroes in L or W, W in 1..255, L in 0..63)."""
    m = _PATH.fullmatch(path)
    if m is None:
        raise InvalidInputError(f"not a tile path: {path[:120]!r}", code="tlog-tile-path")
    lvl_s, xs, last, w_s = m.groups()
    level = -1 if lvl_s == "entries" else int(lvl_s)
    if level > 63:
        raise InvalidInputError(f"tile level {level} is above 63", code="tlog-tile-path")
    groups = [int(g[1:]) for g in xs.split("/") if g] + [int(last)]
    if len(groups) > 1 and groups[0] == 0:
        raise InvalidInputError(
            f"tile index in {path[:120]!r} is not minimal", code="tlog-tile-path"
        )
    index = 0
    for g in groups:
        index = index * 1000 + g
    width = int(w_s) if w_s else TILE_WIDTH
    if width > TILE_WIDTH - 1 and w_s:
        raise InvalidInputError(f"partial tile width {width} is not 1..255", code="tlog-tile-path")
    return TileRef(level, index, width)


def exists(ref: TileRef, size: int) -> bool:
    """Whether the tree of ``size`` entries has this tile (full, or this exact partial width)."""
    span = TILE_WIDTH ** (ref.level + 1) if ref.level >= 0 else TILE_WIDTH
    unit = span // TILE_WIDTH
    full = size // span
    if ref.width == TILE_WIDTH:
        return ref.index < full
    return ref.index == full and (size // unit) % TILE_WIDTH == ref.width


def servable(ref: TileRef, size: int) -> bool:
    """Whether a log of ``size`` entries holds every hash of this tile. Beyond the tiles
    that represent the current tree (``exists``), that includes the narrower partial tiles
    of earlier sizes: a client that verified an older checkpoint fetches those ("Logs MUST
    serve partial tiles corresponding to tree sizes for which a checkpoint was produced")."""
    unit: int = TILE_WIDTH ** max(ref.level, 0)
    return (ref.index * TILE_WIDTH + ref.width) * unit <= size


def tile_hashes(src: HashSource, ref: TileRef) -> bytes:
    """The concatenated hashes of a (checked-to-exist) Merkle tile."""
    level = TILE_HEIGHT * ref.level
    first = ref.index * TILE_WIDTH
    return b"".join(src.perfect(level, first + i) for i in range(ref.width))


def entry_bundle(entries: Sequence[bytes]) -> bytes:
    out = bytearray()
    for e in entries:
        if len(e) > MAX_ENTRY:
            raise InvalidInputError(f"log entry is {len(e)} bytes, at most {MAX_ENTRY}")
        out += len(e).to_bytes(2, "big") + e
    return bytes(out)


def parse_bundle(data: bytes) -> list[bytes]:
    out, i = [], 0
    while i < len(data):
        if i + 2 > len(data):
            raise InvalidInputError("entry bundle ends inside a length prefix", code="tlog-bundle")
        n = int.from_bytes(data[i : i + 2], "big")
        if i + 2 + n > len(data):
            raise InvalidInputError("entry bundle ends inside an entry", code="tlog-bundle")
        out.append(data[i + 2 : i + 2 + n])
        i += 2 + n
    return out

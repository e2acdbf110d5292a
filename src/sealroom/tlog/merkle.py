"""RFC 9162 Merkle tree hashing, inclusion and consistency proofs (section 2.1).

Hashing (2.1.1): the hash of a leaf is ``SHA-256(0x00 || entry)``, of an interior node
``SHA-256(0x01 || left || right)``; the tree of n > 1 leaves splits at k, the largest
power of two smaller than n (no duplication of odd nodes); the empty tree hashes to
``SHA-256()``.

Proof *generation* reads hashes through a :class:`HashSource` that answers only for
*perfect* subtrees (2**level leaves starting at a multiple of 2**level): a log that stores
those (tiles, or a node table) answers any proof with O(log² n) look-ups. Proof
*verification* follows the numbered steps of 2.1.3.2 and 2.1.4.2 exactly.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Protocol

from sealroom.errors import AttestationError, InvalidInputError

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(entry: bytes) -> bytes:
    """MTH({d(0)}) = SHA-256(0x00 || d(0)) (RFC 9162 2.1.1)."""
    return hashlib.sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || MTH(left) || MTH(right)) (RFC 9162 2.1.1)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def split(n: int) -> int:
    """k, the largest power of two smaller than n (n > 1): k < n <= 2k."""
    if n < 2:
        raise ValueError(f"split of {n}")
    return 1 << ((n - 1).bit_length() - 1)


class HashSource(Protocol):
    """Hashes of perfect subtrees: ``perfect(level, index)`` is MTH(D[index * 2**level :
    (index + 1) * 2**level]); callers only ask for subtrees inside the tree they prove."""

    def perfect(self, level: int, index: int) -> bytes: ...


class LeafList:
    """A HashSource over a list of leaf hashes held in memory (tests, small trees, the
    verifier's own recomputation); perfect subtrees are memoized."""

    def __init__(self, leaves: Sequence[bytes] = ()) -> None:
        self.leaves: list[bytes] = list(leaves)
        self._memo: dict[tuple[int, int], bytes] = {}

    def append(self, leaf: bytes) -> None:
        self.leaves.append(leaf)

    def perfect(self, level: int, index: int) -> bytes:
        if level == 0:
            return self.leaves[index]
        key = (level, index)
        h = self._memo.get(key)
        if h is None:
            h = node_hash(
                self.perfect(level - 1, 2 * index), self.perfect(level - 1, 2 * index + 1)
            )
            self._memo[key] = h
        return h


def subtree_hash(src: HashSource, start: int, end: int) -> bytes:
    """MTH(D[start:end]) for a range whose start is aligned to the largest power of two not
    above its width, as every range in RFC 9162's recursion is (2.1.1)."""
    n = end - start
    if n <= 0:
        raise ValueError(f"empty range {start}:{end}")
    if n & (n - 1) == 0:
        level = n.bit_length() - 1
        if start % n:
            raise ValueError(f"range {start}:{end} is not aligned")
        return src.perfect(level, start >> level)
    k = split(n)
    return node_hash(subtree_hash(src, start, start + k), subtree_hash(src, start + k, end))


def root_hash(src: HashSource, size: int) -> bytes:
    """The tree head hash of the first ``size`` leaves (EMPTY_ROOT for size 0)."""
    if size < 0:
        raise ValueError(f"tree size {size}")
    return EMPTY_ROOT if size == 0 else subtree_hash(src, 0, size)


def _path(src: HashSource, m: int, start: int, end: int) -> list[bytes]:
    # PATH(m, D[n]) of RFC 9162 2.1.3.1, on the range D[start:end]
    n = end - start
    if n == 1:
        return []
    k = split(n)
    if m < k:
        return [*_path(src, m, start, start + k), subtree_hash(src, start + k, end)]
    return [*_path(src, m - k, start + k, end), subtree_hash(src, start, start + k)]


def inclusion_proof(src: HashSource, index: int, size: int) -> list[bytes]:
    """The inclusion proof of leaf ``index`` in the tree of ``size`` leaves (2.1.3.1)."""
    if not 0 <= index < size:
        raise InvalidInputError(
            f"leaf index {index} is outside a tree of size {size}", code="tlog-out-of-range"
        )
    return _path(src, index, 0, size)


def _subproof(src: HashSource, m: int, start: int, end: int, whole: bool) -> list[bytes]:
    # SUBPROOF(m, D[n], b) of RFC 9162 2.1.4.1, on the range D[start:end]
    n = end - start
    if m == n:
        return [] if whole else [subtree_hash(src, start, end)]
    k = split(n)
    if m <= k:
        return [*_subproof(src, m, start, start + k, whole), subtree_hash(src, start + k, end)]
    return [*_subproof(src, m - k, start + k, end, False), subtree_hash(src, start, start + k)]


def consistency_proof(src: HashSource, old_size: int, new_size: int) -> list[bytes]:
    """PROOF(m, D[n]) of RFC 9162 2.1.4.1; empty when m is 0 or m == n."""
    if not 0 <= old_size <= new_size:
        raise InvalidInputError(
            f"consistency from size {old_size} to {new_size}: sizes out of order",
            code="tlog-out-of-range",
        )
    if old_size == 0 or old_size == new_size:
        return []
    return _subproof(src, old_size, 0, new_size, True)


def _bad(what: str) -> AttestationError:
    return AttestationError(what, code="tlog-proof-invalid")


def _check_hashes(path: Sequence[bytes]) -> None:
    for p in path:
        if len(p) != HASH_SIZE:
            raise _bad(f"proof hash is {len(p)} bytes, want {HASH_SIZE}")


def root_from_inclusion(leaf: bytes, index: int, size: int, path: Sequence[bytes]) -> bytes:
    """Steps 1-4 of RFC 9162 2.1.3.2: the root an inclusion proof leads to; raises if the
    proof's length does not fit (index, size)."""
    _check_hashes([leaf, *path])
    # 1. leaf_index must be below tree_size
    if not 0 <= index < size:
        raise _bad(f"leaf index {index} is not below tree size {size}")
    # 2. fn = leaf_index, sn = tree_size - 1; 3. r = hash
    fn, sn, r = index, size - 1, leaf
    # 4. for each p in inclusion_path
    for p in path:
        # a. sn == 0: stop and fail
        if sn == 0:
            raise _bad(f"inclusion proof for leaf {index} of {size} is too long")
        # b. LSB(fn) set or fn == sn: left sibling
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        # c. shift both once
        fn >>= 1
        sn >>= 1
    # 5. sn must be 0 (the root comparison is the caller's)
    if sn != 0:
        raise _bad(f"inclusion proof for leaf {index} of {size} is too short")
    return r


def verify_inclusion(
    leaf: bytes, index: int, size: int, path: Sequence[bytes], root: bytes
) -> None:
    """RFC 9162 2.1.3.2; raises AttestationError (code tlog-proof-invalid) on failure."""
    if root_from_inclusion(leaf, index, size, path) != root:
        raise _bad(f"inclusion proof for leaf {index} does not lead to the root of size {size}")


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, path: Sequence[bytes]
) -> None:
    """RFC 9162 2.1.4.2 (the algorithm takes 0 < first < second; equal sizes need equal
    roots and an empty proof, and size 0 is consistent with everything)."""
    _check_hashes([old_root, new_root, *path])
    if not 0 <= old_size <= new_size:
        raise _bad(f"checkpoint sizes go backwards: {old_size} then {new_size}")
    if old_size == new_size:
        if path:
            raise _bad("consistency proof between equal sizes must be empty")
        if old_root != new_root:
            raise _bad(f"two different roots for tree size {old_size}: the log forked")
        return
    if old_size == 0:
        if path:
            raise _bad("consistency proof from the empty tree must be empty")
        return
    proof = list(path)
    # 1. an empty consistency_path fails
    if not proof:
        raise _bad(f"empty consistency proof from size {old_size} to {new_size}")
    # 2. first an exact power of 2: prepend first_hash
    if old_size & (old_size - 1) == 0:
        proof.insert(0, old_root)
    # 3. fn = first - 1, sn = second - 1
    fn, sn = old_size - 1, new_size - 1
    # 4. LSB(fn) set: shift both until it is not
    while fn & 1:
        fn >>= 1
        sn >>= 1
    # 5. fr = sr = first value
    fr = sr = proof[0]
    # 6. for each subsequent value c
    for c in proof[1:]:
        # a. sn == 0: fail
        if sn == 0:
            raise _bad(f"consistency proof from {old_size} to {new_size} is too long")
        # b.
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        # c.
        fn >>= 1
        sn >>= 1
    # 7. fr == first_hash, sr == second_hash, sn == 0
    if sn != 0:
        raise _bad(f"consistency proof from {old_size} to {new_size} is too short")
    if fr != old_root:
        raise _bad(f"consistency proof does not lead to the old root (size {old_size})")
    if sr != new_root:
        raise _bad(f"consistency proof does not lead to the new root (size {new_size})")

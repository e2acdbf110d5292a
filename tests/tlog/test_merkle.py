"""RFC 9162 hashing and proofs, cross-checked against pymerkle (an independent
implementation configured for RFC 9162: SHA-256, leaf prefix 0x00, node prefix 0x01, no
duplication of odd nodes) for every tree size up to 64 and every index pair."""

from __future__ import annotations

import hashlib

import pymerkle
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sealroom.errors import AttestationError, InvalidInputError
from sealroom.tlog import merkle as M

N = 64


def entries(n: int, tag: str = "e") -> list[bytes]:
    return [f"{tag}{i}".encode() for i in range(n)]


@pytest.fixture(scope="module")
def peer() -> pymerkle.InmemoryTree:
    # security mode on: 0x00 / 0x01 prefixes (RFC 9162 2.1.1)
    t = pymerkle.InmemoryTree(algorithm="sha256", disable_security=False)
    for e in entries(N):
        t.append_entry(e)
    return t


@pytest.fixture(scope="module")
def ours() -> M.LeafList:
    return M.LeafList([M.leaf_hash(e) for e in entries(N)])


def test_peer_is_configured_for_rfc9162() -> None:
    t = pymerkle.InmemoryTree(algorithm="sha256")
    t.append_entry(b"x")
    assert t.get_root() == hashlib.sha256(b"\x00x").digest()
    t.append_entry(b"y")
    left, right = hashlib.sha256(b"\x00x").digest(), hashlib.sha256(b"\x00y").digest()
    assert t.get_root() == hashlib.sha256(b"\x01" + left + right).digest()


def test_empty_tree_hash() -> None:
    assert M.root_hash(M.LeafList(), 0) == hashlib.sha256(b"").digest()


def test_root_hashes_match_peer(peer: pymerkle.InmemoryTree, ours: M.LeafList) -> None:
    for n in range(1, N + 1):
        assert M.root_hash(ours, n) == peer.get_root(n), n


def test_inclusion_proofs_match_peer(peer: pymerkle.InmemoryTree, ours: M.LeafList) -> None:
    for n in range(1, N + 1):
        root = peer.get_root(n)
        for i in range(n):
            theirs = peer.prove_inclusion(i + 1, n)  # pymerkle counts from one
            mine = M.inclusion_proof(ours, i, n)
            # pymerkle's path is [leaf, siblings bottom-up]: the RFC 9162 path after the leaf
            assert list(theirs.path[1:]) == mine, (i, n)
            M.verify_inclusion(ours.leaves[i], i, n, mine, root)
            pymerkle.verify_inclusion(ours.leaves[i], root, theirs)


def test_consistency_proofs_cross_verify(peer: pymerkle.InmemoryTree, ours: M.LeafList) -> None:
    # pymerkle lays out its consistency path differently (old subroots first), so each
    # side's proof is checked against the other side's roots
    for n in range(1, N + 1):
        new_root = peer.get_root(n)
        for m in range(1, n + 1):
            old_root = peer.get_root(m)
            M.verify_consistency(m, n, old_root, new_root, M.consistency_proof(ours, m, n))
            pymerkle.verify_consistency(
                M.root_hash(ours, m), M.root_hash(ours, n), peer.prove_consistency(m, n)
            )


def test_rewritten_entry_breaks_consistency(ours: M.LeafList) -> None:
    for n in range(2, N + 1, 3):
        for m in range(1, n):
            for j in {0, m - 1, m // 2}:
                forged = M.LeafList(ours.leaves[:n])
                forged.leaves[j] = M.leaf_hash(b"rewritten")
                # the log rewrote entry j < m and proves consistency from the honest old
                # head to the forged new head: no proof it can build is accepted
                proof = M.consistency_proof(forged, m, n)
                with pytest.raises(AttestationError):
                    M.verify_consistency(m, n, M.root_hash(ours, m), M.root_hash(forged, n), proof)


def test_inclusion_negative_cases(ours: M.LeafList) -> None:
    n, i = 13, 6
    root, path = M.root_hash(ours, n), M.inclusion_proof(ours, i, n)
    cases = {
        "wrong_leaf": (M.leaf_hash(b"other"), i, n, path),
        "wrong_index": (ours.leaves[i], i + 1, n, path),
        # (size 14 has the same proof shape for leaf 6 as 13: its root would differ, and
        # the checkpoint binds size and root together)
        "wrong_size": (ours.leaves[i], i, 7, path),
        "proof_too_short": (ours.leaves[i], i, n, path[:-1]),
        "proof_too_long": (ours.leaves[i], i, n, [*path, path[0]]),
        "flipped_hash": (ours.leaves[i], i, n, [bytes(32), *path[1:]]),
        "index_at_size": (ours.leaves[i], n, n, path),
        "short_hash": (ours.leaves[i], i, n, [path[0][:31], *path[1:]]),
    }
    for name, (leaf, idx, size, p) in cases.items():
        with pytest.raises(AttestationError):  # noqa: PT012 - the name says which case
            M.verify_inclusion(leaf, idx, size, p, root)
            pytest.fail(name)


def test_consistency_negative_cases(ours: M.LeafList) -> None:
    m, n = 6, 13
    old, new = M.root_hash(ours, m), M.root_hash(ours, n)
    proof = M.consistency_proof(ours, m, n)
    bad = {
        "empty_proof": (m, n, old, new, []),
        "wrong_old_root": (m, n, new, new, proof),
        "wrong_new_root": (m, n, old, old, proof),
        "sizes_backwards": (n, m, new, old, proof),
        "truncated": (m, n, old, new, proof[:-1]),
        "extended": (m, n, old, new, [*proof, proof[0]]),
        "equal_sizes_two_roots": (m, m, old, new, []),
        "equal_sizes_nonempty_proof": (m, m, old, old, proof),
    }
    for _name, args in bad.items():
        with pytest.raises(AttestationError):
            M.verify_consistency(*args)
    M.verify_consistency(0, n, M.EMPTY_ROOT, new, [])
    M.verify_consistency(n, n, new, new, [])


def test_out_of_range_requests() -> None:
    src = M.LeafList([M.leaf_hash(b"a")])
    with pytest.raises(InvalidInputError):
        M.inclusion_proof(src, 1, 1)
    with pytest.raises(InvalidInputError):
        M.consistency_proof(src, 2, 1)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(max_size=40), min_size=1, max_size=300), st.data())
def test_property_proofs_verify(leaves: list[bytes], data: st.DataObject) -> None:
    src = M.LeafList([M.leaf_hash(e) for e in leaves])
    n = len(leaves)
    i = data.draw(st.integers(0, n - 1))
    m = data.draw(st.integers(0, n))
    root = M.root_hash(src, n)
    M.verify_inclusion(src.leaves[i], i, n, M.inclusion_proof(src, i, n), root)
    M.verify_consistency(m, n, M.root_hash(src, m), root, M.consistency_proof(src, m, n))

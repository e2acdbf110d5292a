"""C2SP signed-note, tlog-checkpoint, tlog-tiles and tlog-proof: the specs' own examples
first, then round trips and one negative case per check."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from sealroom.errors import AttestationError, InvalidInputError
from sealroom.tlog import merkle as M
from sealroom.tlog import note, tiles
from sealroom.tlog.checkpoint import Checkpoint, open_checkpoint
from sealroom.tlog.proof import TlogProof

# c2sp.org/signed-note, section "Verifier keys", "Example"
SPEC_VKEY = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"
SPEC_NOTE = (
    "This is an example message.\n\n"
    "\u2014 example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYj"
    "OBH3mFXmRKuwHjG1Yu72IneyaQM=\n"
)


def test_spec_example_note_verifies() -> None:
    v = note.Verifier.parse(SPEC_VKEY)
    assert v.vkey() == SPEC_VKEY
    n = note.open_note(SPEC_NOTE, [v])
    assert n.text == b"This is an example message.\n"


def test_spec_example_tampered_text_rejected() -> None:
    v = note.Verifier.parse(SPEC_VKEY)
    with pytest.raises(AttestationError, match="does not verify"):
        note.open_note(SPEC_NOTE.replace("example message", "exemple message"), [v])


def test_vkey_with_wrong_key_id_rejected() -> None:
    with pytest.raises(InvalidInputError, match="does not match"):
        note.Verifier.parse(SPEC_VKEY.replace("530d903a", "530d903b"))


def signer(name: str = "log.example/sealroom") -> note.Signer:
    return note.Signer(name, Ed25519PrivateKey.generate())


def test_unknown_signatures_ignored_known_bad_rejected() -> None:
    a, b = signer(), signer("witness.example")
    text = Checkpoint("log.example/sealroom", 3, bytes(32)).text()
    signed = note.sign(text, a, b)
    assert note.open_note(signed, [a.verifier]).signatures[0].name == a.name
    # only an unknown key signed: rejected
    with pytest.raises(AttestationError, match="not signed by a trusted key"):
        note.open_note(note.sign(text, b), [a.verifier])
    # same name, other key (other ID): unknown, so not trusted
    impostor = signer()
    with pytest.raises(AttestationError, match="not signed by a trusted key"):
        note.open_note(note.sign(text, impostor), [a.verifier])


def test_checkpoint_round_trip_and_origin() -> None:
    s = signer()
    cp = Checkpoint(s.name, 20852163, bytes(range(32)))
    signed = cp.sign(s)
    assert signed.startswith("log.example/sealroom\n20852163\n")
    assert open_checkpoint(signed, [s.verifier]) == cp
    with pytest.raises(InvalidInputError, match="origin"):
        open_checkpoint(signed, [s.verifier], origin="other.example/log")
    other = Checkpoint("other.example/log", 1, bytes(32)).sign(s)
    with pytest.raises(InvalidInputError, match="not the name of the key"):
        open_checkpoint(other, [s.verifier])


@pytest.mark.parametrize(
    "text",
    [
        "o\n01\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",  # leading zero in size
        "o\n1\nAAAA\n",  # short root
        "\n1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",  # empty origin
        "o\n1\n",  # missing root
        "o\n-1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",  # negative size
    ],
)
def test_malformed_checkpoint_text(text: str) -> None:
    with pytest.raises(InvalidInputError):
        Checkpoint.parse_text(text.encode())


def test_note_control_character_rejected() -> None:
    s = signer()
    with pytest.raises(InvalidInputError):
        note.parse("a\x07b\n\n" + s.sign_line(b"a\x07b\n"))


@given(st.binary(max_size=400))
def test_note_parser_never_crashes(data: bytes) -> None:
    try:
        note.parse(data)
    except InvalidInputError:
        pass


def test_tile_paths_spec_examples() -> None:
    assert tiles.encode_index(1234067) == "x001/x234/067"
    assert tiles.encode_index(0) == "000"
    ref = tiles.parse_path("tile/1/x001/x234/067.p/17")
    assert (ref.level, ref.index, ref.width) == (1, 1234067, 17)
    assert ref.path() == "tile/1/x001/x234/067.p/17"
    assert tiles.parse_path("tile/entries/005").level == -1
    for bad in [
        "tile/01/000",
        "tile/0/1",
        "tile/0/000.p/0",
        "tile/0/000.p/256",
        "tile/64/000",
        "tile/0/x000/001",
        "tile/0/000.p/012",
    ]:
        with pytest.raises(InvalidInputError):
            tiles.parse_path(bad)


def test_tiles_of_tree_70000_spec_example() -> None:
    # tlog-tiles: 273 full level-0 tiles, a partial level-0 tile of width 112, one full
    # level-1 tile, a partial level-1 tile of width 17, a partial level-2 tile of width 1
    s = 70000
    assert tiles.exists(tiles.TileRef(0, 272, 256), s)
    assert not tiles.exists(tiles.TileRef(0, 273, 256), s)
    assert tiles.exists(tiles.TileRef(0, 273, 112), s)
    assert not tiles.exists(tiles.TileRef(0, 273, 111), s)
    assert tiles.exists(tiles.TileRef(1, 0, 256), s)
    assert tiles.exists(tiles.TileRef(1, 1, 17), s)
    assert tiles.exists(tiles.TileRef(2, 0, 1), s)
    assert not tiles.exists(tiles.TileRef(2, 0, 256), s)
    # size 256: one full level-0 tile and a level-1 partial of width 1
    assert tiles.exists(tiles.TileRef(1, 0, 1), 256)
    # narrower partial tiles of earlier sizes stay servable; wider or later ones do not
    assert tiles.servable(tiles.TileRef(0, 273, 111), s)
    assert not tiles.servable(tiles.TileRef(0, 273, 113), s)
    assert tiles.servable(tiles.TileRef(1, 1, 16), s)
    assert not tiles.servable(tiles.TileRef(1, 1, 18), s)
    assert tiles.servable(tiles.TileRef(-1, 273, 112), s)
    assert not tiles.servable(tiles.TileRef(2, 0, 2), s)


def test_tile_contents_are_subtree_hashes() -> None:
    leaves = [M.leaf_hash(str(i).encode()) for i in range(256 * 2 + 5)]
    src = M.LeafList(leaves)
    t0 = tiles.tile_hashes(src, tiles.TileRef(0, 1, 256))
    assert t0 == b"".join(leaves[256:512])
    t1 = tiles.tile_hashes(src, tiles.TileRef(1, 0, 2))
    assert t1[:32] == M.root_hash(M.LeafList(leaves[:256]), 256)
    assert t1[32:] == M.subtree_hash(src, 256, 512)


def test_entry_bundle_round_trip() -> None:
    es = [b"", b"a", b"x" * 300]
    assert tiles.parse_bundle(tiles.entry_bundle(es)) == es
    with pytest.raises(InvalidInputError):
        tiles.parse_bundle(tiles.entry_bundle(es)[:-1])
    with pytest.raises(InvalidInputError):
        tiles.entry_bundle([b"x" * 70000])


def test_tlog_proof_round_trip_and_checks() -> None:
    s = signer()
    leaves = [M.leaf_hash(str(i).encode()) for i in range(11)]
    src = M.LeafList(leaves)
    cp = Checkpoint(s.name, 11, M.root_hash(src, 11)).sign(s)
    p = TlogProof(4, tuple(M.inclusion_proof(src, 4, 11)), cp, extra=b"ctx")
    text = p.encode()
    assert text.startswith("c2sp.org/tlog-proof@v1\nextra " + base64.b64encode(b"ctx").decode())
    q = TlogProof.parse(text)
    assert q == p
    assert q.verify(leaves[4], [s.verifier]).size == 11
    with pytest.raises(AttestationError):
        q.verify(leaves[5], [s.verifier])
    with pytest.raises(AttestationError):
        q.verify(leaves[4], [signer().verifier])
    with pytest.raises(InvalidInputError):
        TlogProof.parse(text.replace("index 4", "index 04"))


def test_vkey_whose_base64_has_a_plus_parses() -> None:
    """Defect: the vkey was split at every '+', so a key whose base64 contains '+' (about
    one in three) could not be parsed back."""
    seen = 0
    for _ in range(64):
        v = signer().verifier
        seen += "+" in v.vkey().split("+", 2)[2]
        assert note.Verifier.parse(v.vkey()) == v
    assert seen > 0


@given(st.binary(max_size=600))
def test_checkpoint_and_proof_parsers_never_crash(data: bytes) -> None:
    for parse in (Checkpoint.parse_text, TlogProof.parse, tiles.parse_bundle):
        try:
            parse(data)
        except InvalidInputError:
            pass


@given(st.text(max_size=80))
def test_tile_path_parser_never_crashes(path: str) -> None:
    try:
        ref = tiles.parse_path(path)
    except InvalidInputError:
        return
    assert ref.path() == path

"""docs/reference.md (issue 15) is generated from the models that parse manifests and
service specs: it is current, its notes name real fields, and every manifest field has
one."""

from __future__ import annotations

from pathlib import Path

from sealroom.cli.reference import NOTES, render, sections

PAGE = Path(__file__).resolve().parents[2] / "docs" / "reference.md"
MANIFEST_SECTIONS = ("manifest", "algorithm", "dataset", "party", "limits", "kbs-source")


def test_reference_page_is_generated_from_the_current_models() -> None:
    assert PAGE.read_text() == render(), (
        "docs/reference.md is stale: python -m sealroom.cli.reference > docs/reference.md"
    )


def test_reference_notes_name_fields_that_exist() -> None:
    have = sections()
    stale = [k for k in NOTES if k[1] not in have.get(k[0], set())]
    assert not stale, stale


def test_every_manifest_field_is_explained() -> None:
    have = sections()
    missing = [(s, f) for s in MANIFEST_SECTIONS for f in sorted(have[s]) if (s, f) not in NOTES]
    assert not missing, missing

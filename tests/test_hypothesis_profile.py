"""The suite's property tests examine the same examples on every run (tests/conftest.py)."""

from __future__ import annotations

import os

from hypothesis import settings


def test_property_tests_are_derandomized_unless_exploring() -> None:
    exploring = os.environ.get("SEALROOM_FUZZ") == "explore"
    current = settings.default
    assert current is not None and current.derandomize is not exploring
    # an explicit per-test settings object inherits the profile's choice
    assert settings(max_examples=5).derandomize is not exploring

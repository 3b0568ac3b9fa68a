"""Fixtures shared by several test modules."""

import json
import os

import pytest

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")


@pytest.fixture(scope="session")
def heads_goldens():
    """bert4keras 0.11.5 outputs for heads, losses and decoders (tests/fixtures/make_heads_goldens.py)."""
    with open(os.path.join(FIXTURES, "heads_goldens.json"), encoding="utf-8") as f:
        return json.load(f)

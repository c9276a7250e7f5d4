"""Shared pytest fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Assertions in the shared conformance mixins get pytest's detailed failure output.
pytest.register_assert_rewrite("medrag.testing.conformance")

# ../shared/data next to the repository root, unless MEDRAG_SHARED_DATA says otherwise.
DEFAULT_SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared data directory; tests using it are skipped when it is absent."""
    path = Path(os.environ.get("MEDRAG_SHARED_DATA") or DEFAULT_SHARED_DATA)
    if not path.is_dir():
        pytest.skip(f"shared data not found at {path} (set MEDRAG_SHARED_DATA to its location)")
    return path

"""Shared test set-up: nothing a test runs writes into the user's home."""
from __future__ import annotations

import pytest


@pytest.fixture(autouse=True, scope="session")
def _state_outside_home(tmp_path_factory):
    """`farm batch` remembers the last batch's root under $XDG_STATE_HOME, and music21's answers
    under $FARM_CACHE_DIR (``farm.memo``): folders of the run's own."""
    mp = pytest.MonkeyPatch()
    mp.setenv("XDG_STATE_HOME", str(tmp_path_factory.mktemp("state")))
    mp.setenv("FARM_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    yield
    mp.undo()

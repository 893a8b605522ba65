"""Shared pytest setup: never touch the user's real data, weights or cache directories."""
import os

import pytest

os.environ.setdefault("IN_TEST", "1")
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(autouse=True)
def _isolated_dirs(tmp_path, monkeypatch):
    "Point HOME and every NEURODECODE_* directory at a temporary folder."
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for var in ("NEURODECODE_DATA", "NEURODECODE_WEIGHTS", "NEURODECODE_CACHE"):
        monkeypatch.delenv(var, raising=False)
    yield

"""Shared fixtures for the benchmark/scoring/sandbox tests.

The public data sets live beside the repository, in ``<repo root>/../shared/data``
(``$SMOA_DATA_DIR`` overrides it); tests that need them skip when the folder is absent.
"""

import os
from pathlib import Path

import pytest


def _data_dir() -> Path:
    env = os.environ.get("SMOA_DATA_DIR")
    if env:
        return Path(env)
    return (Path(__file__).resolve().parents[2] / ".." / "shared" / "data").resolve()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    d = _data_dir()
    if not d.is_dir():
        pytest.skip(f"shared data folder not found at {d}")
    return d

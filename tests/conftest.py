"""Shared test fixtures (keep this file small)."""

from __future__ import annotations

from pathlib import Path

import pytest

# ../shared/datasets relative to the repository root (see shared/datasets/README.md)
SHARED_DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    """The folder of real datasets (mnist/, fashion-mnist/, cifar10-jpeg75/, olivetti-faces/); skips when absent."""
    if not SHARED_DATASETS.is_dir():
        pytest.skip(f"real datasets folder {SHARED_DATASETS} is absent")
    return SHARED_DATASETS

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


@pytest.fixture
def one_thread():
    """One intra-op thread for the test: on tiny tensors, threads spin against the other processes
    on a shared CPU (pytest -n 2) and make a test up to 100x slower."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def repo_script():
    """A loader of the repository's scripts as modules: repo_script("benchmarks/tables.py")."""
    import importlib.util

    root = Path(__file__).resolve().parents[1]

    def load(relative: str):
        path = root / relative
        spec = importlib.util.spec_from_file_location(path.stem.replace("-", "_"), path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load

"""Shared test fixtures (keep this file small)."""

from __future__ import annotations

import sys
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
        name = f"{path.parent.name}_{path.stem}".replace("-", "_")
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
        return module

    return load


def _shop_table(n: int = 1200, seed: int = 0):
    """A mixed table whose columns depend on each other: region -> size -> price; a quarter of the
    ratings missing."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    region = rng.choice(["north", "south", "east"], n, p=[0.5, 0.3, 0.2])
    big = rng.random(n) < np.where(region == "north", 0.8, 0.2)
    price = np.where(big, rng.normal(40, 3, n), rng.normal(10, 1, n)).round(2)
    rating = pd.Series(rng.integers(1, 6, n)).astype(float)
    rating[rng.random(n) < 0.25] = np.nan
    return pd.DataFrame({"region": region, "size": np.where(big, "big", "small"), "price": price, "rating": rating})


@pytest.fixture(scope="session")
def shop_table():
    """shop_table(n=1200, seed=0): the table models' test table (a pandas DataFrame)."""
    return _shop_table


def _check_shop_dependencies(model, data, generator_seed: int = 0):
    """A model trained on shop_table rows draws, given the region, sizes at p(big | north) = 0.8 and
    p(big | east) = 0.2, prices that follow the size, and ratings missing at about their 25%."""
    import torch

    generator = torch.Generator().manual_seed(generator_seed)
    north = data.decode_rows(model.sample_where(1000, {"region": 1}, generator=generator))
    east = data.decode_rows(model.sample_where(1000, {"region": 0}, generator=generator))
    assert 0.7 < (north["size"] == "big").mean() < 0.9 and 0.1 < (east["size"] == "big").mean() < 0.3
    big, small = north[north["size"] == "big"]["price"], north[north["size"] == "small"]["price"]
    assert abs(big.median() - 40) < 2.5 and abs(small.median() - 10) < 1.5
    assert 0.15 < north["rating"].isna().mean() < 0.35
    assert set(north["rating"].dropna()) <= {1.0, 2.0, 3.0, 4.0, 5.0}


@pytest.fixture(scope="session")
def check_shop_dependencies():
    """check_shop_dependencies(model, data): what a table model must have learnt of shop_table."""
    return _check_shop_dependencies

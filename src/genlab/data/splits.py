"""Seeded train/val/test splits as index tensors.

Every dataset without an official split uses `seeded_splits`; datasets with an official train/test
split carve their validation set out of the training set with `carve_validation`. Both draw from a
fresh `torch.Generator` seeded with `seed`, so the same seed gives the same split on any machine.
"""

from __future__ import annotations

import torch
from torch import Tensor

from genlab.errors import DataError


def seeded_splits(n: int, seed: int = 0, *, val_fraction: float = 0.1, test_fraction: float = 0.1) -> dict[str, Tensor]:
    """Split n samples into train/val/test index tensors (long, disjoint, covering 0..n-1).

    perm = randperm(n) drawn from a generator seeded with `seed`;
    n_test = round(test_fraction * n), n_val = round(val_fraction * n);
    test = perm[:n_test], val = perm[n_test : n_test + n_val], train = the rest.
    For n = 1,797 (digits) and the default fractions: train 1,437, val 180, test 180.

    >>> s = seeded_splits(10, seed=0)
    >>> [len(s[k]) for k in ("train", "val", "test")]
    [8, 1, 1]
    """
    if n < 1:
        raise DataError("cannot split an empty dataset")
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise DataError(f"split fractions val={val_fraction}, test={test_fraction} must be in [0, 1) and sum below 1")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val = round(val_fraction * n)
    n_test = round(test_fraction * n)
    return {
        "train": perm[n_test + n_val :],
        "val": perm[n_test : n_test + n_val],
        "test": perm[:n_test],
    }


def carve_validation(train: Tensor, n_val: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Take a seeded random `n_val` of the indices in `train` as validation set.

    perm = randperm(len(train)) from a generator seeded with `seed`; returns
    (train[perm[n_val:]], train[perm[:n_val]]), i.e. (new train, val).
    """
    if not 0 <= n_val < len(train):
        raise DataError(f"cannot carve {n_val} validation samples out of {len(train)} training samples")
    perm = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
    return train[perm[n_val:]], train[perm[:n_val]]

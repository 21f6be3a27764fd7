"""Datasets: embedded ones (digits, 2D toys, tables), standard ones read from local files, user files.

>>> import genlab.data
>>> data = genlab.data.load("moons", n=1000)
>>> data.spec.kind, data.spec.shape, len(data)
('vector', (2,), 1000)
"""

from genlab.data.catalog import list_datasets, load
from genlab.data.dataset import Batch, DataSpec, Dataset
from genlab.data.files import array_dataset, read_idx
from genlab.data.images import cache_folder
from genlab.data.splits import carve_validation, seeded_splits
from genlab.data.standard import data_root
from genlab.data.tables import ColumnInfo, TableEncoder, table_dataset
from genlab.data.toy import TOY_NAMES, gaussian_mixture, mode_centers, mode_std, sample_toy, toy_log_prob

__all__ = [
    "Batch",
    "DataSpec",
    "Dataset",
    "load",
    "list_datasets",
    "TableEncoder",
    "ColumnInfo",
    "table_dataset",
    "array_dataset",
    "read_idx",
    "seeded_splits",
    "carve_validation",
    "data_root",
    "cache_folder",
    "TOY_NAMES",
    "sample_toy",
    "mode_centers",
    "mode_std",
    "gaussian_mixture",
    "toy_log_prob",
]

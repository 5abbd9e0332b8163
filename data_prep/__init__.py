"""data_prep: OTTO JSONL <-> columnar memory-mapped datasets, a synthetic generator, statistics."""
from .dataset import TYPE_CODES, TYPE_NAMES, Dataset, DatasetError, write_dataset

__all__ = ["Dataset", "DatasetError", "TYPE_CODES", "TYPE_NAMES", "write_dataset"]

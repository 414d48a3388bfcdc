"""Readers, datasets and samplers."""

from labelwise.data.datasets import ArrayDataset, DataBundle, load_data
from labelwise.data.sampling import StepBatchSampler

__all__ = ["ArrayDataset", "DataBundle", "StepBatchSampler", "load_data"]

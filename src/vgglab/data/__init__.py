"""Datasets as cached uint8 tensors, their statistics, and the batched on-device loader."""

from .dataset import Dataset, load_dataset
from .loader import BatchLoader
from .sources import DataError, Split
from .stats import PixelStats, pixel_stats

__all__ = ["Dataset", "load_dataset", "BatchLoader", "DataError", "Split", "PixelStats", "pixel_stats"]

"""Datasets as cached uint8 tensors, their statistics, and the batched on-device loader."""

from .dataset import Dataset, load_dataset
from .errors import DataError
from .loader import BatchLoader
from .normalization import Normalization
from .split import Split
from .stats import PixelStats, pixel_stats

__all__ = ["Dataset", "load_dataset", "BatchLoader", "DataError", "Normalization", "Split", "PixelStats", "pixel_stats"]

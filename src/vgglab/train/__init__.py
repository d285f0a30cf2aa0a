"""Training: typed config, the run's parts (preparation, state, freeze plan, reporter), the loop,
optimisers and schedules, checkpoints."""

from .config import Config, ConfigError, load_config
from .engine import FitResult, fit
from .loop import evaluate_batches, train_one_epoch
from .state import TrainState

__all__ = ["Config", "ConfigError", "load_config", "FitResult", "fit", "evaluate_batches", "train_one_epoch", "TrainState"]

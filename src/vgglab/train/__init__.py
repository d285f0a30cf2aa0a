"""Training: typed config, loop, optimisers and schedules, checkpoints."""

from .config import Config, ConfigError, load_config  # noqa: F401
from .engine import FitResult, fit  # noqa: F401
from .loop import evaluate, train_one_epoch  # noqa: F401

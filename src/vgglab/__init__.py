"""vgglab: build, train, evaluate and look inside VGG convolutional networks."""

from .errors import VgglabError
from .models import VGG, SpecError, VGGConfig, create_model, create_model_from_spec, list_models
from .evaluate.load import load_model
from .models.features import feature_extractor
from .runmeta import RunMeta
from .runs import TrainedRun, load_run
from .train import Config, fit, load_config

__version__ = "0.1.0"

__all__ = [
    "VGG", "VGGConfig", "SpecError", "VgglabError", "Config", "create_model", "create_model_from_spec",
    "list_models", "fit", "load_config", "load_model", "load_run", "TrainedRun", "feature_extractor", "RunMeta",
    "__version__",
]

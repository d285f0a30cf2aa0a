"""vgglab: build, train, evaluate and look inside VGG convolutional networks."""

from .models import VGG, VGGConfig, SpecError, create_model, create_model_from_spec, list_models

__version__ = "0.1.0"

__all__ = ["VGG", "VGGConfig", "SpecError", "create_model", "create_model_from_spec", "list_models", "__version__"]

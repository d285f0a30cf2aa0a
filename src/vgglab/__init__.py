"""vgglab: build, train, evaluate and look inside VGG convolutional networks.

The names below load on first use (PEP 562), so ``import vgglab`` and the ``vgglab`` command start
without importing torch first: a Ctrl-C in a command's first seconds is then handled like any other.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from .errors import VgglabError

__version__ = "0.1.0"

# public name -> the module that defines it
_LAZY = {
    "VGG": "models",
    "VGGConfig": "models",
    "SpecError": "models",
    "create_model": "models",
    "create_model_from_spec": "models",
    "list_models": "models",
    "load_model": "evaluate.load",
    "feature_extractor": "models.features",
    "RunMeta": "run.meta",
    "TrainedRun": "runs",
    "load_run": "runs",
    "Config": "train",
    "fit": "train",
    "load_config": "train",
}

__all__ = [
    "VGG",
    "VGGConfig",
    "SpecError",
    "VgglabError",
    "Config",
    "create_model",
    "create_model_from_spec",
    "list_models",
    "fit",
    "load_config",
    "load_model",
    "load_run",
    "TrainedRun",
    "feature_extractor",
    "RunMeta",
    "__version__",
]

if TYPE_CHECKING:
    from .evaluate.load import load_model
    from .models import VGG, SpecError, VGGConfig, create_model, create_model_from_spec, list_models
    from .models.features import feature_extractor
    from .run.meta import RunMeta
    from .runs import TrainedRun, load_run
    from .train import Config, fit, load_config


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    try:  # a submodule by attribute (vgglab.train, vgglab.models, ...), as after an eager import
        return importlib.import_module(f".{name}", __name__)
    except ModuleNotFoundError as exc:
        if exc.name != f"{__name__}.{name}":
            raise
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})

"""The VGG family: layer tables, one VGG class, a registry and torchvision weight mapping."""

from .registry import (
    MODEL_OPTIONS,
    create_model,
    create_model_from_spec,
    get_entry,
    list_models,
    model_config,
    param_count,
    register_model,
)
from .spec import BlockSpec, ConvSpec, HeadSpec, SpecError, VGGConfig
from .summary import format_summary, summarize
from .torchvision_compat import key_mapping, load_torchvision_weights, to_torchvision_state_dict
from .vgg import VGG, config_of

__all__ = [
    "VGG",
    "VGGConfig",
    "config_of",
    "BlockSpec",
    "ConvSpec",
    "HeadSpec",
    "SpecError",
    "MODEL_OPTIONS",
    "create_model",
    "create_model_from_spec",
    "get_entry",
    "list_models",
    "model_config",
    "param_count",
    "register_model",
    "summarize",
    "format_summary",
    "key_mapping",
    "load_torchvision_weights",
    "to_torchvision_state_dict",
]

"""Named VGG configurations. ``list_models``, the CLI's choices and the tests all read this."""

from __future__ import annotations

import dataclasses
import fnmatch
from dataclasses import dataclass

import torch

from ..declare import checked
from ..memory import check_fits
from .spec import BlockSpec, ConvSpec, HeadSpec, SpecError, VGGConfig, _suggest, parse_head
from .vgg import VGG


def _blocks(table) -> tuple[BlockSpec, ...]:
    """A layer table: one list per block; an int is a 3x3 conv, ``(w, 1)`` a 1x1 conv."""
    return tuple(BlockSpec(tuple(ConvSpec(c) if isinstance(c, int) else ConvSpec(*c) for c in block)) for block in table)


# Simonyan & Zisserman (2014), "Very Deep Convolutional Networks for Large-Scale Image
# Recognition", Table 1. Every block ends in a 2x2 max-pool.
PAPER_TABLES = {
    "A": [[64], [128], [256, 256], [512, 512], [512, 512]],
    "B": [[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]],
    "C": [[64, 64], [128, 128], [256, 256, (256, 1)], [512, 512, (512, 1)], [512, 512, (512, 1)]],
    "D": [[64, 64], [128, 128], [256] * 3, [512] * 3, [512] * 3],
    "E": [[64, 64], [128, 128], [256] * 4, [512] * 4, [512] * 4],
}

# The three CIFAR-10 models ("Model I, II, III") of the second tutorial in shared/seeds.
CIFAR_TUTORIAL_TABLES = {
    "i": ([[128], [256], [512]], 1),
    "ii": ([[128], [256, 256], [512, 512]], 2),
    "iii": ([[128], [256, 256], [512] * 6], 2),
}


@dataclass(frozen=True)
class ModelEntry:
    name: str
    config: VGGConfig
    description: str


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(name: str, config: VGGConfig, description: str) -> None:
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} is already registered")
    _REGISTRY[name] = ModelEntry(name, dataclasses.replace(config, name=name), description)


def _register_family() -> None:
    depth = {"A": 11, "B": 13, "C": 16, "D": 16, "E": 19}
    suffix = {"A": "vgg11", "B": "vgg13", "C": "vgg16_c", "D": "vgg16", "E": "vgg19"}
    for letter, table in PAPER_TABLES.items():
        base = VGGConfig(blocks=_blocks(table))
        name = suffix[letter]
        desc = f"configuration {letter} ({depth[letter]} weight layers)"
        register_model(name, base, f"{desc}, Simonyan & Zisserman 2014")
        register_model(f"{name}_bn", dataclasses.replace(base, batch_norm=True), f"{desc} with BatchNorm")
        if letter == "A":
            register_model(
                "vgg11_lrn", dataclasses.replace(base, lrn=True), "configuration A-LRN (A with LRN after the first conv)"
            )
    register_model(
        "vgg16_cifar",
        VGGConfig(
            blocks=_blocks(PAPER_TABLES["D"]),
            head=HeadSpec("cifar", hidden=512, num_hidden=2),
            num_classes=10,
            input_size=32,
            batch_norm=True,
        ),
        "VGG-16 with BatchNorm and a 512-512 head for 32x32 input (the CIFAR-10 notebook's model)",
    )
    for roman, (table, n_hidden) in CIFAR_TUTORIAL_TABLES.items():
        register_model(
            f"vgg_cifar_{roman}",
            VGGConfig(
                blocks=_blocks(table),
                head=HeadSpec("cifar", hidden=1024, num_hidden=n_hidden),
                num_classes=10,
                input_size=32,
            ),
            f"the PyTorch guide's CIFAR-10 Model {roman.upper()} (plain conv3-ReLU, FC-1024 x{n_hidden})",
        )
    register_model(
        "vgg_fast",
        VGGConfig(
            blocks=_blocks([[64, 64], [256, 256], [256, 256]]),
            head=HeadSpec("linear", num_hidden=0, scale=1 / 9),
            num_classes=10,
            input_size=32,
            batch_norm=True,
            init="dirac",
            whiten=2,
            pool_first=True,
            activation="gelu",
            conv_bias=False,
            bn_momentum=0.4,
            bn_eps=1e-12,
        ),
        "speed-run VGG for CIFAR (Jordan 2024): 2x2 patch whitening, 3 blocks conv-pool-BN-GELU + conv-BN-GELU, linear head",
    )


_register_family()

# Options ``create_model`` accepts: every VGGConfig field but the name, the head's type ("head")
# and every other HeadSpec field, read from the dataclasses so a new field is an option at once.
_CONFIG_OPTIONS = tuple(f.name for f in dataclasses.fields(VGGConfig) if f.name not in ("head", "name"))
_HEAD_OPTIONS = tuple(f.name for f in dataclasses.fields(HeadSpec) if f.name != "type")
_FLOAT_OPTIONS = {f.name for f in (*dataclasses.fields(VGGConfig), *dataclasses.fields(HeadSpec)) if f.type == "float"}
MODEL_OPTIONS = _CONFIG_OPTIONS + ("head",) + _HEAD_OPTIONS


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a shell-style ``pattern``, sorted."""
    return sorted(n for n in _REGISTRY if fnmatch.fnmatchcase(n, pattern))


def get_entry(name: str) -> ModelEntry:
    if name not in _REGISTRY:
        raise SpecError(f"unknown model {name!r}{_suggest(name, _REGISTRY)}; `vgglab models` lists all {len(_REGISTRY)}")
    return _REGISTRY[name]


def model_config(name: str, **options) -> VGGConfig:
    """The registered configuration of ``name`` with ``options`` applied (validated)."""
    cfg = get_entry(name).config
    for key in options:
        if key not in MODEL_OPTIONS:
            raise SpecError(f"unknown model option {key!r}{_suggest(key, MODEL_OPTIONS)}; valid: {', '.join(MODEL_OPTIONS)}")
    head = cfg.head
    h = options.get("head")
    if h is not None and not (isinstance(h, str) and h == head.type):  # same type: keep the model's own head
        head = parse_head(h)
    options = checked(VGGConfig, options, lambda msg: SpecError(f"model option {msg}"), skip=("blocks", "head"), partial=True)
    options = checked(HeadSpec, options, lambda msg: SpecError(f"model option {msg}"), skip=("type",), partial=True)
    options = {k: float(v) if k in _FLOAT_OPTIONS and v is not None else v for k, v in options.items()}
    head = dataclasses.replace(head, **{k: options[k] for k in _HEAD_OPTIONS if options.get(k) is not None})
    changes = {k: options[k] for k in _CONFIG_OPTIONS if options.get(k) is not None}
    if "blocks" in changes:  # depths and widths: a list of blocks, each a list of conv widths
        blocks = changes["blocks"]
        if not isinstance(blocks, (list, tuple)):
            raise SpecError(f"model option blocks: expected a list of blocks (each a list of conv widths), got {blocks!r}")
        changes["blocks"] = tuple(BlockSpec.parse(b, f"blocks[{i}]") for i, b in enumerate(blocks))
    return dataclasses.replace(cfg, head=head, **changes)


def create_model(name: str, **options) -> VGG:
    """Build a registered VGG, e.g. ``create_model("vgg16_bn", num_classes=10, head="cifar", input_size=32)``."""
    return build(model_config(name, **options))


def create_model_from_spec(spec: dict | VGGConfig) -> VGG:
    """Build a custom VGG from a mapping (e.g. parsed YAML); unknown keys are errors."""
    cfg = spec if isinstance(spec, VGGConfig) else VGGConfig.from_dict(spec)
    return build(cfg)


def param_count(cfg: VGGConfig) -> int:
    """Parameters of the network ``cfg`` describes, counted on the meta device (no memory)."""
    with torch.device("meta"):
        return sum(p.numel() for p in VGG(cfg).parameters())


def build(cfg: VGGConfig) -> VGG:
    """``VGG(cfg)``, once its fp32 weights are known to fit in memory (a width of 1e6 is one line
    with the estimate, not an allocation of 10^17 bytes). On the meta device nothing is checked."""
    if torch.empty(0).device.type != "meta":
        n = param_count(cfg)
        check_fits(
            f"{cfg.name} with width {cfg.width:g}, {cfg.num_classes} classes and input {cfg.input_size} ({n:,} parameters)",
            4 * n,
            "lower model.options.width, num_classes or input_size",
        )
    return VGG(cfg)

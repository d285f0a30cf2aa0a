"""Typed, validated descriptions of a VGG network.

A network is data: a list of blocks (each a list of convolutions followed by an optional
2x2 max-pool) and a head. These dataclasses are what the registry fills in, what a YAML
spec is validated into, and what a checkpoint stores so the model can be rebuilt.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from ..declare import checked
from ..errors import VgglabError
from ..strict import _suggest

HEAD_TYPES = ("imagenet", "cifar", "gap", "linear")
WEIGHT_INITS = ("kaiming", "paper", "dirac")
ACTIVATIONS = ("relu", "gelu")
POOL_TYPES = ("max", "none")
MAX_WIDTH = 16.0  # 16 x VGG-16's widths is 2.2 G parameters, 9 GB of fp32 weights: past any use


class SpecError(VgglabError, ValueError):
    """A model description that cannot be built; the message says what to change."""


def strict_init(cls, data: Any, where: str):
    """``cls`` from a mapping, its keys and types checked (:func:`vgglab.declare.checked`)."""
    return data if isinstance(data, cls) else cls(**checked(cls, data, SpecError, section=where))


@dataclass(frozen=True)
class ConvSpec:
    out_channels: int
    kernel_size: int = 3  # 3 (padding 1) or 1 (padding 0): both keep the spatial size

    def __post_init__(self):
        if not isinstance(self.out_channels, int) or self.out_channels < 1:
            raise SpecError(f"conv out_channels must be a positive integer, got {self.out_channels!r}")
        if self.kernel_size not in (1, 3):
            raise SpecError(f"conv kernel_size must be 1 or 3 (VGG uses only these), got {self.kernel_size!r}")

    @classmethod
    def parse(cls, item: Any, where: str) -> ConvSpec:
        """An int is a 3x3 conv of that width; a mapping gives both fields."""
        if isinstance(item, bool):
            raise SpecError(f"{where}: expected a conv width or mapping, got {item!r}")
        if isinstance(item, int):
            return cls(item)
        if isinstance(item, (list, tuple)) and len(item) == 2:
            return cls(int(item[0]), int(item[1]))
        return strict_init(cls, item, where)


@dataclass(frozen=True)
class BlockSpec:
    convs: tuple[ConvSpec, ...]
    pool: str = "max"

    def __post_init__(self):
        if not self.convs:
            raise SpecError("a block needs at least one conv")
        if self.pool not in POOL_TYPES:
            raise SpecError(f"block pool must be one of {POOL_TYPES}, got {self.pool!r}")

    @classmethod
    def parse(cls, item: Any, where: str) -> BlockSpec:
        """A list is the block's convs (max-pool after); a mapping may also set ``pool``."""
        if isinstance(item, BlockSpec):
            return item
        if isinstance(item, (list, tuple)):
            item = {"convs": list(item)}
        block = strict_init(_RawBlock, item, where)
        if not isinstance(block.convs, (list, tuple)):
            raise SpecError(f"{where}.convs: expected a list of convs, got {block.convs!r}")
        convs = tuple(ConvSpec.parse(c, f"{where}.convs[{i}]") for i, c in enumerate(block.convs))
        return cls(convs, block.pool)


@dataclass
class _RawBlock:
    convs: Any
    pool: str = "max"


@dataclass(frozen=True)
class HeadSpec:
    """The classifier on top of the conv blocks.

    ``imagenet``: adaptive average pool to ``pool_size`` x ``pool_size``, then ``num_hidden``
    FC-``hidden``+ReLU+Dropout layers and the class layer (torchvision's layout).
    ``cifar``: flatten the final map as it is (its size computed from ``input_size``), then
    ``num_hidden`` FC-``hidden`` (+BatchNorm1d when the model uses BatchNorm)+ReLU+Dropout.
    ``gap``: global average pool and one Linear.
    ``linear``: global max-pool, one bias-free Linear and a fixed output ``scale`` (the
    speed-run networks' head: with the scale, the logits start small whatever the width).
    """

    type: str = "imagenet"
    hidden: int = 4096
    num_hidden: int = 2
    dropout: float = 0.5
    pool_size: int = 7  # imagenet head only: the adaptive pool's output side
    scale: float = 1.0  # linear head only: logits = scale * (W x)

    def __post_init__(self):
        if self.type not in HEAD_TYPES:
            raise SpecError(f"head type must be one of {HEAD_TYPES}, got {self.type!r}{_suggest(str(self.type), HEAD_TYPES)}")
        if self.hidden < 1 or self.num_hidden < 0 or self.pool_size < 1:
            raise SpecError(
                f"head sizes must be positive: hidden={self.hidden}, num_hidden={self.num_hidden}, pool_size={self.pool_size}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise SpecError(f"head dropout must be in [0, 1), got {self.dropout}")
        if not self.scale > 0:
            raise SpecError(f"head scale must be positive, got {self.scale}")
        if self.scale != 1.0 and self.type != "linear":
            raise SpecError(f"head scale applies to the 'linear' head only (this head is {self.type!r}); remove it")


HEAD_DEFAULTS = {
    "imagenet": HeadSpec("imagenet", hidden=4096, num_hidden=2),
    "cifar": HeadSpec("cifar", hidden=512, num_hidden=2),
    "gap": HeadSpec("gap", num_hidden=0),
    "linear": HeadSpec("linear", num_hidden=0),
}


def parse_head(head: Any, where: str = "head") -> HeadSpec:
    """A head type name (its defaults) or a mapping (defaults of its ``type`` overridden)."""
    if isinstance(head, HeadSpec):
        return head
    if isinstance(head, str):
        if head not in HEAD_DEFAULTS:
            raise SpecError(f"{where}: unknown head {head!r}{_suggest(head, HEAD_TYPES)}; valid: {', '.join(HEAD_TYPES)}")
        return HEAD_DEFAULTS[head]
    if isinstance(head, dict):
        base = HEAD_DEFAULTS.get(head.get("type", "imagenet"), HeadSpec())
        return strict_init(HeadSpec, {**dataclasses.asdict(base), **head}, where)
    raise SpecError(f"{where}: expected a head type name or a mapping, got {head!r}")


@dataclass(frozen=True)
class VGGConfig:
    """Everything needed to build (and rebuild from a checkpoint) one VGG network."""

    blocks: tuple[BlockSpec, ...]
    head: HeadSpec = field(default_factory=HeadSpec)
    num_classes: int = 1000
    in_chans: int = 3
    input_size: int = 224  # side of the (square) training input, in pixels
    batch_norm: bool = False
    lrn: bool = False  # local response normalisation after the first conv (config A-LRN)
    width: float = 1.0  # multiplier for every conv width
    init: str = "kaiming"  # kaiming: He-normal convs; paper: N(0, 0.01) everywhere; dirac: see VGG.reset_parameters
    # The speed-run layout (Page 2018; Jordan 2024), all off by default:
    whiten: int = 0  # side of a frozen patch-whitening first layer (2 in vgg_fast); 0: none
    whiten_eps: float = 5e-4  # added to the patch covariance's eigenvalues before whitening
    pool_first: bool = False  # pool right after each block's first conv (conv-pool-BN-act), on 1/4 of the pixels
    activation: str = "relu"  # relu or gelu
    conv_bias: bool = True  # False for convs followed by BatchNorm, which cancels a bias anyway
    bn_momentum: float = 0.1  # PyTorch convention: weight of the new batch in the running statistics
    bn_eps: float = 1e-5
    name: str = "custom"

    def __post_init__(self):
        if not self.blocks:
            raise SpecError("a VGG needs at least one block")
        if self.num_classes < 1 or self.in_chans < 1:
            raise SpecError(f"num_classes and in_chans must be positive, got {self.num_classes}, {self.in_chans}")
        if not (math.isfinite(self.width) and 0 < self.width <= MAX_WIDTH):
            raise SpecError(
                f"width must be a number in (0, {MAX_WIDTH}] (a multiplier of every conv's channels; 1 is the paper's), got {self.width}"
            )
        if self.init not in WEIGHT_INITS:
            raise SpecError(f"init must be one of {WEIGHT_INITS}, got {self.init!r}")
        if self.activation not in ACTIVATIONS:
            raise SpecError(f"activation must be one of {ACTIVATIONS}, got {self.activation!r}")
        if self.whiten < 0 or self.whiten_eps <= 0:
            raise SpecError(
                f"whiten must be >= 0 (0: no whitening layer) and whiten_eps > 0, got {self.whiten}, {self.whiten_eps}"
            )
        if not 0.0 <= self.bn_momentum <= 1.0 or self.bn_eps <= 0:
            raise SpecError(f"bn_momentum must be in [0, 1] and bn_eps > 0, got {self.bn_momentum}, {self.bn_eps}")
        if self.lrn and self.batch_norm:
            raise SpecError("lrn and batch_norm are alternatives: set only one of them")
        if self.input_size < self.min_input_size:
            raise SpecError(
                f"input_size {self.input_size} is too small for {self.name}: its {self.num_pools} "
                f"max-pools need at least {self.min_input_size}x{self.min_input_size}"
            )

    @property
    def num_pools(self) -> int:
        return sum(b.pool == "max" for b in self.blocks)

    @property
    def min_input_size(self) -> int:
        return 2**self.num_pools + max(self.whiten - 1, 0)

    @property
    def whiten_channels(self) -> int:
        """The whitening layer's outputs: every eigen-direction of a patch, with both signs."""
        return 2 * self.in_chans * self.whiten**2

    def feature_side(self, side: int | None = None) -> int:
        """Side of the last conv map for an input of ``side`` (default ``input_size``)."""
        side = self.input_size if side is None else side
        return (side - max(self.whiten - 1, 0)) // 2**self.num_pools

    def conv_outputs(self, side: int | None = None) -> int:
        """Values the conv layers output for one image of ``side`` pixels (default ``input_size``),
        summed over layers: the scale of the activation memory training keeps for the backward pass."""
        s = self.input_size if side is None else side
        total = 0
        if self.whiten:
            s -= self.whiten - 1
            total += self.whiten_channels * s * s
        for block in self.blocks:
            for i, conv in enumerate(block.convs):
                if block.pool == "max" and self.pool_first and i == 1:
                    s //= 2
                total += self.scaled(conv.out_channels) * s * s
            if block.pool == "max" and not (self.pool_first and len(block.convs) > 1):
                s //= 2
        return total

    def scaled(self, channels: int) -> int:
        return max(1, int(round(channels * self.width)))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict, where: str = "model spec") -> VGGConfig:
        """Validate a plain mapping (YAML, JSON, a checkpoint) into a config."""
        if not isinstance(data, dict):
            raise SpecError(f"{where}: expected a mapping, got {type(data).__name__}")
        d = checked(cls, data, SpecError, section=where, skip=("blocks", "head"))
        if "blocks" not in d:
            raise SpecError(f"{where}: 'blocks' is required (a list of blocks, each a list of conv widths)")
        if not isinstance(d["blocks"], (list, tuple)):
            raise SpecError(f"{where}.blocks: expected a list, got {d['blocks']!r}")
        d["blocks"] = tuple(BlockSpec.parse(b, f"{where}.blocks[{i}]") for i, b in enumerate(d["blocks"]))
        d["head"] = parse_head(d.get("head", "imagenet"), f"{where}.head")
        return cls(**d)

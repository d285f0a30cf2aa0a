"""The one VGG class: every configuration is a ``VGGConfig`` turned into modules here."""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .spec import SpecError, VGGConfig


class PatchWhitening(nn.Module):
    """A first layer that whitens every ``kernel`` x ``kernel`` patch (Page 2018; Jordan 2024).

    Its filters are the eigenvectors of the training patches' covariance, each divided by the
    square root of its eigenvalue, once with each sign (so a ReLU/GELU after it loses nothing).
    The filters are a buffer, never trained; the bias is a parameter. :meth:`fit` sets both from
    training images; until then the filters pass the patch's pixels through unchanged.
    """

    weight: torch.Tensor  # a buffer (register_buffer), which the type checker cannot see

    def __init__(self, in_chans: int, kernel: int, eps: float):
        super().__init__()
        self.kernel, self.eps = kernel, eps
        dim = in_chans * kernel * kernel
        self.register_buffer("weight", torch.zeros(2 * dim, in_chans, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(2 * dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        dim = self.weight.shape[0] // 2
        eye = torch.eye(dim).view(self.weight[:dim].shape)
        with torch.no_grad():
            self.weight.copy_(torch.cat([eye, -eye]))
            self.bias.zero_()

    def patches(self, images: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> every patch flattened as the filters are, (N * H' * W', C * k * k)."""
        k, c = self.kernel, images.shape[1]
        p = images.unfold(2, k, 1).unfold(3, k, 1)  # (N, C, H', W', k, k)
        return p.permute(0, 2, 3, 1, 4, 5).reshape(-1, c * k * k)

    @torch.no_grad()
    def fit(self, images: torch.Tensor) -> None:
        """Whiten the patches of ``images`` (normalised floats, as the model will see them):
        afterwards the first half of the outputs has zero mean and identity covariance on them."""
        x = self.patches(images.double())
        mean = x.mean(0)
        cov = torch.cov(x.T)
        eigvals, eigvecs = torch.linalg.eigh(cov)
        w = eigvecs.T / (eigvals.clamp_min(0) + self.eps).sqrt()[:, None]  # rows whiten
        b = -(w @ mean)
        self.weight.copy_(torch.cat([w, -w]).view(self.weight.shape).to(self.weight))
        self.bias.copy_(torch.cat([b, -b]).to(self.bias))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight.to(x.dtype), self.bias.to(x.dtype))

    def extra_repr(self) -> str:
        return f"{self.weight.shape[1]}, {self.weight.shape[0]}, kernel_size={self.kernel}, frozen filters"


class Scale(nn.Module):
    """Multiply by a fixed number (the ``linear`` head's output scale)."""

    def __init__(self, scale: float):
        super().__init__()
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale

    def extra_repr(self) -> str:
        return f"{self.scale:g}"


def _activation(cfg: VGGConfig) -> nn.Module:
    return nn.GELU() if cfg.activation == "gelu" else nn.ReLU(inplace=True)


def _block_modules(cfg: VGGConfig, block_index: int, in_ch: int) -> tuple[nn.Sequential, int]:
    """Modules of one block with stable names: conv1, bn1, relu1, [lrn], conv2, ..., pool.

    With ``pool_first`` the pool comes right after conv1 (conv1, pool, bn1, relu1, conv2, ...);
    the activation is named after its kind (``gelu1`` with ``activation: gelu``)."""
    block = cfg.blocks[block_index]
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    pool = nn.MaxPool2d(kernel_size=2, stride=2) if block.pool == "max" else None
    for i, conv in enumerate(block.convs, start=1):
        out_ch = cfg.scaled(conv.out_channels)
        pad = conv.kernel_size // 2
        layers[f"conv{i}"] = nn.Conv2d(in_ch, out_ch, conv.kernel_size, padding=pad, bias=cfg.conv_bias)
        if pool is not None and cfg.pool_first and i == 1:
            layers["pool"] = pool
        if cfg.batch_norm:
            layers[f"bn{i}"] = nn.BatchNorm2d(out_ch, eps=cfg.bn_eps, momentum=cfg.bn_momentum)
        layers[f"{cfg.activation}{i}"] = _activation(cfg)
        if cfg.lrn and block_index == 0 and i == 1:
            # AlexNet's constants, which the VGG paper reuses for configuration A-LRN.
            layers["lrn"] = nn.LocalResponseNorm(size=5, alpha=1e-4, beta=0.75, k=2.0)
        in_ch = out_ch
    if pool is not None and "pool" not in layers:
        layers["pool"] = pool
    return nn.Sequential(layers), in_ch


def _head_modules(cfg: VGGConfig, in_ch: int) -> tuple[nn.Sequential, int]:
    """Head modules; the last one, ``classifier``, maps the embedding to logits."""
    head = cfg.head
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    if head.type == "imagenet":
        layers["pool"] = nn.AdaptiveAvgPool2d(head.pool_size)
        features = in_ch * head.pool_size**2
    elif head.type == "cifar":
        side = cfg.feature_side()
        features = in_ch * side * side  # computed from the input size, never hard-coded
    elif head.type == "linear":
        layers["pool"] = nn.AdaptiveMaxPool2d(1)
        features = in_ch
    else:  # gap
        layers["pool"] = nn.AdaptiveAvgPool2d(1)
        features = in_ch
    layers["flatten"] = nn.Flatten(1)
    hidden_bn = head.type == "cifar" and cfg.batch_norm
    n_hidden = 0 if head.type in ("gap", "linear") else head.num_hidden
    for i in range(1, n_hidden + 1):
        layers[f"fc{i}"] = nn.Linear(features, head.hidden)
        if hidden_bn:
            layers[f"bn{i}"] = nn.BatchNorm1d(head.hidden)
        layers[f"relu{i}"] = nn.ReLU(inplace=True)
        layers[f"drop{i}"] = nn.Dropout(head.dropout)
        features = head.hidden
    layers["classifier"] = nn.Linear(features, cfg.num_classes, bias=head.type != "linear")
    if head.type == "linear":
        layers["scale"] = Scale(head.scale)
    return nn.Sequential(layers), features


def check_input_shape(cfg: VGGConfig, x: torch.Tensor) -> None:
    """One-line errors for input the model cannot take (a plain function, so that FX tracing of
    the model keeps it as one call: see vgglab.models.features). A TorchScript trace records no Python
    check (it would only warn that each is frozen): the traced module takes the traced size."""
    if torch.jit.is_tracing():
        return
    if x.dim() != 4 or x.shape[1] != cfg.in_chans:
        raise SpecError(f"{cfg.name} expects input of shape (N, {cfg.in_chans}, H, W), got {tuple(x.shape)}")
    h, w = x.shape[-2:]
    if min(h, w) < cfg.min_input_size:
        raise SpecError(
            f"input {h}x{w} is too small for {cfg.name}: its {cfg.num_pools} max-pools "
            f"need at least {cfg.min_input_size}x{cfg.min_input_size}"
        )
    if cfg.head.type == "cifar" and (h != cfg.input_size or w != cfg.input_size):
        raise SpecError(
            f"{cfg.name} has a 'cifar' head built for {cfg.input_size}x{cfg.input_size} input, got "
            f"{h}x{w}: create it with input_size={h}, or use head='gap' or 'imagenet' for any size"
        )


def config_of(model: nn.Module) -> VGGConfig:
    """The :class:`VGGConfig` of a VGG, typed (``nn.Module`` attributes read as ``Tensor | Module``)."""
    config = getattr(model, "config", None)
    if not isinstance(config, VGGConfig):
        raise TypeError(f"{type(model).__name__} is not a vgglab VGG: it has no VGGConfig")
    return config


class VGG(nn.Module):
    """A VGG network built from a :class:`VGGConfig`.

    ``forward`` returns logits (no softmax: the loss applies it). Layers are named
    ``features.block{b}.{conv,bn,relu}{i}`` / ``.pool`` and ``head.{fc,bn,relu,drop}{i}`` /
    ``head.classifier`` so hooks can address them.
    """

    # set by vgglab.load_model and torchvision weights (not by the constructor): the classes and input
    # transform the weights were trained with (a vgglab.run.meta.RunMeta, a layer above the models), and
    # that transform as a callable (vgglab.evaluate.load.Preprocess)
    meta: Any
    preprocess: Callable[[Any], torch.Tensor]

    def __init__(self, config: VGGConfig):
        super().__init__()
        self.config = config
        blocks: OrderedDict[str, nn.Module] = OrderedDict()
        ch = config.in_chans
        if config.whiten:  # whitening, then the activation (which the +/- filter pairs make lossless)
            blocks["whiten"] = PatchWhitening(ch, config.whiten, config.whiten_eps)
            blocks[f"whiten_{config.activation}"] = _activation(config)
            ch = config.whiten_channels
        for b in range(len(config.blocks)):
            blocks[f"block{b + 1}"], ch = _block_modules(config, b, ch)
        self.features = nn.Sequential(blocks)
        self.num_features = ch  # channels of the final conv map
        self.head, self.embed_dim = _head_modules(config, ch)
        self.reset_parameters()

    # -- construction -------------------------------------------------------------------
    def reset_parameters(self) -> None:
        """kaiming / paper as documented on ``VGGConfig.init``. ``dirac`` (the speed-run init):
        PyTorch's default init for every layer, then each conv's first ``in_channels`` filters
        set exactly to the identity, so at the start each conv passes its input through on those outputs."""
        paper = self.config.init == "paper"
        if self.config.init == "dirac":
            for m in self.modules():
                if isinstance(m, (nn.Conv2d, nn.Linear, nn.modules.batchnorm._BatchNorm, PatchWhitening)):
                    m.reset_parameters()
                if isinstance(m, nn.Conv2d):
                    with torch.no_grad():
                        nn.init.dirac_(m.weight[: m.in_channels])
            return
        for m in self.modules():
            if isinstance(m, PatchWhitening):
                m.reset_parameters()
            elif isinstance(m, nn.Conv2d):
                if paper:
                    nn.init.normal_(m.weight, 0.0, 0.01)
                else:
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the class layer (fresh N(0, 0.01) weights) for a new number of classes."""
        old = self.head.classifier
        assert isinstance(old, nn.Linear)  # every head ends in one
        new = nn.Linear(old.in_features, num_classes, bias=old.bias is not None).to(old.weight.device, old.weight.dtype)
        nn.init.normal_(new.weight, 0.0, 0.01)
        if new.bias is not None:
            nn.init.zeros_(new.bias)
        self.head.classifier = new
        self.config = dataclasses.replace(self.config, num_classes=num_classes)

    # -- forward ------------------------------------------------------------------------
    def check_input(self, x: torch.Tensor) -> None:
        check_input_shape(self.config, x)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> the last block's map (N, num_features, H / 2**pools, W / 2**pools)."""
        self.check_input(x)
        return self.features(x)

    def forward_head(self, f: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Map -> logits (N, num_classes), or the penultimate embedding (N, embed_dim)."""
        for name, layer in self.head.named_children():
            if name == "classifier" and pre_logits:
                break
            f = layer(f)
        return f

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def layer_names(self) -> list[str]:
        """Stable names of every leaf layer, in forward order."""
        return [n for n, m in self.named_modules() if n and not list(m.children())]

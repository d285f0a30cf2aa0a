"""Per-layer analysis of a VGG: shapes, parameters, MACs, memory, receptive field."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..memory import check_fits
from .vgg import VGG, PatchWhitening


def _geometry(module: nn.Module) -> tuple[int, int] | None:
    """(kernel, stride) of a layer that changes the receptive field, else None."""
    if isinstance(module, (nn.Conv2d, nn.MaxPool2d)):
        k = module.kernel_size if isinstance(module.kernel_size, int) else module.kernel_size[0]
        s = module.stride if isinstance(module.stride, int) else module.stride[0]
        return k, s
    if isinstance(module, PatchWhitening):  # a frozen 'valid' conv, stride 1
        return module.kernel, 1
    return None


def summarize(model: VGG, input_size: int | None = None) -> dict:
    """Analyse ``model`` on one (1, C, S, S) input; S defaults to the model's input size.

    MACs (multiply-accumulates) are half of torch's FLOP count. Receptive field and stride
    (jump) are in input pixels, for the conv part; after the head's pooling every unit sees
    the whole image, so those rows carry None. Activation memory is per image, fp32.
    """
    cfg = model.config
    size = input_size or cfg.input_size
    # one image's input and conv outputs in fp32 (each kept for the hooks), before any allocation
    check_fits(
        f"a summary of {cfg.name} at {size}x{size}",
        4 * (cfg.in_chans * size * size + 2 * cfg.conv_outputs(size)),
        "give a smaller --input-size",
        device=next(model.parameters()).device,
    )
    shapes: dict[str, tuple[int, ...]] = {}
    hooks = []
    leaves = [(n, m) for n, m in model.named_modules() if n and not list(m.children())]
    for name, module in leaves:
        hooks.append(
            module.register_forward_hook(lambda mod, inp, out, name=name: shapes.__setitem__(name, tuple(out.shape[1:])))
        )
    was_training = model.training
    model.eval()  # BatchNorm1d in training mode refuses a batch of one
    try:
        x = torch.zeros(1, cfg.in_chans, size, size, device=next(model.parameters()).device)
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    flops = {k.removeprefix(f"{type(model).__name__}."): sum(v.values()) for k, v in counter.get_flop_counts().items()}

    layers = []
    rf, jump = 1, 1
    for name, module in leaves:
        geo = _geometry(module)
        in_features = name.startswith("features.")
        if geo:
            k, s = geo
            rf += (k - 1) * jump
            jump *= s
        shape = shapes[name]
        numel = 1
        for d in shape:
            numel *= d
        layers.append(
            {
                "name": name,
                "type": type(module).__name__,
                "output_shape": list(shape),
                "params": sum(p.numel() for p in module.parameters(recurse=False)),
                "macs": flops.get(name, 0) // 2,
                "activation_bytes": numel * 4,
                "receptive_field": rf if in_features else None,
                "stride": jump if in_features else None,
            }
        )
    blocks = {f"features.{n}": sum(p.numel() for p in b.parameters()) for n, b in model.features.named_children()}
    blocks["head"] = sum(p.numel() for p in model.head.parameters())
    total = sum(p.numel() for p in model.parameters())
    return {
        "model": cfg.name,
        "input_size": [cfg.in_chans, size, size],
        "num_classes": cfg.num_classes,
        "head": cfg.head.type,
        "total_params": total,
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "macs": flops.get("Global", 0) // 2,
        "size_mb": total * 4 / 2**20,
        "activation_mb": sum(row["activation_bytes"] for row in layers) / 2**20,
        "blocks": blocks,
        "layers": layers,
    }


def _human(n: float) -> str:
    for unit in ("", "K", "M", "G", "T"):
        if abs(n) < 1000:
            return f"{n:.4g}{unit}"
        n /= 1000
    return f"{n:.4g}P"


def format_summary(s: dict) -> str:
    """A fixed-width table of :func:`summarize`'s result."""
    header = f"{'layer':<26}{'output':>16}{'params':>12}{'MACs':>10}{'act KB':>10}{'RF':>6}{'stride':>8}"
    lines = [
        f"{s['model']}: input {'x'.join(map(str, s['input_size']))}, {s['num_classes']} classes, {s['head']} head",
        header,
        "-" * len(header),
    ]
    for row in s["layers"]:
        rf = "" if row["receptive_field"] is None else str(row["receptive_field"])
        st = "" if row["stride"] is None else str(row["stride"])
        lines.append(
            f"{row['name']:<26}{'x'.join(map(str, row['output_shape'])):>16}{row['params']:>12,}"
            f"{_human(row['macs']):>10}{row['activation_bytes'] / 1024:>10.1f}{rf:>6}{st:>8}"
        )
    lines.append("-" * len(header))
    for name, n in s["blocks"].items():
        lines.append(f"{name:<26}{n:>28,}")
    lines.append(
        f"total params {s['total_params']:,} (trainable {s['trainable_params']:,}), "
        f"{_human(s['macs'])} MACs, fp32 weights {s['size_mb']:.1f} MB, activations {s['activation_mb']:.1f} MB per image"
    )
    return "\n".join(lines)

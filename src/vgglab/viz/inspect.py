"""Looking inside a VGG: activation maps, first-layer filters and Grad-CAM, by stable layer names."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from ..errors import VgglabError
from ..evaluate.inference import load_inference
from ..evaluate.predict import load_image
from ..files import check_output_dir
from ..models import VGG
from ..models.layers import check_layers, default_layers, last_activation_name
from .plots import _save, _to_hwc, plt


@torch.inference_mode()
def activations(model: VGG, x: torch.Tensor, names: list[str]) -> dict[str, torch.Tensor]:
    """Outputs of the named layers for input ``x`` (cloned: the ReLUs work in place)."""
    check_layers(model, names)
    modules = dict(model.named_modules())
    got: dict[str, torch.Tensor] = {}
    hooks = [modules[n].register_forward_hook(lambda m, i, o, n=n: got.__setitem__(n, o.detach().clone())) for n in names]
    try:
        model.eval()(x)
    finally:
        for h in hooks:
            h.remove()
    return got


def plot_activations(acts: dict[str, torch.Tensor], path: str | Path | None = None, channels: int = 16):
    """One row per layer: the first ``channels`` channels of the first image's maps."""
    fig, axes = plt.subplots(len(acts), channels, figsize=(1.1 * channels, 1.3 * len(acts)), squeeze=False)
    for r, (name, a) in enumerate(acts.items()):
        maps = a[0] if a.dim() == 4 else a[0].view(-1, 1, 1)
        for c in range(channels):
            ax = axes[r, c]
            ax.axis("off")
            if c < maps.shape[0]:
                ax.imshow(maps[c].float().cpu().numpy(), cmap="viridis")
        axes[r, 0].set_title(f"{name} {tuple(a.shape[1:])}", fontsize=8, loc="left")
    return _save(fig, path)


def plot_filters(model: VGG, path: str | Path | None = None, max_filters: int = 64):
    """First-layer kernels as tiles (RGB for colour input), each scaled to [0, 1]: the 3x3 convs
    of block1.conv1, or the patch-whitening filters when the model starts with them."""
    name = "whiten" if model.config.whiten else "block1.conv1"
    w = model.features.get_submodule(name).state_dict()["weight"].float().cpu()[:max_filters]  # a buffer or a parameter
    lo = w.amin((1, 2, 3), keepdim=True)
    hi = w.amax((1, 2, 3), keepdim=True)
    w = (w - lo) / (hi - lo).clamp_min(1e-8)
    cols = 8
    rows = -(-len(w) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols, rows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < len(w):
            ax.imshow(
                _to_hwc(w[i] if w.shape[1] in (1, 3) else w[i, :1]),
                cmap="gray" if w.shape[1] != 3 else None,
                interpolation="nearest",
                vmin=0,
                vmax=1,
            )
    fig.suptitle(f"{name} filters ({w.shape[1]} input channels)")
    return _save(fig, path)


def grad_cam(
    model: VGG, x: torch.Tensor, target: torch.Tensor | None = None, layer: str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Grad-CAM (Selvaraju et al. 2017) heatmaps (N, H, W) in [0, 1] and the classes explained.

    Channel weights are the spatial mean of d(class logit)/d(activation); the map is the ReLU of
    the weighted channel sum, upsampled to the input size. ``target`` defaults to the prediction.
    """
    layer = layer or last_activation_name(model)
    module = dict(model.named_modules())[check_layers(model, [layer])[0]]
    store: dict[str, torch.Tensor] = {}
    hook = module.register_forward_hook(lambda m, i, o: store.__setitem__("a", o))
    model.eval()
    try:
        with torch.enable_grad():
            logits = model(x.detach().requires_grad_(False).clone())
            target = logits.argmax(1) if target is None else target
            score = logits.gather(1, target[:, None]).sum()
            grads = torch.autograd.grad(score, store["a"])[0]
    finally:
        hook.remove()
    weights = grads.mean((2, 3), keepdim=True)
    cam = F.relu((weights * store["a"]).sum(1, keepdim=True))
    cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    cam = cam / cam.flatten(1).amax(1).clamp_min(1e-8)[:, None, None]
    return cam.detach(), target.detach()


def plot_grad_cam(images: torch.Tensor, cams: torch.Tensor, titles: list[str], path: str | Path | None = None):
    """Each image (in [0, 1]) and its heatmap overlaid (jet, half transparent)."""
    n = len(images)
    fig, axes = plt.subplots(2, n, figsize=(2 * n, 4.2), squeeze=False)
    for i in range(n):
        img = _to_hwc(images[i])
        for ax in axes[:, i]:
            ax.axis("off")
            ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1)
        axes[0, i].set_title(titles[i], fontsize=8)
        axes[1, i].imshow(cams[i].cpu().numpy(), cmap="jet", alpha=0.5, vmin=0, vmax=1)
    fig.suptitle("Grad-CAM for the predicted class")
    return _save(fig, path)


def inspect_checkpoint(
    checkpoint, image: str | Path, layers: list[str] | None = None, out: str | Path = "inspect", device: str = "auto"
) -> dict[str, Path]:
    """Activation maps, first-layer filters and Grad-CAM of one image file, as PNGs in ``out``."""
    out = check_output_dir(out)
    inf = load_inference(checkpoint, device)
    layers = check_layers(inf.model, layers) if layers else default_layers(inf.model)
    try:
        raw = load_image(inf, Path(image))
    except Exception as exc:
        raise VgglabError(f"cannot read image {image}: {exc}") from None
    x = inf.prepare(raw)
    cams, target = grad_cam(inf.model, x)
    prob = inf.model(x).float().softmax(1)[0, target[0]].item()
    return {
        "activations": plot_activations(activations(inf.model, x, layers), out / "activations.png"),
        "filters": plot_filters(inf.model, out / "filters.png"),
        "gradcam": plot_grad_cam(
            inf.denormalize(x).cpu(), cams, [f"{inf.classes[target[0]]} {100 * prob:.0f}%"], out / "gradcam.png"
        ),
    }

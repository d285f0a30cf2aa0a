"""The speed-run model parts: patch whitening, pool-first blocks, dirac init, the linear head."""

import pytest
import torch
from torch import nn

from vgglab.models import SpecError, create_model, create_model_from_spec
from vgglab.models.vgg import PatchWhitening


def _correlated_images(n=200, size=16):
    """Images whose neighbouring pixels and channels are strongly correlated, like photos."""
    g = torch.Generator().manual_seed(0)
    base = torch.randn(n, 1, size // 4, size // 4, generator=g)
    smooth = nn.functional.interpolate(base, size=size, mode="bilinear", align_corners=False)
    colour = torch.tensor([1.0, 0.8, 0.5]).view(1, 3, 1, 1)
    return smooth * colour + 0.1 * torch.randn(n, 3, size, size, generator=g) + 0.3


def test_whitening_output_covariance_is_identity_on_training_patches():
    x = _correlated_images()
    layer = PatchWhitening(3, 2, eps=1e-6)
    raw = torch.cov(layer.patches(x.double()).T)
    assert (
        raw.diagonal().max() / raw.diagonal().min() > 3 or (raw - torch.diag(raw.diagonal())).abs().max() > 0.3
    )  # far from white
    layer.fit(x)
    out = layer(x)  # (N, 24, 15, 15): 12 whitened directions, then their negatives
    first = out[:, :12].permute(0, 2, 3, 1).reshape(-1, 12).double()
    assert first.mean(0).abs().max() < 1e-4
    assert torch.allclose(torch.cov(first.T), torch.eye(12, dtype=torch.float64), atol=2e-3)
    assert torch.allclose(out[:, 12:], -out[:, :12], atol=1e-5)


def test_whitening_filters_are_a_buffer_and_only_the_bias_trains():
    model = create_model("vgg_fast")
    names = dict(model.named_parameters())
    assert "features.whiten.weight" not in names and "features.whiten.bias" in names
    assert "features.whiten.weight" in model.state_dict()
    assert all(p.requires_grad for p in model.parameters())
    assert sum(p.numel() for p in model.parameters()) == 1_972_504  # as README's model table says
    # before fitting, the filters pass each patch's pixels through (with both signs)
    w = model.features.whiten.weight.view(24, 12)
    assert torch.equal(w[:12], torch.eye(12)) and torch.equal(w[12:], -torch.eye(12))


def test_vgg_fast_layout_dirac_init_and_scaled_linear_head():
    torch.manual_seed(0)
    model = create_model("vgg_fast")
    block = model.features.block2
    assert list(block._modules) == ["conv1", "pool", "bn1", "gelu1", "conv2", "bn2", "gelu2"]
    assert block.conv1.bias is None and block.bn1.momentum == 0.4 and block.bn1.eps == 1e-12
    # dirac: conv2 (256 -> 256) starts as the identity on its input, plus nothing else on those filters
    conv = block.conv2
    x = torch.randn(2, 256, 7, 7)
    assert torch.allclose(conv(x), x, atol=1e-6)
    # block2.conv1 (64 -> 256): the first 64 filters copy the input, the rest keep PyTorch's default init
    out = block.conv1(torch.randn(2, 64, 7, 7))
    assert out.shape[1] == 256
    assert block.conv1.weight[64:].abs().sum() > 0
    head = model.head
    assert head.classifier.bias is None and head.scale.scale == pytest.approx(1 / 9)
    f = torch.randn(3, 256, 3, 3)
    assert torch.allclose(model.forward_head(f), head.classifier(f.amax((2, 3))) / 9, atol=1e-6)


def test_whitening_is_followed_by_the_activation_and_counts_in_the_receptive_field():
    from vgglab.models import summarize

    model = create_model("vgg_fast")
    assert list(model.features._modules)[:3] == ["whiten", "whiten_gelu", "block1"]
    rf = {layer["name"]: layer["receptive_field"] for layer in summarize(model)["layers"]}
    assert rf["features.whiten"] == 2 and rf["features.block1.conv1"] == 4  # 2x2 patches, then a 3x3 conv


def test_vgg_fast_takes_any_input_size_and_counts_the_whitening_in_the_minimum():
    model = create_model("vgg_fast", width=0.25).eval()
    assert model.config.min_input_size == 9  # three 2x2 pools after a 2x2 valid conv
    assert model.config.feature_side(32) == 3
    for side in (9, 32, 48):
        assert model(torch.randn(1, 3, side, side)).shape == (1, 10)
    with pytest.raises(SpecError, match="at least 9x9"):
        model(torch.randn(1, 3, 8, 8))


def test_widths_and_depths_are_options():
    model = create_model("vgg_fast", blocks=[[32], [64, 64, 64], [128]], activation="relu")
    assert [len(b.convs) for b in model.config.blocks] == [1, 3, 1]
    assert model.features.block2.conv3.out_channels == 64
    assert model.head.classifier.in_features == 128
    assert isinstance(model.features.block1.relu1, nn.ReLU)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_spec_errors_name_the_fix():
    with pytest.raises(SpecError, match="activation"):
        create_model("vgg_fast", activation="swish")
    with pytest.raises(SpecError, match="'linear' head only"):
        create_model("vgg11", scale=0.5)
    with pytest.raises(SpecError, match="blocks"):
        create_model("vgg_fast", blocks=64)
    spec = {
        "blocks": [[8], [16]],
        "head": {"type": "linear", "scale": 0.5},
        "num_classes": 3,
        "input_size": 16,
        "batch_norm": True,
        "whiten": 2,
        "pool_first": True,
        "conv_bias": False,
    }
    model = create_model_from_spec(spec)
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 3)

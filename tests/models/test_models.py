"""Behaviour every registered model must have (timm/torchvision-style parametrized tests)."""

import pytest
import torch

from vgglab.models import create_model, get_entry, list_models

ALL = list_models()
_cache: dict = {}


def built(name, **options):
    """Each big model is built once for this module."""
    key = (name, tuple(sorted(options.items())))
    if key not in _cache:
        torch.manual_seed(0)
        _cache[key] = create_model(name, **options)
    return _cache[key]


@pytest.fixture(scope="module", autouse=True)
def _free_models():
    yield
    _cache.clear()


def _input_size(name):
    return get_entry(name).config.input_size if get_entry(name).config.head.type == "cifar" else 32


@pytest.mark.parametrize("name", ALL)
def test_forward_backward_every_parameter_gets_a_gradient(name):
    model = built(name).train()
    x = torch.randn(2, 3, _input_size(name), _input_size(name))
    out = model(x)
    assert out.shape == (2, model.config.num_classes)
    assert torch.isfinite(out).all()
    out.logsumexp(1).sum().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"{pname} got no gradient"
    model.zero_grad(set_to_none=True)


@pytest.mark.parametrize("name", ALL)
def test_pre_logits_and_features(name):
    model = built(name).eval()
    x = torch.randn(2, 3, _input_size(name), _input_size(name))
    with torch.inference_mode():
        f = model.forward_features(x)
        emb = model.forward_head(f, pre_logits=True)
        logits = model.forward_head(f)
        again = model.head.classifier(emb)
        if "scale" in model.head._modules:  # the linear head scales its logits
            again = model.head.scale(again)
    side = model.config.feature_side(_input_size(name))
    assert f.shape == (2, model.num_features, side, side)
    assert emb.shape == (2, model.embed_dim)
    assert torch.allclose(again, logits)


@pytest.mark.parametrize("name", ALL)
def test_grayscale_input_and_head_reset(name):
    model = create_model(name, in_chans=1, num_classes=3, width=0.125)
    assert model(torch.randn(2, 1, _input_size(name), _input_size(name))).shape == (2, 3)
    model.reset_classifier(7)
    assert model.config.num_classes == 7
    assert model(torch.randn(2, 1, _input_size(name), _input_size(name))).shape == (2, 7)


@pytest.mark.parametrize("name", ALL)
def test_layer_names_are_stable_and_addressable(name):
    with torch.device("meta"):
        model = create_model(name)
    names = model.layer_names()
    first = "features.whiten" if model.config.whiten else "features.block1.conv1"
    assert names[0] == first
    assert names[-1] == ("head.scale" if model.config.head.type == "linear" else "head.classifier")
    modules = dict(model.named_modules())
    assert all(n in modules for n in names)


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in ALL if get_entry(n).config.head.type == "imagenet"])
def test_forward_at_224(name):
    model = built(name).eval()
    with torch.inference_mode():
        out = model(torch.randn(1, 3, 224, 224))
    assert out.shape == (1, 1000) and torch.isfinite(out).all()

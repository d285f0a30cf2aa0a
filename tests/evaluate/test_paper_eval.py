"""The VGG paper's evaluation (sec. 3.2, 4.2-4.3): dense over whole rescaled images, the 5x5
multi-crop grid, and both averaged, checked against computations written out by hand."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torchvision.transforms.functional import resize

from vgglab.data.views import grid_offsets, multicrop_views
from vgglab.evaluate.tta import dense_logits, scale_probs, tta_probs
from vgglab.models import create_model


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = create_model("vgg11", width=0.125, num_classes=10).eval()  # imagenet head: 7x7 pool, FC 4096 x2
    for p in m.parameters():  # larger weights than the default init, so that scores differ between views
        p.data.mul_(2.0)
    return m


def by_hand_dense(model, x: torch.Tensor) -> torch.Tensor:
    """Logits (N, classes): FC layers as 7x7 and 1x1 convolutions over the conv map, written out."""
    fc = [model.head.fc1, model.head.fc2, model.head.classifier]
    f = model.features(x)
    c = f.shape[1]
    y = F.relu(F.conv2d(f, fc[0].weight.view(-1, c, 7, 7), fc[0].bias))  # at 224 the adaptive 7x7 pool is the identity
    y = F.relu(F.conv2d(y, fc[1].weight[:, :, None, None], fc[1].bias))
    score_map = F.conv2d(y, fc[2].weight[:, :, None, None], fc[2].bias)  # (N, classes, h, w)
    assert score_map.shape[-2:] != (1, 1) or x.shape[-2:] == (224, 224)
    return score_map.mean((2, 3))


@torch.inference_mode()
def test_dense_is_the_average_of_hand_computed_score_maps_over_scales_and_flips(model):
    g = torch.Generator().manual_seed(1)
    images = [torch.randn(1, 3, 240, 320, generator=g), torch.randn(1, 3, 301, 257, generator=g)]  # non-square
    scales = [224, 288]
    for x in images:
        expected = []
        for q in scales:
            r = resize(x, [q], antialias=True)
            assert min(r.shape[-2:]) == q and r.shape[-1] != r.shape[-2]  # the aspect is kept
            for v in (r, r.flip(3)):
                expected.append(by_hand_dense(model, v).softmax(1))
        expected = torch.stack(expected).mean(0)
        got = scale_probs(model, {q: resize(x, [q], antialias=True) for q in scales}, "dense", 224)
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(tta_probs(model, x, "dense", 224, scales=scales), expected, atol=1e-5, rtol=1e-4)
    # views really differ: the average is not any single one of them
    r = resize(images[0], [288], antialias=True)
    assert not torch.allclose(by_hand_dense(model, r), by_hand_dense(model, r.flip(3)), atol=1e-4)


@torch.inference_mode()
def test_dense_at_the_training_size_is_the_plain_forward(model):
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(dense_logits(model, x), model(x), atol=1e-5, rtol=1e-4)
    flipped = (model(x).softmax(1) + model(x.flip(3)).softmax(1)) / 2
    torch.testing.assert_close(tta_probs(model, x, "dense", 224, scales=[224]), flipped, atol=1e-6, rtol=1e-4)


def test_grid_offsets_are_the_papers_5x5_with_corners_and_center():
    assert grid_offsets(384, 224, 5) == [0, 40, 80, 120, 160]
    assert grid_offsets(512, 224, 5) == [0, 72, 144, 216, 288]
    assert grid_offsets(256, 224, 3) == [0, 16, 32]
    assert grid_offsets(300, 224, 1) == [38]
    x = torch.arange(384 * 512, dtype=torch.float32).view(1, 1, 384, 512)  # each pixel its own value
    views = list(multicrop_views(x, 224, 5))
    assert len(views) == 50  # 25 crops, each with its mirror
    for v, mirrored in zip(views[::2], views[1::2], strict=True):
        assert v.shape[-2:] == (224, 224) and torch.equal(mirrored, v.flip(3))
    corners = {(int(v[0, 0, 0, 0]) // 512, int(v[0, 0, 0, 0]) % 512) for v in views[::2]}  # each crop's top-left pixel
    assert {(0, 0), (0, 288), (160, 0), (160, 288), (80, 144)} <= corners
    assert len(corners) == 25


@torch.inference_mode()
def test_multicrop_and_dense_plus_multicrop_average_their_views(model):
    x = torch.randn(1, 3, 256, 300, generator=torch.Generator().manual_seed(3))
    scales = [224, 256]
    crops = []
    for q in scales:
        r = resize(x, [q], antialias=True)
        for top in grid_offsets(r.shape[-2], 224, 5):
            for left in grid_offsets(r.shape[-1], 224, 5):
                c = r[..., top : top + 224, left : left + 224]
                crops += [model(c).softmax(1), model(c.flip(3)).softmax(1)]
    assert len(crops) == 100  # 50 per scale
    multi = torch.stack(crops).mean(0)
    scaled = {q: resize(x, [q], antialias=True) for q in scales}
    torch.testing.assert_close(scale_probs(model, scaled, "multicrop", 224, grid=5), multi, atol=1e-6, rtol=1e-4)
    dense = scale_probs(model, scaled, "dense", 224)
    torch.testing.assert_close(
        scale_probs(model, scaled, "dense+multicrop", 224, grid=5), (dense + multi) / 2, atol=1e-6, rtol=1e-4
    )


def test_multicrop_needs_scales_that_hold_a_crop(model):
    from vgglab.errors import VgglabError

    with pytest.raises(VgglabError, match="at least 224"):
        scale_probs(model, {200: torch.zeros(1, 3, 200, 260)}, "multicrop", 224)

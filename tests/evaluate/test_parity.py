"""torchvision's published single-crop figures are reproducible with vgglab: the same pixels and
the same logits as ``weights.transforms()`` and ``torchvision.models.vgg11`` on photos of odd sizes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torchvision.models import VGG11_Weights
from torchvision.transforms.functional import center_crop, pil_to_tensor, resize

from vgglab.data.imagefolder import decode_image
from vgglab.data.stream import StreamSplit
from vgglab.data.views import center_crop as vg_center_crop
from vgglab.evaluate.load import Preprocess
from vgglab.models import create_model
from vgglab.models.torchvision_compat import load_torchvision_weights
from vgglab.pretrained import Pretrained

# odd sides: odd free room on either axis (the rounding of the crop offset), portrait, panorama,
# already-256 shorter sides (no resize), a square
SIDES = [
    (500, 375),
    (333, 517),
    (257, 999),
    (1023, 683),
    (301, 301),
    (256, 391),
    (391, 256),
    (641, 479),
    (225, 300),
    (1200, 259),
    (333, 333),
    (999, 257),
]


def photo(w: int, h: int, seed: int) -> Image.Image:
    """A smooth random photo-like image with some edges (so a one-pixel shift shows)."""
    g = np.random.default_rng(seed)
    low = g.uniform(0, 255, (h // 16 + 2, w // 16 + 2, 3)).astype(np.uint8)
    im = Image.fromarray(low).resize((w, h), Image.BICUBIC)
    arr = np.asarray(im).copy()
    arr[g.integers(0, h, 40), :, :] = g.integers(0, 255, 3)  # stripes: sharp detail
    return Image.fromarray(arr)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    d = tmp_path_factory.mktemp("photos")
    out = []
    for i, (w, h) in enumerate(SIDES):
        p = d / f"p{i}.jpg"
        photo(w, h, i).save(p, quality=90)
        out.append(p)
    return out


def test_single_crop_matches_torchvision_transforms(photos):
    weights = VGG11_Weights.IMAGENET1K_V1
    t = weights.transforms()
    meta = Pretrained("vgg11", weights).meta()
    pre = Preprocess(meta, 3, torch.device("cpu"))
    mean, std = torch.tensor(t.mean).view(3, 1, 1), torch.tensor(t.std).view(3, 1, 1)
    worst = 0.0
    for path in photos:
        with Image.open(path) as im:
            im.load()
            theirs = t(im)  # (3, 224, 224), normalised
            reference = pil_to_tensor(center_crop(resize(im, [256]), [224]))  # the same, in uint8
            ours = pre(im)[0]
        assert ours.shape == theirs.shape == (3, 224, 224)
        # before normalisation, on the [0, 1] scale: within 1/255 (in fact identical)
        worst = max(worst, (ours * std + mean - (theirs * std + mean)).abs().max().item())
        # the cache's and the streamed storage's evaluation squares hold the same crop
        cached = torch.from_numpy(decode_image(path, 256, 224).copy()).permute(2, 0, 1)
        assert torch.equal(vg_center_crop(cached, 224), reference), path.name
        split = StreamSplit(path.parent, [path.name], torch.zeros(1, dtype=torch.long), torch.zeros(1, 2), 256, crop=224)
        assert torch.equal(vg_center_crop(split.images(slice(0, 1))[0], 224), reference), path.name
    assert worst <= 1 / 255 + 1e-6, worst


def test_logits_match_torchvision_vgg11(photos):
    weights = VGG11_Weights.IMAGENET1K_V1
    torch.manual_seed(0)
    reference = torchvision.models.vgg11().eval()  # a fixed random VGG-11
    model = create_model("vgg11")
    load_torchvision_weights(model, reference.state_dict())
    model.eval()
    pre = Preprocess(Pretrained("vgg11", weights).meta(), 3, torch.device("cpu"))
    t = weights.transforms()
    ims = []
    for path in photos[:6]:
        with Image.open(path) as im:
            im.load()
            ims.append(im)
    with torch.inference_mode():
        ours = model(pre(ims))
        theirs = reference(torch.stack([t(im) for im in ims]))
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=0)
    assert torch.equal(ours.argmax(1), theirs.argmax(1))


def test_tensor_input_follows_the_same_geometry():
    """A uint8 tensor is resized by torchvision's tensor resize and cropped at the same offsets."""
    meta = Pretrained("vgg11", VGG11_Weights.IMAGENET1K_V1).meta()
    pre = Preprocess(meta, 3, torch.device("cpu"))
    x = pil_to_tensor(photo(517, 333, 3))
    expected = center_crop(resize(x, [256], antialias=True), [224])
    got = pre(x)[0] * meta.normalization.divisor().view(3, 1, 1) + torch.tensor(meta.normalization.mean).view(3, 1, 1)
    assert (got * 255 - expected.float()).abs().max().item() < 1e-3

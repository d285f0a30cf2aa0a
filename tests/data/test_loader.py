import pytest
import torch
import torch.nn.functional as F

from vgglab.data import BatchLoader, Normalization, PixelStats, Split, pixel_stats
from vgglab.data.loader import crop_flip, pca_offsets
from vgglab.train.config import AugmentConfig


def images(n=64, c=3, s=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, c, s, s), generator=g, dtype=torch.uint8)


def test_stats_match_a_direct_computation():
    x = images(300, s=12)
    # give the channels a correlated structure, as real colours have
    x[:, 1] = (x[:, 0].int() * 3 // 4 + x[:, 1].int() // 4).to(torch.uint8)
    s = pixel_stats(x, chunk=37)  # chunks that do not divide N
    pixels = x.permute(1, 0, 2, 3).reshape(3, -1).double() / 255
    torch.testing.assert_close(s.mean.double(), pixels.mean(1), atol=1e-6, rtol=0)
    torch.testing.assert_close(s.std.double(), pixels.std(1), atol=1e-6, rtol=0)
    vals, vecs = torch.linalg.eigh(torch.cov(pixels))
    torch.testing.assert_close(s.eigvals.double(), vals.flip(0), atol=1e-6, rtol=0)
    for i in range(3):  # eigenvectors up to sign
        assert abs(abs(torch.dot(s.eigvecs[:, i].double(), vecs[:, 2 - i])) - 1) < 1e-5
    assert s.eigvals[0] >= s.eigvals[1] >= s.eigvals[2]


@pytest.mark.parametrize("pad_mode", ["zeros", "reflect"])
def test_crop_flip_equals_pad_slice_flip_per_image(pad_mode):
    x = images(20, s=10)
    g = torch.Generator().manual_seed(1)
    offsets = torch.randint(0, 10 + 2 * 3 - 8 + 1, (20, 2), generator=g)
    flips = torch.rand(20, generator=g) < 0.5
    out = crop_flip(x, offsets, flips, out=8, padding=3, pad_mode=pad_mode)
    assert out.shape == (20, 3, 8, 8) and out.is_contiguous(memory_format=torch.channels_last)
    padded = F.pad(x.float(), (3, 3, 3, 3), mode="constant" if pad_mode == "zeros" else "reflect")
    for i in range(20):
        oy, ox = offsets[i].tolist()
        ref = padded[i, :, oy : oy + 8, ox : ox + 8]
        if flips[i]:
            ref = ref.flip(2)
        assert torch.equal(out[i].float(), ref), i


def _stats(c=3):
    return PixelStats(torch.full((c,), 0.5), torch.full((c,), 0.25), torch.tensor([0.2, 0.02, 0.005][:c]), torch.eye(c))


def test_loader_is_deterministic_given_seed_and_epoch_and_covers_every_image():
    split = Split(images(100), torch.arange(100))
    aug = AugmentConfig(crop="pad", padding=4, flip=True, pca_std=0.1)

    def make(seed):
        return BatchLoader(
            split,
            32,
            image_size=16,
            norm=Normalization.of(_stats()),
            augment=aug,
            pca=_stats(),
            seed=seed,
            shuffle=True,
            drop_last=True,
        )

    a, b, c = make(0), make(0), make(1)
    first = [(x.clone(), y.clone()) for x, y in a]
    assert len(first) == 3  # drop_last for training: 100 // 32
    for (xa, ya), (xb, yb) in zip(first, b, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert not torch.equal(first[0][1], next(iter(c))[1])
    a.set_epoch(1)
    assert not torch.equal(first[0][1], next(iter(a))[1])  # a new order each epoch
    ev = BatchLoader(split, 32, image_size=16, norm=Normalization.of(_stats()))
    ys = torch.cat([y for _, y in ev])
    assert torch.equal(ys, torch.arange(100))  # evaluation: every image, in order


def test_eval_batches_are_center_crops_normalised():
    split = Split(images(4, s=20), torch.zeros(4, dtype=torch.long))
    st = _stats()
    x, _ = next(iter(BatchLoader(split, 4, image_size=16, norm=Normalization.of(st))))
    ref = (split.x[:, :, 2:18, 2:18].float() / 255 - 0.5) / 0.25
    torch.testing.assert_close(x, ref)
    x, _ = next(iter(BatchLoader(split, 4, image_size=16, norm=Normalization.of(st, AugmentConfig(normalize="subtract_mean")))))
    torch.testing.assert_close(x, split.x[:, :, 2:18, 2:18].float() / 255 - 0.5)


def test_pca_colour_shift_has_the_expected_variance():
    """Each image is shifted by sum_i alpha_i lambda_i p_i, alpha ~ N(0, sigma): per channel c the
    shift's variance is sigma^2 * sum_i (lambda_i p_ic)^2."""
    eigvecs = torch.linalg.qr(torch.randn(3, 3))[0]
    st = PixelStats(torch.zeros(3), torch.ones(3), torch.tensor([0.17, 0.014, 0.003]), eigvecs)
    n = 4000
    split = Split(torch.full((n, 3, 8, 8), 128, dtype=torch.uint8), torch.zeros(n, dtype=torch.long))
    aug = AugmentConfig(crop="none", flip=False, pca_std=0.1, normalize="subtract_mean")
    x, _ = next(
        iter(
            BatchLoader(split, n, image_size=8, norm=Normalization.of(st, aug), augment=aug, pca=st, shuffle=True, drop_last=True)
        )
    )
    shift = x.mean((2, 3)) - 128 / 255  # (N, C), constant over each image
    assert torch.allclose(x, x[:, :, :1, :1].expand_as(x), atol=1e-6)  # one offset per image
    expected_var = 0.1**2 * ((st.eigvals[None, :] * eigvecs) ** 2).sum(1)
    ratio = shift.var(0) / expected_var
    assert ((ratio > 0.9) & (ratio < 1.1)).all(), ratio
    assert shift.mean(0).abs().max() < 4 * (expected_var / n).sqrt().max()
    torch.testing.assert_close(pca_offsets(torch.tensor([[1.0, 0, 0]]), st), (0.17 * eigvecs[:, 0])[None])


def test_resized_crop_and_sizes():
    split = Split(images(8, s=40), torch.zeros(8, dtype=torch.long))
    aug = AugmentConfig(crop="resized", scale=(0.3, 1.0), flip=True)
    x, _ = next(
        iter(BatchLoader(split, 8, image_size=32, norm=Normalization.of(_stats()), augment=aug, shuffle=True, drop_last=True))
    )
    assert x.shape == (8, 3, 32, 32) and torch.isfinite(x).all()
    with pytest.raises(ValueError, match="larger than the cached images"):
        BatchLoader(split, 8, image_size=48, norm=Normalization.of(_stats()))


def test_alternating_flip_flips_the_complementary_half_every_other_epoch():
    n = 200
    x = torch.zeros(n, 1, 4, 4, dtype=torch.uint8)
    x[..., 3] = 255  # a bright right column: after a flip it is on the left
    split = Split(x, torch.arange(n))
    aug = AugmentConfig(crop="none", flip=True, flip_mode="alternate")
    st = PixelStats(torch.zeros(1), torch.ones(1), torch.zeros(1), torch.eye(1))
    loader = BatchLoader(
        split,
        50,
        image_size=4,
        norm=Normalization.of(st, AugmentConfig(normalize="subtract_mean")),
        augment=aug,
        seed=3,
        shuffle=True,
        drop_last=True,
    )

    def flipped_ids(epoch):
        loader.set_epoch(epoch)
        out = set()
        for x, y in loader:
            out |= {int(i) for i in y[x[:, 0, 0, 0] > x[:, 0, 0, 3]]}
        return out

    e0, e1, e2 = flipped_ids(0), flipped_ids(1), flipped_ids(2)
    assert 70 < len(e0) < 130
    assert e1 == set(range(n)) - e0  # exactly the other half
    assert e2 == e0

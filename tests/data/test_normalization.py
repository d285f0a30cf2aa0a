"""Normalization: one definition of how uint8 pixels become the model's input."""

import pytest
import torch

from vgglab.data import Normalization, PixelStats
from vgglab.data.config import AugmentConfig


def stats():
    return PixelStats(torch.tensor([0.5, 0.4, 0.3]), torch.tensor([0.2, 0.25, 0.3]), torch.ones(3), torch.eye(3))


def test_standardize_and_subtract_mean():
    x = torch.randint(0, 256, (2, 3, 4, 4), dtype=torch.uint8)
    norm = Normalization.of(stats())
    mean, std = torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1), torch.tensor([0.2, 0.25, 0.3]).view(1, 3, 1, 1)
    torch.testing.assert_close(norm(x), (x.float() / 255 - mean) / std)
    torch.testing.assert_close(norm.invert(norm(x)), x.float() / 255, atol=1e-6, rtol=0)
    sub = Normalization.of(stats(), AugmentConfig(normalize="subtract_mean"))
    torch.testing.assert_close(sub(x), x.float() / 255 - mean)
    assert sub.divisor().tolist() == [1.0, 1.0, 1.0] and sub.std == norm.std  # std kept, not used
    assert x.dtype == torch.uint8  # the input is not touched


def test_augment_overrides_and_dict_round_trip():
    norm = Normalization.of(stats(), AugmentConfig(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]))
    assert norm.mean == pytest.approx((0.485, 0.456, 0.406)) and norm.std == pytest.approx((0.229, 0.224, 0.225))
    assert Normalization.from_dict(norm.to_dict()) == norm and norm.channels == 3
    with pytest.raises(ValueError, match="one value per image channel"):
        Normalization("standardize", (0.5,), (0.2, 0.3))
    with pytest.raises(ValueError, match="mode must be one of standardize, subtract_mean"):
        Normalization("minmax", (0.5,), (0.2,))

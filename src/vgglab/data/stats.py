"""Per-channel mean/std and the colour covariance's principal components, computed streaming."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class PixelStats:
    """Statistics of pixel values on the [0, 1] scale, over every pixel of the training source."""

    mean: torch.Tensor  # (C,)
    std: torch.Tensor  # (C,)
    eigvals: torch.Tensor  # (C,) of the C x C colour covariance, descending
    eigvecs: torch.Tensor  # (C, C), column i is the eigenvector of eigvals[i]

    def to_dict(self) -> dict:
        return {"mean": self.mean, "std": self.std, "eigvals": self.eigvals, "eigvecs": self.eigvecs}

    @classmethod
    def from_dict(cls, d: dict) -> PixelStats:
        return cls(*(torch.as_tensor(d[k], dtype=torch.float32) for k in ("mean", "std", "eigvals", "eigvecs")))


def pixel_stats(x: torch.Tensor, chunk: int | None = None) -> PixelStats:
    """Mean, std and PCA of colours for uint8 images (N, C, H, W), ``chunk`` images at a time
    (default: about 2**22 pixel values, 32 MB as float64, whatever the image size).

    Accumulates the per-channel sums and the C x C sum of outer products in float64, so no
    more than one chunk of pixels is ever in memory as floats.
    """
    n, c = x.shape[:2]
    chunk = chunk or max(1, 2**22 // max(1, x[0].numel()))
    total = torch.zeros(c, dtype=torch.float64)
    outer = torch.zeros(c, c, dtype=torch.float64)
    count = 0
    for start in range(0, n, chunk):
        p = x[start : start + chunk].to(torch.float64).div_(255.0)
        p = p.permute(1, 0, 2, 3).reshape(c, -1)  # (C, pixels)
        total += p.sum(1)
        outer += p @ p.T
        count += p.shape[1]
    mean = total / count
    cov = outer / count - torch.outer(mean, mean)
    cov = cov * count / max(count - 1, 1)  # unbiased, as torch.cov
    eigvals, eigvecs = torch.linalg.eigh(cov)
    order = eigvals.argsort(descending=True)
    return PixelStats(
        mean=mean.float(),
        std=cov.diagonal().sqrt().float(),
        eigvals=eigvals[order].clamp_min(0).float(),
        eigvecs=eigvecs[:, order].float(),
    )

"""Classify image files of any size and mode, preprocessed as in evaluation."""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..data.imagefolder import IMAGE_EXTENSIONS, decode_image
from ..device import autocast
from ..errors import VgglabError
from ..progress import Progress
from .inference import Inference


@dataclass
class Prediction:
    path: str
    top: list[tuple[str, float]] | None = None  # (class, probability), best first
    error: str | None = None


def expand_inputs(items: list[str]) -> list[Path]:
    """Files as given; folders expanded to the image files inside them (sorted)."""
    out: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            out.extend(sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS))
        else:
            out.append(p)
    return out


def load_image(inf: Inference, path: Path) -> torch.Tensor:
    """(1, C, S, S) uint8: any mode -> RGB (or grayscale for a 1-channel model), shorter side to
    the evaluation resize, center crop; the same decoding as the training data."""
    arr = decode_image(path, inf.eval_resize, inf.image_size)  # (S, S, 3)
    x = torch.from_numpy(np.array(arr)).permute(2, 0, 1)[None]  # a writable copy
    return to_gray_if(x, inf.in_chans)


def to_gray_if(x: torch.Tensor, in_chans: int) -> torch.Tensor:
    """uint8 RGB (N, 3, H, W) -> (N, 1, H, W) ITU-R 601 luma (as PIL's convert("L")) for a
    1-channel model; unchanged otherwise."""
    if x.shape[1] != 3 or in_chans != 1:
        return x
    w = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    return (x.float() * w).sum(1, keepdim=True).round().clamp(0, 255).to(torch.uint8)


@torch.inference_mode()
def predict_files(inf: Inference, paths: list[Path], topk: int = 5, batch_size: int = 32) -> list[Prediction]:
    """One prediction per file, in input order; a file that cannot be read gets an error, the
    others still run. Files are decoded by two threads and classified ``batch_size`` at a time, in
    the precision and layout the run resolved to on this machine (see ``load_inference``)."""
    if not isinstance(topk, int) or topk < 1:
        raise VgglabError(f"--topk must be a positive number of classes, got {topk}")
    k = min(topk, len(inf.classes))
    results: list[Prediction | None] = [None] * len(paths)
    fmt = torch.channels_last if inf.channels_last else torch.contiguous_format
    # progress on stderr: predict's stdout is its results
    with ThreadPoolExecutor(max_workers=2) as pool, Progress(len(paths), "predict", "files", stream=sys.stderr) as progress:
        for start in range(0, len(paths), batch_size):
            chunk = list(range(start, min(start + batch_size, len(paths))))
            good, images = [], []
            for i, got in zip(chunk, pool.map(lambda i: _read(inf, paths[i]), chunk), strict=True):
                if isinstance(got, str):
                    results[i] = Prediction(str(paths[i]), error=got)
                else:
                    good.append(i)
                    images.append(got)
            progress.advance(len(chunk))
            if not good:
                continue
            x = inf.prepare(torch.cat(images)).contiguous(memory_format=fmt)
            with autocast(inf.device, inf.precision):
                probs = inf.model(x).float().softmax(1).cpu()
            p, idx = probs.topk(k)
            for row, i in enumerate(good):
                results[i] = Prediction(
                    str(paths[i]), [(inf.classes[j], float(q)) for q, j in zip(p[row], idx[row], strict=True)]
                )
    return [r for r in results if r is not None]  # every file got one above: a prediction or its error


def _read(inf: Inference, path: Path):
    """(1, C, S, S) uint8, or the one-line reason the file cannot be read."""
    try:
        return load_image(inf, path)
    except FileNotFoundError:
        return "file not found"
    except Exception as exc:  # PIL's many error types for non-images and truncated files
        return f"not a readable image ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'no detail'})"

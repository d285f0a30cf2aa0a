"""``vgglab predict`` over a folder against a plain batched forward of the same model (issue 20):
images/s after start-up of (a) predict_files as the CLI runs it (batches of 32, two decoding
threads, the precision auto resolves to on this machine), (b) the same with one file per forward
(the path before issue 20), and (c) the limit: one batched forward of already-decoded images at
that precision. Also checks that (a) and (b) give the same top-1 labels.

    python benchmarks/predict_throughput.py [--images 96] [--model vgg11]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from jpeg_tree import make_tree  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--images", type=int, default=96)
    ap.add_argument("--model", default="vgg11")
    ap.add_argument("--root", default=str(Path(tempfile.gettempdir()) / "vgglab-trees"))
    a = ap.parse_args()
    from vgglab.data.normalization import Normalization
    from vgglab.evaluate.inference import Inference
    from vgglab.evaluate.predict import load_image, predict_files
    from vgglab.models import create_model
    from vgglab.runmeta import RunMeta
    from vgglab.train import speed
    from vgglab.train.loop import autocast

    tree = make_tree(Path(a.root) / "jpeg1000", 1000)
    files = sorted((tree / "train").rglob("*.jpg"))[: a.images]
    model = create_model(a.model, num_classes=1000).eval()
    precision = speed.resolve_speed("auto", "auto", model, 32, torch.device("cpu")).precision
    meta = RunMeta(tuple(f"c{i}" for i in range(1000)), 224, 256, model.config.to_dict(),
                   Normalization("standardize", [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]))
    inf = Inference(model, meta, {"path": "bench", "config": None}, torch.device("cpu"), precision, False)
    predict_files(inf, files[:4])  # warm-up

    t = time.perf_counter()
    batched = predict_files(inf, files)
    batched_rate = len(files) / (time.perf_counter() - t)
    t = time.perf_counter()
    single = predict_files(inf, files, batch_size=1)
    single_rate = len(files) / (time.perf_counter() - t)
    x = inf.prepare(torch.cat([load_image(inf, f) for f in files]))
    t = time.perf_counter()
    with torch.inference_mode(), autocast(inf.device, precision):
        for i in range(0, len(x), 32):
            model(x[i:i + 32])
    limit = len(files) / (time.perf_counter() - t)
    same = sum(p.top[0][0] == q.top[0][0] for p, q in zip(batched, single))
    print(f"machine: {speed.cpu_model()}, {a.model} at 224, {len(files)} ImageNet-like JPEGs, precision {precision}")
    print(f"predict (batches of 32) {batched_rate:.2f} img/s, one file per forward {single_rate:.2f} img/s "
          f"({batched_rate / single_rate:.2f}x), batched forward alone {limit:.2f} img/s (predict at {batched_rate / limit:.2f} of it); "
          f"same top-1 label for {same}/{len(files)}")


if __name__ == "__main__":
    main()

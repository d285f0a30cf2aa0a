"""``vgglab predict`` of a pretrained-like model over a folder (issues 20 and 26): images/s after
start-up of (a) predict_files in fp32, what predict always ran for a model without a recorded
precision before issue 26 (e2924c5), (b) predict_files in the precision ``--precision auto``
resolves to now (bf16 where native and measured faster), and (c) the limit: one batched forward of
already-decoded images at that precision. Prints (b)/(a), the issue's figure, and checks that (a)
and (b) give the same top-1 labels on most files (bf16 rounds).

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
    from vgglab import machine, speed
    from vgglab.data.normalization import Normalization
    from vgglab.device import autocast
    from vgglab.evaluate.inference import Inference
    from vgglab.evaluate.predict import load_image, predict_files
    from vgglab.models import create_model
    from vgglab.run.meta import RunMeta

    tree = make_tree(Path(a.root) / "jpeg1000", 1000)
    files = sorted((tree / "train").rglob("*.jpg"))[: a.images]
    model = create_model(a.model, num_classes=1000).eval()
    choice = speed.resolve_inference_precision(model, torch.device("cpu"))
    meta = RunMeta(
        tuple(f"c{i}" for i in range(1000)),
        224,
        256,
        model.config.to_dict(),
        Normalization("standardize", [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
    )

    def inference(precision):
        return Inference(model, meta, {"path": "bench", "config": None}, torch.device("cpu"), precision, False)

    before, now = inference("fp32"), inference(choice.precision)
    predict_files(before, files[:4])  # warm-up, both precisions
    predict_files(now, files[:4])
    rates, results = {}, {}
    for name, inf in (("before", before), ("now", now)):
        t = time.perf_counter()
        results[name] = predict_files(inf, files)
        rates[name] = len(files) / (time.perf_counter() - t)
    x = now.prepare(torch.cat([load_image(now, f) for f in files]))
    t = time.perf_counter()
    with torch.inference_mode(), autocast(now.device, now.precision):
        for i in range(0, len(x), 32):
            model(x[i : i + 32])
    limit = len(files) / (time.perf_counter() - t)
    same = sum(p.top[0][0] == q.top[0][0] for p, q in zip(results["before"], results["now"], strict=True))
    print(f"machine: {machine.machine_label()}; {a.model} at 224, {len(files)} ImageNet-like JPEGs")
    print(f"precision auto -> {choice.precision} ({choice.precision_reason})")
    print(
        f"predict fp32 (e2924c5's) {rates['before']:.2f} img/s, predict {now.precision} (auto now) {rates['now']:.2f} img/s: "
        f"ratio {rates['now'] / rates['before']:.2f}; batched {now.precision} forward alone {limit:.2f} img/s "
        f"(predict at {rates['now'] / limit:.2f} of it); same top-1 label for {same}/{len(files)}"
    )


if __name__ == "__main__":
    main()

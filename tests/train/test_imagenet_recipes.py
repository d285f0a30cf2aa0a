"""The paper's ImageNet chain (configs/vgg_a_imagenet -> vgg16_imagenet_s256 -> _s384 ->
_multiscale), each recipe as shipped but narrow, for two steps on a tiny ImageNet-layout tree."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import vgglab
from vgglab.evaluate import evaluate_checkpoint
from vgglab.train.config import load_config

ROOT = Path(__file__).resolve().parents[2]
CHAIN = ["vgg_a_imagenet", "vgg16_imagenet_s256", "vgg16_imagenet_s384", "vgg16_imagenet_multiscale"]


def imagenet_tree(root: Path, synsets: int = 4, train_per: int = 4, val_per: int = 1) -> Path:
    """train/<synset>/*.JPEG and val/<synset>/*.JPEG of odd-sized photos (ImageNet's layout)."""
    from tests.evaluate.test_parity import photo

    k = 0
    for s in range(synsets):
        for split, n in (("train", train_per), ("val", val_per)):
            d = root / split / f"n{1440764 + 37 * s:08d}"
            d.mkdir(parents=True)
            for _i in range(n):
                w, h = (400, 300) if k % 2 else (300, 417)
                photo(w, h, k).save(d / f"{split}_{k:04d}.JPEG", quality=85)
                k += 1
    return root


def weights(run: Path) -> dict[str, torch.Tensor]:
    """The run's conv and FC weights by layer name (features.block3.conv2.weight, head.fc1.weight, ...)."""
    return {k: v for k, v in vgglab.load_model(run, device="cpu").state_dict().items() if k.endswith(".weight")}


def close(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Two steps at lr 1e-3 / 1e-2 move a weight tensor by well under 10 % of its norm; an
    independent draw differs by ~140 %."""
    return a.shape == b.shape and ((a - b).norm() / b.norm()).item() < 0.1


@pytest.mark.slow
def test_the_paper_chain_trains_two_steps_each_starting_from_the_previous_run(tmp_path):
    tree = imagenet_tree(tmp_path / "imagenet")
    common = [
        f"data.root={tree}",
        "data.val_size=4",
        "data.batch_size=6",
        "data.eval_batch_size=4",
        f"data.cache_dir={tmp_path / 'cache'}",
        "train.epochs=1",
        "train.precision=fp32",
        "train.channels_last=false",
        "model.options.width=0.25",
        "log.progress=none",
    ]
    runs: dict[str, Path] = {}
    previous = None
    for recipe in CHAIN:
        cfg = load_config(ROOT / "configs" / f"{recipe}.yaml")
        assert (cfg.data.batch_size, cfg.optim.momentum, cfg.optim.weight_decay, cfg.augment.pca_std) == (256, 0.9, 5e-4, 0.1)
        assert cfg.augment.crop == "scale" and cfg.augment.normalize == "subtract_mean" and cfg.train.epochs == 74
        extra = [f"train.init_from={previous}"] if previous else []
        res = vgglab.fit(ROOT / "configs" / f"{recipe}.yaml", common + extra, out=tmp_path / recipe, log=lambda *_: None)
        ckpt = torch.load(res.run_dir / "last.pt", weights_only=True)
        assert ckpt["step"] == 2  # 12 training images (16 less the 4 held out), batch 6
        assert ckpt["model_config"]["num_classes"] == 4 and res.metrics["test_top1"] is not None
        runs[recipe] = res.run_dir
        previous = res.run_dir

    a, d = weights(runs["vgg_a_imagenet"]), weights(runs["vgg16_imagenet_s256"])
    # shallow-to-deep (sec. 3.1): A's first four convs (block1.conv1, block2.conv1, block3.conv1 and
    # .conv2) start D's convs at the same places, and A's three FC layers D's; the rest is drawn afresh
    first_four = [
        "features.block1.conv1.weight",
        "features.block2.conv1.weight",
        "features.block3.conv1.weight",
        "features.block3.conv2.weight",
    ]
    fc = ["head.fc1.weight", "head.fc2.weight", "head.classifier.weight"]
    assert all(close(d[k], a[k]) for k in first_four + fc)
    assert not close(d["features.block4.conv1.weight"], a["features.block4.conv1.weight"])
    # S = 384 starts from the S = 256 run (every weight), and the jittered net from the S = 384 one
    for later, earlier in (("vgg16_imagenet_s384", "vgg16_imagenet_s256"), ("vgg16_imagenet_multiscale", "vgg16_imagenet_s384")):
        w_later, w_earlier = weights(runs[later]), weights(runs[earlier])
        assert w_later.keys() == w_earlier.keys() and all(close(w_later[k], w_earlier[k]) for k in w_later)
    s384 = load_config(runs["vgg16_imagenet_s384"] / "config.yaml")
    assert (s384.optim.lr, s384.augment.scale_min, s384.augment.scale_max) == (1e-3, 384, 384)
    assert Path(s384.train.init_from) == runs["vgg16_imagenet_s256"]
    # the chain's last model evaluates the paper's way on the val/ folder (the test split)
    m = evaluate_checkpoint(
        runs["vgg16_imagenet_multiscale"], tta="dense+multicrop", scales=[256, 320], grid=2, device="cpu", out=tmp_path / "ev"
    )
    assert m["n"] == 4 and m["scales"] == [256, 320] and m["grid"] == 2
    assert m["top1_error"] == pytest.approx(1 - m["top1"])  # 4 classes: no top-5

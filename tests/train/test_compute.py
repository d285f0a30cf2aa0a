"""Issue 28's counter and switch: training FLOPs are 6 x the model's own forward MACs x images
seen at each epoch's side; augment.early_crop trains on smaller crops first, then the input side."""

import copy
from pathlib import Path

import pytest
import torch

import vgglab
from vgglab.data import BatchLoader, Normalization, Split, pixel_stats
from vgglab.data.config import AugmentConfig
from vgglab.errors import VgglabError
from vgglab.models import create_model, summarize
from vgglab.strict import ConfigError
from vgglab.train.compute import epoch_sides, recipe_compute
from vgglab.train.config import load_config

from ..conftest import TINY


def tiny(**augment):
    cfg = copy.deepcopy(TINY)
    cfg["augment"] = {**cfg["augment"], **augment}
    return load_config(cfg)


def macs(model, side):
    return summarize(model, input_size=side)["macs"]


def test_training_flops_are_six_times_macs_times_images_seen():
    cfg = tiny()  # 2 epochs, batches of 32
    model = create_model("vgg11_bn", width=0.125, head="gap", num_classes=10, in_chans=1)
    c = recipe_compute(cfg, model.config, n_train=330, n_val=40, n_test=50, image_size=32)
    per_epoch = 320  # 330 images in whole batches of 32: the ragged 10 are dropped
    assert c.images_seen == 2 * per_epoch
    assert c.train_flops == 6 * macs(model, 32) * per_epoch * 2
    assert c.val_flops == 2 * macs(model, 32) * 40 * 2  # every epoch's validation
    assert c.test_flops == 2 * macs(model, 32) * 50  # plain test, no TTA


def test_with_a_changing_input_size_each_epoch_counts_at_its_own_side():
    cfg = load_config(
        {**tiny(early_crop=32, early_epochs=1).to_dict(), "data": {**TINY["data"], "image_size": 48}},
        ["train.epochs=3", "train.test_tta=flip-shift"],
    )
    assert epoch_sides(cfg, 48) == [32, 48, 48]
    model = create_model("vgg11_bn", width=0.125, head="gap", num_classes=10, in_chans=1)
    c = recipe_compute(cfg, model.config, n_train=320, n_val=0, n_test=10, image_size=48)
    assert macs(model, 32) < macs(model, 48)
    assert c.train_flops == 6 * 320 * (macs(model, 32) + 2 * macs(model, 48))
    assert c.test_flops == 2 * macs(model, 48) * 10 * 6  # flip-shift: 6 views per image


def test_fast_cifar10_counts_what_the_issue_computed():
    cfg = load_config(Path(__file__).resolve().parents[2] / "configs" / "fast_cifar10.yaml")
    c = recipe_compute(cfg, create_model("vgg_fast").config, 50_000, 0, 10_000, 32)
    assert c.images_seen == 540_672 and c.train_pflops == pytest.approx(0.383, abs=5e-4)


def loader(early=None, epochs=0):
    g = torch.Generator().manual_seed(0)
    data = Split(torch.randint(0, 256, (64, 3, 32, 32), generator=g, dtype=torch.uint8), torch.randint(0, 10, (64,), generator=g))
    aug = AugmentConfig(crop="pad", padding=2, pad_mode="reflect", early_crop=early, early_epochs=epochs)
    return BatchLoader(
        data, 16, image_size=32, norm=Normalization.of(pixel_stats(data.x)), augment=aug, shuffle=True, drop_last=True
    )


def test_early_epochs_train_on_smaller_crops_then_the_input_side():
    ld = loader(early=24, epochs=2)
    for epoch, side in ((1, 24), (2, 24), (3, 32), (7, 32)):
        ld.set_epoch(epoch)
        x, y = next(iter(ld))
        assert x.shape == (16, 3, side, side) and len(y) == 16, epoch
    plain = loader()
    plain.set_epoch(1)
    assert next(iter(plain))[0].shape[-1] == 32


@pytest.mark.parametrize(
    "augment, message",
    [
        ({"early_crop": 24}, "go together"),
        ({"early_epochs": 3}, "go together"),
        ({"early_crop": 4, "early_epochs": 1}, "augment.early_crop must be >= 8, got 4"),
        ({"crop": "resized", "early_crop": 24, "early_epochs": 1}, "crop: pad"),
    ],
)
def test_early_crop_settings_that_cannot_work_are_one_line(augment, message):
    with pytest.raises(ConfigError, match=message):
        tiny(**augment)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"augment": {"early_crop": 24, "early_epochs": 1}}, "at least 32 pixels"),  # vgg11: five pools
        ({"augment": {"early_crop": 32, "early_epochs": 1}}, "not smaller than the 32-pixel input"),
        (
            {
                "augment": {"early_crop": 32, "early_epochs": 1},
                "data": {"image_size": 48},
                "model": {"options": {"head": "cifar"}},
            },
            "cifar head",
        ),
    ],
)
def test_a_model_that_cannot_take_the_early_crop_is_refused_before_training(tmp_path, changes, message):
    cfg = copy.deepcopy(TINY)
    for section, values in changes.items():
        if section == "model":
            cfg["model"]["options"] = {**cfg["model"]["options"], **values["options"]}
        else:
            cfg[section] = {**cfg[section], **values}
    with pytest.raises(VgglabError, match=message):
        vgglab.fit(cfg, out=tmp_path / "run", log=lambda *_: None)
    assert not (tmp_path / "run").exists()


def test_a_run_with_an_early_crop_trains_end_to_end(tmp_path):
    cfg = copy.deepcopy(TINY)
    cfg["data"]["image_size"] = 48
    cfg["augment"] = {**cfg["augment"], "early_crop": 32, "early_epochs": 1}
    res = vgglab.fit(cfg, out=tmp_path / "run", log=lambda *_: None)
    assert res.metrics["test_top1"] > 0.2

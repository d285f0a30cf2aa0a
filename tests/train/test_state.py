"""TrainState: one checkpoint layout, written and read back, resumes bit-exactly without running fit."""

import pytest
import torch

from vgglab import create_model
from vgglab.data import BatchLoader, Normalization, Split, pixel_stats
from vgglab.data.config import AugmentConfig
from vgglab.run.checkpoint import load_checkpoint, save_checkpoint
from vgglab.train.config import Config
from vgglab.train.loop import train_one_epoch
from vgglab.train.state import Selection, TrainState

BATCH = 8


def tiny_model():
    return create_model(
        "vgg11_bn", blocks=[[8], [16, 16], [32]], num_classes=10, input_size=16, head="cifar", hidden=16, num_hidden=1
    )


def loader(seed=0):
    g = torch.Generator().manual_seed(seed)
    data = Split(
        torch.randint(0, 256, (4 * BATCH, 3, 16, 16), generator=g, dtype=torch.uint8),
        torch.randint(0, 10, (4 * BATCH,), generator=g),
    )
    stats = pixel_stats(data.x)
    return BatchLoader(
        data,
        BATCH,
        image_size=16,
        norm=Normalization.of(stats),
        augment=AugmentConfig(padding=2, pca_std=0.1),
        pca=stats,
        shuffle=True,
        drop_last=True,
        seed=3,
    )


def config(**train):
    return Config.from_dict(
        {
            "data": {"batch_size": BATCH},
            "optim": {"lr": 0.05, "nesterov": True},
            "schedule": {"name": "cosine", "warmup_epochs": 1},
            "train": {"epochs": 3, **train},
        }
    )


def make_state(cfg, precision="fp32"):
    torch.manual_seed(0)
    return TrainState.create(tiny_model(), cfg, steps_per_epoch=4, has_val=True, precision=precision)


def epoch(state, ld, n):
    ld.set_epoch(n)
    out = train_one_epoch(state.model, ld, state, train=config().train)
    state.epoch, state.step = n, state.step + len(ld)
    return out


@pytest.mark.parametrize("train", [{}, {"ema_decay": 0.9}, {"lookahead_every": 2}], ids=["plain", "ema", "lookahead"])
def test_state_round_trip_through_a_checkpoint_continues_bit_exactly(tmp_path, train):
    cfg = config(**train)
    ld = loader()
    a = make_state(cfg)
    epoch(a, ld, 1)
    a.selection.update(1, 0.5)
    save_checkpoint(a.state_dict(), tmp_path / "last.pt")
    expected = epoch(a, ld, 2)  # the uninterrupted run

    b = make_state(config(**train, seed=99))  # another init: everything must come from the file
    b.load_state_dict(load_checkpoint(tmp_path / "last.pt"))
    assert (b.epoch, b.step, b.selection.epoch, b.selection.value) == (1, 4, 1, 0.5)
    got = epoch(b, ld, 2)
    assert got == expected
    for (k, va), vb in zip(a.state_dict()["model"].items(), b.state_dict()["model"].values(), strict=True):
        assert torch.equal(va, vb), k
    if a.ema is not None:
        for va, vb in zip(a.eval_model.state_dict().values(), b.eval_model.state_dict().values(), strict=True):
            assert torch.equal(va, vb)
        assert b.eval_model is b.ema.module
    assert a.schedule.lr == b.schedule.lr and a.optimizer.state_dict()["state"].keys() == b.optimizer.state_dict()["state"].keys()


def test_the_checkpoint_layout_has_every_part_once():
    s = make_state(config(ema_decay=0.9)).state_dict()
    assert set(s) == {"model", "ema", "ema_full", "optimizer", "lookahead", "schedule", "scaler", "rng", "epoch", "step", "best"}
    assert s["lookahead"] is None and s["scaler"] is None and s["best"] == {"value": None, "epoch": None}


def test_selection_keeps_the_best_validation_epoch_or_else_the_last():
    with_val = Selection(has_val=True, epochs=4)
    kept = [with_val.update(e, v) for e, v in enumerate([0.5, 0.7, 0.6, 0.7], start=1)]
    assert kept == [True, True, False, False] and (with_val.epoch, with_val.value) == (2, 0.7)
    assert with_val.mode == "max" and with_val.checkpoint_name == "best.pt"
    assert Selection.monitored({"loss": 1.5}, {"top1": 0.8}) == 0.8

    no_val = Selection(has_val=False, epochs=3)
    assert [no_val.update(e, loss) for e, loss in enumerate([2.0, 1.0, 1.5], start=1)] == [False, False, True]
    assert no_val.epoch == 3 and no_val.mode == "min" and no_val.checkpoint_name == "last.pt"
    assert Selection.monitored({"loss": 1.5}, None) == 1.5

    again = Selection(has_val=True, epochs=4)
    again.load_state_dict(with_val.state_dict())
    assert not again.update(5, 0.65) and again.update(6, 0.9)

"""Issue 37's levers, one switch per test, each off by default: a resolution schedule of stages
(crop or resize), brightness/contrast jitter, an LR floor, an EMA tail, Muon's weight decay and its
Newton-Schulz coefficients and steps."""

import copy
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF

import vgglab
from vgglab.data import BatchLoader, Normalization, Split, pixel_stats
from vgglab.data.loader import jitter
from vgglab.data.stream import StreamSplit, make_loader
from vgglab.errors import VgglabError
from vgglab.run.checkpoint import load_checkpoint
from vgglab.train.compute import epoch_sides
from vgglab.train.config import AugmentConfig, ConfigError, OptimConfig, ScheduleConfig, load_config
from vgglab.train.optim import MuonSGD, Schedule, newton_schulz

from ..conftest import TINY

ROOT = Path(__file__).resolve().parents[2]


def data(n=64, side=32):
    g = torch.Generator().manual_seed(0)
    return Split(
        torch.randint(0, 256, (n, 3, side, side), generator=g, dtype=torch.uint8), torch.randint(0, 10, (n,), generator=g)
    )


def loader(split, **augment):
    aug = AugmentConfig(crop="pad", padding=2, pad_mode="reflect", **augment)
    norm = Normalization.of(pixel_stats(split.x))
    return BatchLoader(split, 16, image_size=32, norm=norm, augment=aug, shuffle=True, drop_last=True, channels_last=False)


def first_batch(ld, epoch):
    ld.set_epoch(epoch)
    return next(iter(ld))


def test_stages_set_each_epochs_side_then_the_input_side():
    ld = loader(data(), stages=[[1, 24, "crop"], [2, 28, "resize"]])
    for epoch, side in ((1, 24), (2, 28), (3, 28), (4, 32), (9, 32)):
        x, y = first_batch(ld, epoch)
        assert x.shape == (16, 3, side, side) and len(y) == 16, epoch
    cfg = load_config({**copy.deepcopy(TINY), "augment": {"stages": [[1, 24, "crop"], [2, 28, "resize"]]}})
    cfg.train.epochs = 5
    assert epoch_sides(cfg, 32) == [24, 28, 28, 32, 32]


def test_a_resize_stage_is_the_usual_view_downsampled_whole():
    """The same epoch's batch with and without a resize stage: the staged one is the full 32-px view
    (same offsets, flips) resized to 24 px, bilinear and antialiased: nothing is cropped away."""
    split = data()
    full, y_full = first_batch(loader(split), 2)
    small, y_small = first_batch(loader(split, stages=[[3, 24, "resize"]]), 2)
    assert torch.equal(y_full, y_small)
    expected = F.interpolate(full, size=(24, 24), mode="bilinear", align_corners=False, antialias=True)
    torch.testing.assert_close(small, expected, atol=1e-4, rtol=1e-4)  # normalisation is affine, resizing linear
    cropped, _ = first_batch(loader(split, stages=[[3, 24, "crop"]]), 2)
    assert cropped.shape == small.shape and not torch.allclose(cropped, small, atol=0.1)


@pytest.mark.parametrize(
    "augment, message",
    [
        ({"stages": [[3, 24]]}, r"^augment.stages\[0\]: expected 3 values, got \[3, 24\]$"),
        ({"stages": [[0, 24, "resize"]]}, r"augment.stages\[0\]\[0\] must be >= 1, got 0"),
        ({"stages": [[3, 24, "shrink"]]}, r"augment.stages\[0\]\[2\]: 'shrink' is not one of crop, resize"),
        ({"stages": [[3, 4, "resize"]]}, r"augment.stages\[0\]\[1\] must be >= 8, got 4"),
        ({"stages": "24"}, "a list of"),
        ({"stages": [[3, 24, "resize"]], "early_crop": 24, "early_epochs": 3}, "one-stage form"),
        ({"stages": [[3, 24, "resize"]], "crop": "resized"}, "crop: pad"),
        ({"brightness": 1.5}, "augment.brightness must be < 1, got 1.5"),
        ({"contrast": -0.1}, "augment.contrast must be >= 0, got -0.1"),
    ],
)
def test_lever_settings_that_cannot_work_are_one_line(augment, message):
    with pytest.raises(ConfigError, match=message):
        AugmentConfig(**augment)


def test_a_model_that_cannot_take_a_stage_is_refused_before_training(tmp_path):
    cfg = copy.deepcopy(TINY)
    cfg["augment"] = {**cfg["augment"], "stages": [[1, 24, "resize"]]}  # vgg11: five pools need 32 px
    with pytest.raises(VgglabError, match="augment.stages 24: .* at least 32 pixels"):
        vgglab.fit(cfg, out=tmp_path / "run", log=lambda *_: None)
    assert not (tmp_path / "run").exists()


def test_stages_are_refused_on_streamed_data(tmp_path):
    split = StreamSplit(tmp_path, ["a.png"], torch.zeros(1, dtype=torch.long), torch.tensor([[40, 40]]), 36)
    with pytest.raises(VgglabError, match="augment.stages shrinks the cached images"):
        make_loader(
            split,
            1,
            image_size=32,
            norm=Normalization.of(pixel_stats(data().x)),
            augment=AugmentConfig(stages=[[1, 24, "resize"]]),
        )


def test_stages_covering_every_epoch_are_a_header_note():
    cfg = load_config({"augment": {"stages": [[2, 24, "resize"], [2, 28, "resize"]]}, "train": {"epochs": 4}})
    assert any("augment.stages cover 4 epochs" in n for n in cfg.notes_across_sections())


def test_jitter_is_torchvisions_color_jitter_per_image():
    x = data(8).x.float()
    b = torch.linspace(0.86, 1.14, 8)
    c = torch.linspace(1.13, 0.87, 8)
    got = jitter(x.clone(), b, c)
    for i in range(8):
        ref = TF.adjust_contrast(TF.adjust_brightness(x[i] / 255, b[i].item()), c[i].item()) * 255
        torch.testing.assert_close(got[i], ref, atol=1e-3, rtol=1e-4)


def test_jitter_draws_per_image_and_leaves_every_other_draw_as_it_was():
    split = data()
    plain = loader(split)
    jittered = loader(split, brightness=0.14, contrast=0.13)
    plain.set_epoch(1)
    jittered.set_epoch(1)
    p, q = plain._plan(), jittered._plan()
    assert set(q) - set(p) == {"brightness", "contrast"}
    assert all(torch.equal(p[k], q[k]) for k in p)  # order, offsets and flips unchanged
    assert 0.86 <= q["brightness"].min() and q["brightness"].max() <= 1.14 and q["brightness"].std() > 0.05
    x, _ = first_batch(plain, 1)
    xj, _ = first_batch(jittered, 1)
    assert x.shape == xj.shape and not torch.allclose(x, xj)


def test_streamed_batches_get_the_same_jitter(tmp_path):
    """The stream storage plans and finishes batches with the memory path's own code: jitter on its
    workers' batches moves them exactly as jitter() moves the unjittered batch."""
    from ..data.test_stream import batches, make_tree, stream_ds

    ds = stream_ds(make_tree(tmp_path / "tree"), tmp_path)
    assert ds.storage == "stream"
    plain, jittered = (
        batches(ds, 1, aug=AugmentConfig(crop="pad", padding=2, **kw)) for kw in ({}, {"brightness": 0.3, "contrast": 0.3})
    )
    norm = ds.normalization(AugmentConfig())
    scale, bias = norm.scale_bias("cpu")
    (x, y), (xj, yj) = plain[0], jittered[0]
    assert torch.equal(y, yj) and not torch.allclose(x, xj)
    pixels = (x - bias) / scale  # back to 0..255
    aug = AugmentConfig(crop="pad", padding=2, brightness=0.3, contrast=0.3)
    ld = make_loader(ds.train, 8, image_size=32, norm=norm, augment=aug, shuffle=True, drop_last=True, seed=3, workers=0)
    ld.set_epoch(1)
    plan = ld._plan()
    expected = jitter(pixels, plan["brightness"][:8], plan["contrast"][:8]) * scale + bias  # the first batch's draws
    torch.testing.assert_close(xj, expected, atol=1e-3, rtol=1e-4)


def test_the_lr_floor_holds_the_rate_once_the_decay_reaches_it():
    def rates(**kw):
        opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=2.0)
        s = Schedule(opt, ScheduleConfig(name="linear", end_factor=0.0, **kw), steps_per_epoch=10, epochs=10, monitor_mode="min")
        out = []
        for _ in range(100):
            out.append(s.lr)
            opt.step()
            s.step_batch()
        return out

    plain, floored = rates(), rates(floor=0.05)
    assert plain[:95] == pytest.approx(floored[:95])  # linear decay to 0 reaches 5 % at 95 % of the steps
    assert floored[95:] == pytest.approx([0.1] * 5) and plain[99] < 0.1
    assert rates(floor=0.0) == plain
    with pytest.raises(ConfigError, match="schedule.floor"):
        ScheduleConfig(floor=1.0)
    with pytest.raises(ConfigError, match="schedule.floor applies to the cosine and linear schedules, not plateau"):
        ScheduleConfig(name="plateau", floor=0.05)


def test_the_ema_tail_averages_only_the_last_steps(tmp_path):
    cfg = copy.deepcopy(TINY)
    cfg["train"] = {**cfg["train"], "epochs": 2, "ema_decay": 0.9, "ema_start": 0.5}
    res = vgglab.fit(cfg, out=tmp_path / "run", log=lambda *_: None)
    ckpt = load_checkpoint(res.run_dir / "last.pt")
    steps = ckpt["step"]
    assert int(ckpt["ema_full"]["n_averaged"]) == steps - round(0.5 * steps)  # the second epoch's steps only
    with pytest.raises(ConfigError, match="train.ema_start"):
        load_config({"train": {"ema_decay": 0.9, "ema_start": 1.0}})
    with pytest.raises(ConfigError, match="set train.ema_decay too"):
        load_config({"train": {"ema_start": 0.9}})


def test_muon_coefficients_and_weight_decay():
    g = torch.randn(16, 24)
    hiverge = (3.4576, -4.7391, 2.0843)
    x = g / (g.norm() + 1e-7)
    for _ in range(3):  # the quintic iteration by hand, with the other coefficients and E1's 3 steps
        m = x @ x.T
        x = hiverge[0] * x + (hiverge[1] * m + hiverge[2] * m @ m) @ x
    torch.testing.assert_close(newton_schulz(g, 3, hiverge), x)
    assert not torch.allclose(newton_schulz(g, 5, hiverge), x, atol=1e-3)
    p = torch.nn.Parameter(torch.randn(16, 24))
    p.grad = g.clone()
    renormed = p.detach() * (16**0.5 / p.detach().norm())
    MuonSGD([{"params": [p], "lr": 0.1, "weight_decay": 0.0, "muon": True}], 0.1, 0.0, False, 0.0, hiverge, 3).step()
    torch.testing.assert_close(p.detach(), renormed - 0.1 * x)  # the optimiser takes the configured steps

    def stepped(wd):
        torch.manual_seed(0)
        p = torch.nn.Parameter(torch.randn(8, 4, 3, 3))
        p.grad = torch.randn_like(p)
        renormed = p.detach() * (8**0.5 / p.detach().norm())
        opt = MuonSGD(
            [{"params": [p], "lr": 0.2, "weight_decay": wd, "muon": True}],
            lr=0.2,
            momentum=0.0,
            nesterov=False,
            muon_momentum=0.6,
        )
        opt.step()
        return p.detach(), renormed

    plain, renormed = stepped(0.0)
    decayed, _ = stepped(0.5)
    torch.testing.assert_close(decayed - plain, -0.2 * 0.5 * renormed)  # w <- w (1 - lr wd), decoupled
    cfg = OptimConfig(muon=True, muon_weight_decay=0.5, muon_ns_coefficients=list(hiverge))
    assert cfg.muon_ns_coefficients == hiverge
    with pytest.raises(ConfigError, match="optim.muon_ns_coefficients: expected 3 values, got"):
        OptimConfig(muon_ns_coefficients=[1.0, 2.0])
    with pytest.raises(ConfigError, match="muon_ns_steps"):
        OptimConfig(muon_ns_steps=0)
    with pytest.raises(ConfigError, match="muon_weight_decay must be"):
        OptimConfig(muon=True, muon_lr=0.2, muon_weight_decay=5.0)
    with pytest.raises(ConfigError, match="set optim.muon: true"):
        OptimConfig(muon_weight_decay=0.1)


def test_every_lever_is_off_by_default_so_the_headline_recipe_keeps_its_identity():
    """The recipe's sha256 (every setting that differs from a later key's default) is what its
    benchmark records say it was, so earlier recipes and records reproduce."""
    cfg = load_config(ROOT / "configs" / "fast_cifar10_muon_9ep.yaml")
    a = cfg.augment
    assert (a.stages, a.brightness, a.contrast, cfg.schedule.floor, cfg.train.ema_start, cfg.optim.muon_weight_decay) == (
        [],
        0,
        0,
        0,
        0,
        0,
    )
    assert cfg.optim.muon_ns_steps == 5
    records = sorted((ROOT / "benchmarks" / "results" / "time_to_accuracy").glob("fast_cifar10_muon_9ep-seed*.json"))
    recorded = {json.loads(r.read_text())["config_sha256"] for r in records}
    assert recorded == {cfg.sha256()}

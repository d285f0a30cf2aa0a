"""The training and evaluation steps read nothing back from the device per step: every
``.item()``, ``bool(tensor)`` or ``.tolist()`` waits for a CUDA device to finish its queue, so
their count per epoch must not grow with the number of steps (counted here on the CPU)."""

import pytest
import torch

import vgglab.train.averaging as averaging
import vgglab.train.loop as loop
from vgglab import create_model
from vgglab.data import BatchLoader, Normalization, Split, pixel_stats
from vgglab.data.config import AugmentConfig
from vgglab.train.config import OptimConfig, ScheduleConfig, TrainConfig
from vgglab.train.optim import Schedule, build_optimizer
from vgglab.train.state import TrainState

CPU = torch.device("cpu")
BATCH = 8


@pytest.fixture
def reads(monkeypatch):
    """Counts the host reads of tensors made while the test runs."""
    counts = {"n": 0}
    for name in ("item", "tolist", "__bool__", "__int__", "__float__"):
        real = getattr(torch.Tensor, name)

        def counted(self, *a, _real=real, **k):
            counts["n"] += 1
            return _real(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, counted)
    return counts


def split(steps: int) -> Split:
    g = torch.Generator().manual_seed(0)
    return Split(
        torch.randint(0, 256, (steps * BATCH, 3, 32, 32), generator=g, dtype=torch.uint8),
        torch.randint(0, 10, (steps * BATCH,), generator=g),
    )


def parts(steps: int, **optim):
    torch.manual_seed(0)
    data = split(steps)
    model = create_model("vgg11_bn", width=0.125, num_classes=10, input_size=32, head="gap")
    stats = pixel_stats(data.x)
    loader = BatchLoader(
        data,
        BATCH,
        image_size=32,
        norm=Normalization.of(stats),
        augment=AugmentConfig(crop="pad", padding=2),
        pca=stats,
        shuffle=True,
        drop_last=True,
    )
    opt = build_optimizer(model, OptimConfig(lr=0.01, **optim))
    return model, loader, opt, Schedule(opt, ScheduleConfig(name="linear", warmup_epochs=0.5), len(loader), 1, "min")


def eval_loader(data: Split) -> BatchLoader:
    return BatchLoader(data, BATCH, image_size=32, norm=Normalization.of(pixel_stats(data.x)))


def epoch_reads(reads, steps: int, **kw) -> int:
    model, loader, opt, sched = parts(steps)
    ema = averaging.EMA(model, 0.9) if kw.pop("ema", False) else None
    train = TrainConfig(**{k: kw.pop(k) for k in ("label_smoothing", "grad_clip") if k in kw})
    before = reads["n"]
    out = loop.train_one_epoch(model, loader, TrainState(model, opt, sched, ema=ema), train=train, **kw)
    assert out["n"] == steps * BATCH
    return reads["n"] - before


@pytest.mark.parametrize("kw", [{}, {"label_smoothing": 0.1, "grad_clip": 1.0}, {"ema": True}], ids=["plain", "clip", "ema"])
def test_one_training_epoch_reads_the_device_a_fixed_number_of_times(reads, kw):
    few, many = epoch_reads(reads, 2, **dict(kw)), epoch_reads(reads, 7, **dict(kw))
    assert few == many and few <= 3


def test_progress_counts_on_the_host_and_reads_only_when_asked(reads):
    calls, means = [], []

    def on_step(seen, read):
        calls.append(seen)
        if len(calls) % 3 == 0:  # a display that shows the loss every third step
            means.append(read())

    quiet = epoch_reads(reads, 7, on_step=lambda seen, read: None)
    shown = epoch_reads(reads, 7, on_step=on_step)
    assert calls == [k * BATCH for k in range(1, 8)]  # every step, from a host count
    assert len(means) == 2 and all(0 <= top1 <= 1 for _, top1 in means)
    assert shown - quiet == 2  # one device read per displayed value, none otherwise


@pytest.mark.parametrize("tta", ["none", "flip-shift"])
def test_evaluation_reads_the_device_a_fixed_number_of_times(reads, tta):
    counts = []
    for steps in (2, 7):
        model, _, _, _ = parts(steps)
        data = split(steps)
        loader = eval_loader(data)
        before = reads["n"]
        out = loop.evaluate_batches(model, loader, tta=tta)
        counts.append(reads["n"] - before)
        assert out["n"] == steps * BATCH
    assert counts[0] == counts[1] and counts[0] <= 2


def test_a_non_finite_loss_is_found_on_the_device_and_named_by_its_batch(monkeypatch):
    model, loader, opt, sched = parts(6)
    real, calls = loop.F.cross_entropy, {"n": 0}

    def poisoned(logits, y, **kw):
        calls["n"] += 1
        return real(logits, y, **kw) * (float("inf") if calls["n"] in (4, 5) else 1.0)

    monkeypatch.setattr(loop.F, "cross_entropy", poisoned)
    with pytest.raises(loop.TrainingDiverged, match=r"loss became nan or inf at batch 3$"):
        loop.train_one_epoch(model, loader, TrainState(model, opt, sched))
    calls["n"] = 0
    model, loader, opt, sched = parts(6)  # the weights above are spoiled by the inf step
    with pytest.raises(loop.TrainingDiverged, match="at batch 3"):  # raised by the periodic check, before the end
        loop.train_one_epoch(model, loader, TrainState(model, opt, sched), check_every=5)
    assert calls["n"] == 5


def test_the_sync_free_ema_equals_pytorchs_averaged_model():
    torch.manual_seed(0)
    model = create_model("vgg11_bn", width=0.125, num_classes=10, input_size=32, head="gap")
    ours = averaging.EMA(model, 0.9)
    ref = torch.optim.swa_utils.AveragedModel(
        model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(0.9), use_buffers=True
    )
    for _ in range(3):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        model.train()(torch.randn(4, 3, 32, 32))  # moves the BatchNorm buffers too
        ours.update_parameters(model)
        ref.update_parameters(model)
    assert ours.state_dict().keys() == ref.state_dict().keys()
    for k, v in ref.state_dict().items():
        torch.testing.assert_close(ours.state_dict()[k], v)
    restored = averaging.EMA(model, 0.9)
    restored.load_state_dict(ref.state_dict())
    assert restored._count == 3


@pytest.mark.parametrize("tta", ["flip", "flip-shift", "flip-translate"])
def test_a_tta_evaluation_also_gives_the_plain_numbers_of_its_first_view(tta):
    model, _, _, _ = parts(3)
    data = split(3)
    loader = eval_loader(data)
    plain = loop.evaluate_batches(model, loader)
    both = loop.evaluate_batches(model, loader, tta=tta)
    assert both["plain_top1"] == plain["top1"] and both["n"] == plain["n"]
    assert both["plain_loss"] == pytest.approx(plain["loss"], rel=1e-5)
    assert both["loss"] != pytest.approx(plain["loss"], rel=1e-5)  # the views were averaged

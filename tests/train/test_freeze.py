"""FreezePlan: what is frozen at each epoch, and that frozen parts really do not move."""

import pytest
import torch
from torch import nn

from vgglab import create_model
from vgglab.data import BatchLoader, Normalization, Split, pixel_stats
from vgglab.train.config import ConfigError, OptimConfig, ScheduleConfig, TrainConfig
from vgglab.train.freeze import FreezePlan
from vgglab.train.loop import train_one_epoch
from vgglab.train.optim import Schedule, build_optimizer
from vgglab.train.state import TrainState


def model():
    torch.manual_seed(0)
    return create_model("vgg11_bn", blocks=[[8], [16, 16], [32]], num_classes=4, input_size=16, head="gap")


def trainable(m):
    return {n for n, p in m.named_parameters() if p.requires_grad}


def test_parts_stay_frozen_through_unfreeze_after_then_train():
    m = model()
    plan = FreezePlan(m, TrainConfig(freeze=["features.block1", "head"], unfreeze_after=2))
    everything = {n for n, _ in m.named_parameters()}
    for epoch in (1, 2):
        assert plan.apply(epoch) == [m.features.block1, m.head]
        assert trainable(m) == {n for n in everything if not n.startswith(("features.block1.", "head."))}
    assert plan.apply(3) == [] and trainable(m) == everything
    assert plan.frozen_at(1) == [m.features.block1, m.head]  # the plan itself does not change


def test_never_unfrozen_without_unfreeze_after_and_bn_scales_stay_fixed():
    m = model()
    plan = FreezePlan(m, TrainConfig(freeze="features", freeze_bn_scale=True))
    assert plan.apply(50) == [m.features]
    assert all(n.startswith("head.") for n in trainable(m))
    m = model()
    FreezePlan(m, TrainConfig(freeze_bn_scale=True)).apply(1)
    bn_weights = {f"{n}.weight" for n, x in m.named_modules() if isinstance(x, nn.modules.batchnorm._BatchNorm)}
    assert bn_weights and not bn_weights & trainable(m)
    assert {n.replace(".weight", ".bias") for n in bn_weights} <= trainable(m)


def test_an_unknown_part_is_refused_when_the_plan_is_made():
    with pytest.raises(ConfigError, match="train.freeze: unknown part 'block9'; valid: features, head, block1"):
        FreezePlan(model(), TrainConfig(freeze=["block9"]))


def test_a_frozen_part_keeps_its_weights_and_batchnorm_statistics_during_an_epoch():
    m = model()
    g = torch.Generator().manual_seed(1)
    data = Split(torch.randint(0, 256, (32, 3, 16, 16), generator=g, dtype=torch.uint8), torch.randint(0, 4, (32,), generator=g))
    ld = BatchLoader(data, 8, image_size=16, norm=Normalization.of(pixel_stats(data.x)), shuffle=True, drop_last=True)
    opt = build_optimizer(m, OptimConfig(lr=0.1, weight_decay=5e-4))
    state = TrainState(m, opt, Schedule(opt, ScheduleConfig(name="none"), len(ld), 1, "max"))
    plan = FreezePlan(m, TrainConfig(freeze=["features"]))
    before = {k: v.clone() for k, v in m.state_dict().items()}
    train_one_epoch(m, ld, state, frozen=plan.apply(1))
    after = m.state_dict()
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert moved and all(k.startswith("head.") for k in moved)  # weights, running means and counters alike


def test_the_whitening_bias_trains_for_its_epochs_only_then_stays_put():
    torch.manual_seed(0)
    m = create_model("vgg_fast", blocks=[[8], [16]], num_classes=4, input_size=8)
    plan = FreezePlan(m, TrainConfig(whiten_bias_epochs=2, freeze_bn_scale=True))
    assert plan.apply(2) == [] and "features.whiten.bias" in trainable(m)
    assert plan.apply(3) == [m.features.whiten] and "features.whiten.bias" not in trainable(m)
    assert "features.block1.conv1.weight" in trainable(m) and "features.block1.bn1.weight" not in trainable(m)
    opt = torch.optim.SGD(m.parameters(), lr=1.0, momentum=0.9, weight_decay=0.1)
    before = m.features.whiten.bias.detach().clone()
    torch.nn.functional.cross_entropy(m(torch.randn(4, 3, 8, 8)), torch.tensor([0, 1, 2, 3])).backward()
    opt.step()
    assert torch.equal(m.features.whiten.bias, before)  # no gradient, so no step and no decay
    assert plan.apply(1) == [] and "features.whiten.bias" in trainable(m)  # a resume at epoch 1 trains it again
    with pytest.raises(ConfigError, match="whiten_bias_epochs is set but this model has no whitening layer"):
        FreezePlan(model(), TrainConfig(whiten_bias_epochs=3))
    with pytest.raises(ConfigError, match="whiten_bias_epochs must be >= 0"):
        TrainConfig(whiten_bias_epochs=-1)

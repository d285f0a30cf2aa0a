"""The speed-run techniques, one mechanic per test, and the recipe end to end."""

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import vgglab
from vgglab.models import create_model
from vgglab.run.checkpoint import load_checkpoint
from vgglab.train.averaging import Lookahead
from vgglab.train.config import ConfigError, OptimConfig, ScheduleConfig, load_config
from vgglab.train.loop import evaluate_batches
from vgglab.train.optim import Schedule, param_groups

from ..conftest import cifar10_root

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.parametrize("batch_size", [256, 1024])
def test_decoupled_lr_and_weight_decay_do_not_depend_on_batch_size(batch_size):
    model = create_model("vgg_fast", width=0.125)
    cfg = OptimConfig(lr=10.0, momentum=0.85, nesterov=True, weight_decay=0.0133, bn_bias_lr_mult=64.0, decoupled=True)
    groups = param_groups(model, cfg, batch_size)
    assert len(groups) == 2
    for g in groups:
        rate = g["lr"] / (1 - 0.85) * 1024 / batch_size  # the steady-state step per 1024 samples
        assert rate == pytest.approx(10.0) or rate == pytest.approx(640.0)
        # the fraction the weights shrink per 1024 samples is weight_decay in every group
        assert g["lr"] * g["weight_decay"] / (1 - 0.85) * 1024 / batch_size == pytest.approx(0.0133)
    bn_biases = {id(m.bias) for m in model.modules() if isinstance(m, nn.BatchNorm2d)}
    fast = max(groups, key=lambda g: g["lr"])
    assert {id(p) for p in fast["params"]} == bn_biases
    with pytest.raises(ConfigError, match="sgd only"):
        OptimConfig(name="adamw", decoupled=True)


def test_warmup_from_a_fraction_then_linear_decay_to_end_factor():
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=2.0)
    cfg = ScheduleConfig(name="linear", warmup_epochs=2.3, warmup_start=0.2, end_factor=0.07)
    s = Schedule(opt, cfg, steps_per_epoch=10, epochs=10, monitor_mode="min")
    lrs = []
    for _ in range(100):
        lrs.append(s.lr)
        opt.step()
        s.step_batch()
    assert lrs[0] == pytest.approx(2.0 * (0.2 + 0.8 / 23))
    assert max(lrs) == pytest.approx(2.0) and lrs.index(max(lrs)) == 22  # peak at 23 % of the steps
    assert s.lr == pytest.approx(2.0 * 0.07)  # after the last step
    assert all(a >= b for a, b in zip(lrs[22:], lrs[23:], strict=False))


def test_lookahead_matches_a_hand_computation():
    model = nn.Sequential(nn.Linear(1, 1, bias=False), nn.BatchNorm1d(1))
    w = model[0].weight
    with torch.no_grad():
        w.fill_(1.0)
    la = Lookahead(model, every=2, decay=0.5, power=1.0, total_steps=4)
    assert "1.num_batches_tracked" not in la.avg and "1.running_mean" in la.avg

    def step(value):
        with torch.no_grad():
            w.fill_(value)  # what an optimizer step would have done
            model[1].running_mean.fill_(value)
        la.after_step()

    step(2.0)  # step 1: no averaging
    assert w.item() == 2.0
    step(3.0)  # step 2: d = 0.5 * (2/4) = 0.25 -> avg = 0.25 * 1 + 0.75 * 3 = 2.5, and w jumps to it
    assert w.item() == pytest.approx(2.5)
    assert model[1].running_mean.item() == pytest.approx(0.75 * 3)  # buffers too (their average started at 0)
    step(4.0)
    step(5.0)  # step 4: d = 0.5 -> avg = 0.5 * 2.5 + 0.5 * 5 = 3.75
    assert w.item() == pytest.approx(3.75)
    with torch.no_grad():
        w.fill_(10.0)
    la.finish()  # training ends on the average
    assert w.item() == pytest.approx(3.75)
    again = Lookahead(model, every=2, decay=0.5, power=1.0, total_steps=4)
    again.load_state_dict(la.state_dict())
    assert again.step == 4 and again.avg["0.weight"].item() == pytest.approx(3.75)


def test_label_smoothing_is_the_mixture_with_the_uniform_target():
    logits = torch.randn(8, 10)
    y = torch.randint(0, 10, (8,))
    logp = logits.log_softmax(1)
    by_hand = (0.8 * -logp.gather(1, y[:, None]).squeeze(1) + 0.2 * -logp.mean(1)).mean()
    assert F.cross_entropy(logits, y, label_smoothing=0.2) == pytest.approx(by_hand.item(), rel=1e-5)


class _Batches:
    device = torch.device("cpu")

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __iter__(self):
        yield self.x, self.y


@pytest.mark.parametrize(
    "mode, shifts", [("flip-translate", [(0, 0), (1, 0), (-1, 0), (0, 1), (0, -1)]), ("flip-shift", [(0, 0), (-1, -1), (1, 1)])]
)
def test_evaluate_with_tta_averages_the_probabilities_of_the_views(mode, shifts):
    torch.manual_seed(0)
    model = create_model("vgg_fast", width=0.125).eval()
    x, y = torch.randn(16, 3, 32, 32), torch.randint(0, 10, (16,))
    with torch.no_grad():
        p = F.pad(x, (1, 1, 1, 1), mode="reflect")
        views = [p[..., 1 + dy : 33 + dy, 1 + dx : 33 + dx] for dy, dx in shifts]
        probs = torch.stack([model(v).softmax(1) for v in views] + [model(v.flip(3)).softmax(1) for v in views]).mean(0)
    got = evaluate_batches(model, _Batches(x, y), tta=mode)
    assert got["top1"] == pytest.approx((probs.argmax(1) == y).float().mean().item())
    assert got["loss"] == pytest.approx(F.nll_loss(probs.log(), y).item(), rel=1e-4)


@pytest.mark.parametrize("muon", [False, True])
def test_the_recipe_switches_train_a_vgg_fast_on_digits(tmp_path, tiny_config, muon):
    recipe = load_config(CONFIGS / "fast_cifar10_short.yaml").to_dict()
    cfg = {**recipe, "data": tiny_config["data"], "log": tiny_config["log"]}
    cfg["data"]["batch_size"] = 32
    cfg["model"] = {"name": "vgg_fast", "options": {"width": 0.25}}
    cfg["train"].update(epochs=3, test_tta="flip")
    cfg["augment"]["flip"] = False  # digits are not mirror-symmetric
    cfg["optim"]["muon"] = muon
    res = vgglab.fit(cfg, out=tmp_path / "run", log=lambda *_: None)
    ckpt = load_checkpoint(res.run_dir / "last.pt")
    w = ckpt["model"]["features.whiten.weight"]
    assert not torch.equal(w[: w.shape[0] // 2].flatten(1), torch.eye(w.shape[1] * 4))  # fitted to the data
    assert ckpt["lookahead"]["step"] == 3 * (320 // 32)  # every optimizer step of the 3 epochs
    assert torch.equal(ckpt["model"]["features.block1.bn1.weight"], torch.ones(16))  # frozen BN scales
    assert res.metrics["test_top1"] > 0.5 and 0.0 <= res.metrics["test_top1_flip"] <= 1.0
    if muon:  # the filters stepped by Muon: each rescaled to norm sqrt(out) before its step of size ~ muon_lr
        conv = ckpt["model"]["features.block2.conv1.weight"]
        assert abs(conv.norm().item() - conv.shape[0] ** 0.5) < 0.05 * conv.shape[0] ** 0.5, conv.norm()
        assert any(
            torch.is_tensor(s.get("momentum_buffer")) and s["momentum_buffer"].ndim == 4
            for s in ckpt["optimizer"]["state"].values()
        )


def test_lookahead_and_ema_are_exclusive():
    with pytest.raises(ConfigError, match="only one"):
        load_config({"train": {"lookahead_every": 5, "ema_decay": 0.99}})


@pytest.mark.slow
@pytest.mark.skipif(not cifar10_root(), reason="set VGGLAB_CIFAR10 to the CIFAR-10 ImageFolder tree (CI does)")
@pytest.mark.parametrize("recipe", ["fast_cifar10", "fast_cifar10_short", "fast_cifar10_muon_9ep", "fast_cifar10_e1_port"])
def test_recipe_smoke_one_epoch_on_a_subset(tmp_path, recipe):
    """The shipped recipe as it is, for one epoch on 5,000 images (not the timed run)."""
    overrides = [
        f"data.root={cifar10_root()}",
        "data.train_limit=5000",
        "data.batch_size=256",
        "train.epochs=1",
        "train.test_tta=flip",
        "log.progress=line",
    ]
    res = vgglab.fit(str(CONFIGS / f"{recipe}.yaml"), overrides, out=tmp_path / "run")
    assert res.metrics["test_n"] == 10000
    assert res.metrics["test_top1"] > 0.25 and res.metrics["test_top1_flip"] > 0.25
    assert math.isfinite(res.metrics["test_loss"])

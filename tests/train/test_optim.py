"""Optimiser parameter groups and the schedule, including the learning rate it reports."""

import copy

import pytest
import torch

from vgglab import create_model
from vgglab.train.config import OptimConfig, ScheduleConfig
from vgglab.train.optim import Schedule, build_optimizer, param_groups, start_momentum


def step(schedule):
    schedule.optimizer.step()  # no gradients: nothing moves, but PyTorch sees the usual order
    schedule.step_batch()


def model():
    torch.manual_seed(0)
    return create_model("vgg11_bn", blocks=[[8], [16]], num_classes=4, input_size=8, head="gap")


def test_groups_exempt_batchnorm_and_biases_from_decay_and_scale_the_head():
    m = model()
    groups = param_groups(m, OptimConfig(lr=0.1, weight_decay=5e-4, no_decay_bn_bias=True, head_lr_mult=10))
    by_param = {id(p): (g["lr"], g["weight_decay"]) for g in groups for p in g["params"]}
    named = dict(m.named_parameters())
    assert by_param[id(named["features.block1.conv1.weight"])] == (0.1, 5e-4)
    assert by_param[id(named["features.block1.bn1.weight"])] == (0.1, 0.0)
    assert by_param[id(named["features.block1.conv1.bias"])] == (0.1, 0.0)
    assert by_param[id(named["head.classifier.weight"])] == pytest.approx((1.0, 5e-4))
    assert sum(len(g["params"]) for g in groups) == len(named)


def test_decoupled_rates_are_rescaled_for_pytorch_but_reported_in_the_recipes_units():
    m = model()
    cfg = OptimConfig(lr=10.0, momentum=0.85, nesterov=True, weight_decay=0.0005, decoupled=True)
    opt = build_optimizer(m, cfg, batch_size=1024)
    assert opt.param_groups[0]["lr"] == pytest.approx(10.0 * 0.15)  # PyTorch's step size
    assert opt.param_groups[0]["weight_decay"] == pytest.approx(0.0005 / 10.0)
    sched = Schedule(
        opt,
        ScheduleConfig(name="linear", warmup_epochs=0, end_factor=0.0),
        steps_per_epoch=4,
        epochs=1,
        monitor_mode="max",
        optim=cfg,
    )
    assert sched.lr == pytest.approx(10.0)  # the recipe's lr, as metrics.csv and the progress line show it
    for _ in range(2):
        step(sched)
    assert sched.lr == pytest.approx(5.0) and opt.param_groups[0]["lr"] == pytest.approx(0.75)


def test_plateau_cuts_the_rate_and_its_state_round_trips():
    m = model()
    cfg = OptimConfig(lr=0.1)
    opt = build_optimizer(m, cfg)
    sched = Schedule(opt, ScheduleConfig(name="plateau", patience=0, factor=0.5), 4, 10, "max", cfg)
    sched.step_epoch(0.5)
    sched.step_epoch(0.4)  # no improvement, patience 0: halve
    assert sched.lr == pytest.approx(0.05)
    again = Schedule(build_optimizer(model(), cfg), ScheduleConfig(name="plateau", patience=0, factor=0.5), 4, 10, "max", cfg)
    again.load_state_dict(sched.state_dict())
    again.optimizer.load_state_dict(opt.state_dict())
    again.step_epoch(0.45)  # still worse than the best, 0.5
    assert again.lr == pytest.approx(0.025)


def test_cosine_warmup_then_decay_to_the_floor_and_resume_mid_way():
    cfg = OptimConfig(lr=1.0)
    scfg = ScheduleConfig(name="cosine", warmup_epochs=1, warmup_start=0.0, end_factor=0.1)
    opt = build_optimizer(model(), cfg)
    sched = Schedule(opt, scfg, steps_per_epoch=2, epochs=3, monitor_mode="max", optim=cfg)
    seen = [sched.lr]
    for _ in range(6):
        step(sched)
        seen.append(sched.lr)
    assert seen[0] == pytest.approx(0.5) and seen[1] == pytest.approx(1.0)  # warm-up, then the peak
    assert seen[-1] == pytest.approx(0.1) and all(a >= b for a, b in zip(seen[1:], seen[2:], strict=False))
    opt2 = build_optimizer(model(), cfg)
    resumed = Schedule(opt2, scfg, 2, 3, "max", cfg)
    first = Schedule(build_optimizer(model(), cfg), scfg, 2, 3, "max", cfg)
    for _ in range(3):
        step(first)
    resumed.load_state_dict(first.state_dict())
    opt2.load_state_dict(first.optimizer.state_dict())
    assert resumed.lr == pytest.approx(seen[3])
    step(resumed)
    assert resumed.lr == pytest.approx(seen[4])


@pytest.mark.parametrize("fused", [False, True])
def test_parts_unfrozen_mid_run_step_like_sgd_from_zero_momentum_also_fused(fused):
    """PyTorch's fused SGD (vgglab's choice on CUDA) refuses a group where only some parameters
    have momentum; start_momentum gives the newcomers zeros, which is SGD's own first step."""

    def run(fill: bool):
        torch.manual_seed(0)
        a, b = torch.nn.Parameter(torch.randn(5)), torch.nn.Parameter(torch.randn(5))
        opt = torch.optim.SGD([a, b], lr=0.1, momentum=0.9, nesterov=True, fused=fused)
        for step in range(3):
            b.requires_grad_(step > 0)  # b is frozen for the first step
            if fill:
                start_momentum(opt)
            opt.zero_grad()
            ((a * a).sum() + (b * b * 2).sum() if step else (a * a).sum()).backward()
            opt.step()
        return a.detach().clone(), b.detach().clone()

    if fused:
        with pytest.raises(TypeError):
            run(fill=False)
    a, b = run(fill=True)
    torch.manual_seed(0)
    ra, rb = torch.nn.Parameter(torch.randn(5)), torch.nn.Parameter(torch.randn(5))
    ref_a, ref_b = (torch.optim.SGD([p], lr=0.1, momentum=0.9, nesterov=True, fused=fused) for p in (ra, rb))
    for step in range(3):
        for p, o, k in ((ra, ref_a, 1), (rb, ref_b, 2)):
            if p is rb and step == 0:
                continue
            o.zero_grad()
            (p * p * k).sum().backward()
            o.step()
    assert torch.equal(a, ra.detach()) and torch.equal(b, rb.detach())


def test_newton_schulz_keeps_the_singular_vectors_and_flattens_the_singular_values():
    from vgglab.train.optim import newton_schulz

    torch.manual_seed(0)
    for shape in [(8, 72), (72, 8), (16, 16)]:
        g = torch.randn(shape) @ torch.diag(torch.logspace(-1, 1, shape[1]))  # singular values 100x apart
        o = newton_schulz(g)
        s = torch.linalg.svdvals(o)
        assert o.shape == g.shape
        assert s.min() > 0.5 and s.max() < 1.3, s  # roughly orthogonal, whatever g's scale
        u, _, v = torch.linalg.svd(g, full_matrices=False)
        top = u[:, 0] @ o @ v[0]  # the top singular pair is kept with a positive value
        assert top > 0.5


def muon_model():
    torch.manual_seed(0)
    return create_model("vgg_fast", blocks=[[8], [16]], num_classes=4, input_size=8)


# the schedule is stepped here without optimiser steps, on purpose (its rates are what is checked)
@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before:UserWarning")
def test_muon_steps_the_filters_and_sgd_the_rest():
    from vgglab.train.optim import MuonSGD, newton_schulz

    cfg = OptimConfig(
        lr=10.0, momentum=0.85, nesterov=True, weight_decay=0.01, decoupled=True, muon=True, muon_lr=0.2, muon_momentum=0.6
    )
    m, ref = muon_model(), muon_model()
    opt = build_optimizer(m, cfg, batch_size=256)
    assert isinstance(opt, MuonSGD)
    filters = [n for n, p in m.named_parameters() if p.ndim == 4]
    assert len(filters) == 2 and opt.param_groups[-1].get("muon") and not opt.param_groups[0].get("muon")
    sgd = torch.optim.SGD(
        [
            {k: v for k, v in g.items()}
            for g in param_groups(
                ref, OptimConfig(lr=10.0, momentum=0.85, nesterov=True, weight_decay=0.01, decoupled=True), batch_size=256
            )
        ],
        lr=1.0,
        momentum=0.85,
        nesterov=True,
    )
    x, y = torch.randn(6, 3, 8, 8), torch.tensor([0, 1, 2, 3, 0, 1])
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    for model_, _o in [(m, opt), (ref, sgd)]:
        torch.nn.functional.cross_entropy(model_(x), y).backward()
    grads = {n: p.grad.clone() for n, p in m.named_parameters()}
    opt.step()
    sgd.step()
    named, named_ref = dict(m.named_parameters()), dict(ref.named_parameters())
    for n in named:
        if n in filters:
            w = before[n] * (before[n].shape[0] ** 0.5 / before[n].norm())
            g = grads[n] * 1.6  # Nesterov, first step: g + 0.6 * (0.6 * 0 + g)
            want = w - 0.2 * newton_schulz(g.reshape(len(g), -1)).view_as(w)
            assert torch.allclose(named[n], want, atol=1e-5), n
        else:
            assert torch.allclose(named[n], named_ref[n], atol=1e-6), n
    # the schedule scales the filters' rate like every other group's
    sched = Schedule(
        opt,
        ScheduleConfig(name="linear", warmup_epochs=0, end_factor=0.0),
        steps_per_epoch=4,
        epochs=1,
        monitor_mode="max",
        optim=cfg,
    )
    sched.step_batch()
    sched.step_batch()
    assert opt.param_groups[-1]["lr"] == pytest.approx(0.1)


def test_muon_state_round_trips_so_a_resume_steps_identically():
    cfg = OptimConfig(lr=1.0, momentum=0.85, nesterov=True, muon=True)
    x, y = torch.randn(6, 3, 8, 8), torch.tensor([0, 1, 2, 3, 0, 1])

    def one_step(model_, opt):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model_(x), y).backward()
        opt.step()

    a = muon_model()
    opt_a = build_optimizer(a, cfg)
    one_step(a, opt_a)
    b = muon_model()
    b.load_state_dict(a.state_dict())
    opt_b = build_optimizer(b, cfg)
    opt_b.load_state_dict(copy.deepcopy(opt_a.state_dict()))  # as from a checkpoint file: no shared buffers
    one_step(a, opt_a)
    one_step(b, opt_b)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)


def test_muon_is_refused_with_adamw():
    from vgglab.train.config import ConfigError

    with pytest.raises(ConfigError, match="optim.muon applies to sgd only"):
        OptimConfig(name="adamw", muon=True)
    with pytest.raises(ConfigError, match="optim.muon_lr must be > 0, got 0"):
        OptimConfig(muon=True, muon_lr=0)

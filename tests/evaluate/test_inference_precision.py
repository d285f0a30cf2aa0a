"""Issue 26, item 2: the precision eval, predict, features and report compute in (``--precision``)."""

import json

import numpy as np
import pytest
import torch

import vgglab.machine as machine
import vgglab.speed as speed
import vgglab.speed.probe as speed_probe
from vgglab.cli import main
from vgglab.errors import VgglabError
from vgglab.evaluate import load_inference


class ForwardTimer:
    """Stands in for the forward-pass probe: fixed images/s per arm, and the calls made."""

    def __init__(self, rates, spread=0.0):
        self.rates, self.spread, self.calls = rates, spread, []

    def __call__(self, model, arms, batch, device, budget_s):
        self.calls.append(list(arms))
        r = speed.Rates({a: self.rates[a] for a in arms})
        r.spread = self.spread
        return r


@pytest.fixture
def elsewhere(monkeypatch):
    """This machine is not the one the run trained on; its bf16 support and probe are set."""
    real = machine.machine_info

    def set_machine(native: bool, rates=None, spread=0.0):
        monkeypatch.setattr(machine, "machine_info", lambda: {**real(), "cpu": "another CPU", "native_bf16": native})
        monkeypatch.setattr(machine, "native_bf16", lambda: native)
        timer = ForwardTimer(rates or {}, spread)
        monkeypatch.setattr(speed_probe, "time_forward", timer)
        return timer

    return set_machine


def test_the_runs_own_choice_on_its_machine(trained_run):
    inf = load_inference(trained_run, "cpu")
    assert inf.precision == load_inference(trained_run, "cpu", precision="auto").precision
    assert inf.precision_reason == "the run's own choice on this machine"


def test_elsewhere_bf16_where_native_and_measured_faster(trained_run, elsewhere, tmp_path):
    timer = elsewhere(True, {("fp32", False): 100.0, ("bf16", False): 240.0})
    inf = load_inference(trained_run, "cpu", cache_dir=str(tmp_path))
    assert inf.precision == "bf16" and "2.40x fp32 in the inference probe" in inf.precision_reason
    assert timer.calls == [[("fp32", False), ("bf16", False)]]
    load_inference(trained_run, "cpu", cache_dir=str(tmp_path))
    assert len(timer.calls) == 1  # cached


def test_elsewhere_fp32_where_bf16_is_not_native_or_measured_slower(trained_run, elsewhere, tmp_path):
    timer = elsewhere(False)
    assert load_inference(trained_run, "cpu", cache_dir=str(tmp_path)).precision == "fp32" and timer.calls == []
    elsewhere(True, {("fp32", False): 100.0, ("bf16", False): 30.0})
    inf = load_inference(trained_run, "cpu", cache_dir=str(tmp_path / "b"))
    assert inf.precision == "fp32" and "measured 0.30x fp32" in inf.precision_reason


def test_a_pinned_precision_is_used_as_given_and_a_wrong_one_is_one_line(trained_run, elsewhere):
    timer = elsewhere(True, {})
    assert load_inference(trained_run, "cpu", precision="bf16").precision == "bf16"
    assert load_inference(trained_run, "cpu", precision="fp32").precision == "fp32" and timer.calls == []
    with pytest.raises(VgglabError, match="precision fp16 needs CUDA"):
        load_inference(trained_run, "cpu", precision="fp16")
    with pytest.raises(VgglabError, match="unknown precision 'fp8'"):
        load_inference(trained_run, "cpu", precision="fp8")


def test_bf16_evaluation_really_runs_in_bf16_and_says_so(trained_run, tmp_path, capsys, monkeypatch):
    seen = []
    real = torch.autocast

    def spy(device_type, dtype=None, **kw):
        seen.append(dtype)
        return real(device_type, dtype=dtype, **kw)

    monkeypatch.setattr(torch, "autocast", spy)
    assert main(["eval", str(trained_run), "--device", "cpu", "--precision", "bf16", "--out", str(tmp_path / "ev")]) == 0
    out = capsys.readouterr().out
    assert "test split, tta none, bf16:" in out and "precision bf16: asked for" in out
    assert json.loads((tmp_path / "ev" / "eval.json").read_text())["precision"] == "bf16"
    assert seen and set(seen) == {torch.bfloat16}
    assert main(["features", str(trained_run), "--precision", "bf16", "--out", str(tmp_path / "f.npz")]) == 0
    assert "(computed in bf16)" in capsys.readouterr().out
    assert str(np.load(tmp_path / "f.npz")["precision"]) == "bf16"
    fp32 = load_inference(trained_run, "cpu", precision="fp32")
    assert fp32.precision == "fp32"

"""train.precision / train.channels_last: auto, resolved from (mocked) hardware facts and probe timings."""

import pytest
import torch
import yaml

import vgglab
import vgglab.machine as machine_facts
import vgglab.speed as speed
import vgglab.speed.choice as speed_choice
import vgglab.speed.probe as speed_probe
from vgglab import create_model
from vgglab.run.checkpoint import load_checkpoint
from vgglab.train.config import ConfigError, load_config

CPU = torch.device("cpu")


class FakeTimer:
    """Stands in for the probe: images/s per (precision, channels_last) arm, and the calls made."""

    def __init__(self, rates):
        self.rates = rates
        self.calls = []

    def __call__(self, model, arms, batch, device, budget_s):
        self.calls.append((list(arms), batch))
        return {a: self.rates[a] for a in arms}


@pytest.fixture
def model():
    return create_model("vgg11", width=0.125, num_classes=10, input_size=32, head="gap")


@pytest.fixture
def machine(monkeypatch):
    """Set the CPU's facts: native bf16 or not, and its capability string."""

    def set_facts(native: bool, capability: str = "AVX2"):
        monkeypatch.setattr(machine_facts, "native_bf16", lambda: native)
        monkeypatch.setattr(machine_facts, "cpu_capability", lambda: capability)

    return set_facts


def resolve(model, tmp_path, timer, precision="auto", channels_last="auto", batch=128, **kw):
    return speed.resolve_speed(precision, channels_last, model, batch, CPU, cache_dir=tmp_path, timer=timer, **kw)


def test_cpu_without_native_bf16_takes_fp32_and_the_faster_layout(model, machine, tmp_path):
    machine(native=False, capability="AVX2")
    timer = FakeTimer({("fp32", False): 59.2, ("fp32", True): 72.2})
    c = resolve(model, tmp_path, timer)
    assert (c.precision, c.channels_last) == ("fp32", True)
    assert timer.calls == [([("fp32", False), ("fp32", True)], 128)]  # bf16 is not even probed
    header = c.header("auto", "auto")
    assert "precision auto -> fp32 (no native bf16 on this CPU: AVX2)" in header
    assert "channels_last auto -> on (1.22x NCHW in the probe)" in header
    assert c.warning is None


def test_cpu_with_native_bf16_takes_bf16_only_where_the_probe_measures_it_faster(model, machine, tmp_path):
    machine(native=True, capability="AVX512")
    faster = FakeTimer({("fp32", False): 100.0, ("fp32", True): 95.0, ("bf16", False): 125.0, ("bf16", True): 139.0})
    c = resolve(model, tmp_path / "a", faster)
    assert (c.precision, c.channels_last) == ("bf16", True)
    assert "native bf16 (AVX512), 1.39x fp32" in c.precision_reason
    slower = FakeTimer({("fp32", False): 100.0, ("fp32", True): 95.0, ("bf16", False): 90.0, ("bf16", True): 99.0})
    c = resolve(model, tmp_path / "b", slower)
    assert (c.precision, c.channels_last) == ("fp32", False)
    assert "measured 0.99x fp32" in c.precision_reason and "1.05x channels_last" in c.channels_last_reason


def test_pinned_settings_are_used_as_given_without_a_probe(model, machine, tmp_path):
    machine(native=True)
    timer = FakeTimer({})
    c = resolve(model, tmp_path, timer, precision="fp32", channels_last=False)
    assert (c.precision, c.channels_last) == ("fp32", False) and timer.calls == []
    assert c.header("fp32", False) == "precision fp32 -> fp32 (set in the config), channels_last false -> off (set in the config)"


def test_pinned_bf16_on_emulated_hardware_warns_with_the_measured_slowdown(model, machine, tmp_path):
    machine(native=False, capability="AVX2")
    timer = FakeTimer({("fp32", True): 40.0, ("bf16", True): 2.5})
    c = resolve(model, tmp_path, timer, precision="bf16", channels_last=True)
    assert c.precision == "bf16"  # pinned: used as given, but said
    assert c.warning.startswith("warning: train.precision bf16 on a CPU without native bf16 (AVX2)")
    assert "16.0x slower than fp32" in c.warning and "\n" not in c.warning
    assert timer.calls == [([("fp32", True), ("bf16", True)], 8)]  # a small batch: emulated steps are slow


def test_probe_verdicts_are_cached_per_model_and_batch(model, machine, tmp_path):
    machine(native=False)
    timer = FakeTimer({("fp32", False): 50.0, ("fp32", True): 60.0})
    first = resolve(model, tmp_path, timer)
    again = resolve(model, tmp_path, timer)
    assert len(timer.calls) == 1 and (tmp_path / "speed_probe.json").is_file()
    assert again.channels_last == first.channels_last and "cached probe" in again.channels_last_reason
    resolve(model, tmp_path, timer, batch=32)  # another batch size is another probe
    other = create_model("vgg11", width=0.25, num_classes=10, input_size=32, head="gap")
    resolve(other, tmp_path, timer)  # and so is another model
    assert [b for _, b in timer.calls] == [128, 32, 128]


def test_cuda_takes_bf16_where_supported_else_fp16_and_channels_last(model, monkeypatch, tmp_path):
    cuda = torch.device("cuda")
    for supported, expected in ((True, "bf16"), (False, "fp16")):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda s=supported: s)
        c = speed.resolve_speed("auto", "auto", model, 512, cuda, cache_dir=tmp_path, timer=FakeTimer({}))
        assert (c.precision, c.channels_last) == (expected, True)


def test_a_recorded_choice_is_reused_on_the_same_machine_only(model, machine, tmp_path):
    machine(native=False)
    timer = FakeTimer({("fp32", False): 50.0, ("fp32", True): 60.0})
    recorded = resolve(model, tmp_path / "a", timer).to_dict()
    reused = resolve(model, tmp_path / "b", timer, previous=recorded)
    assert len(timer.calls) == 1 and reused.to_dict() == recorded
    elsewhere = {**recorded, "machine": {**recorded["machine"], "cpu": "another CPU"}}
    resolve(model, tmp_path / "c", timer, previous=elsewhere)
    assert len(timer.calls) == 2


def test_the_real_probe_times_each_arm_and_leaves_the_rng_alone(model):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    rates = speed.time_arms(model, [("fp32", False), ("fp32", True)], 8, CPU, budget_s=0.5)
    assert set(rates) == {("fp32", False), ("fp32", True)} and all(r > 0 for r in rates.values())
    torch.testing.assert_close(torch.rand(3), expected)
    assert all(p.grad is None for p in model.parameters())  # the probe trained a copy


def test_config_accepts_auto_and_refuses_other_values():
    cfg = load_config({})
    assert (cfg.train.precision, cfg.train.channels_last, cfg.train.compile) == ("auto", "auto", False)
    assert load_config({"train": {"channels_last": None}}).train.channels_last == "auto"  # configs of older runs
    assert load_config({"train": {"compile": "reduce-overhead"}}).train.compile == "reduce-overhead"
    with pytest.raises(ConfigError, match="train.channels_last: 'fast' is not one of auto, true, false"):
        load_config({"train": {"channels_last": "fast"}})
    with pytest.raises(
        ConfigError, match="train.compile: 'turbo' is not one of default, reduce-overhead, max-autotune, true, false"
    ):
        load_config({"train": {"compile": "turbo"}})
    assert (
        load_config({"resolved": {"precision": "fp32", "channels_last": False}}).sha256() == cfg.sha256()
    )  # the recipe's identity


def test_fit_records_the_setting_and_what_it_resolved_to_and_resume_reuses_it(tmp_path, tiny_config, monkeypatch, machine):
    machine(native=False, capability="AVX2")
    tiny_config["train"]["device"] = "cpu"  # the CPU's resolution, also where a GPU is present
    lines = []
    res = vgglab.fit(tiny_config, out=tmp_path / "run", log=lines.append)
    saved = yaml.safe_load((res.run_dir / "config.yaml").read_text())
    assert saved["train"]["precision"] == "auto" and saved["train"]["channels_last"] == "auto"
    assert saved["resolved"]["precision"] == "fp32" and isinstance(saved["resolved"]["channels_last"], bool)
    assert saved["resolved"]["machine"]["cpu_capability"] == "AVX2"
    ckpt = load_checkpoint(res.run_dir / "last.pt")
    assert ckpt["speed"]["precision_setting"] == "auto" and ckpt["speed"]["precision"] == "fp32"
    assert ckpt["speed"]["channels_last"] == saved["resolved"]["channels_last"]
    assert any(line.startswith("precision auto -> fp32 (no native bf16 on this CPU: AVX2)") for line in lines), lines

    def no_probe(*a, **k):
        raise AssertionError("resume probed again instead of reusing the recorded choice")

    monkeypatch.setattr(speed_probe, "time_arms", no_probe)
    monkeypatch.setattr(speed_probe, "ProbeCache", lambda *a: pytest.fail("resume looked up the probe cache"))
    again = vgglab.fit(overrides=["train.epochs=3"], resume=res.run_dir, log=lambda *_: None)
    assert load_checkpoint(again.run_dir / "last.pt")["speed"]["channels_last"] == ckpt["speed"]["channels_last"]


def test_eval_reuses_the_recorded_choice_on_the_same_machine_only(tmp_path, tiny_config, machine, monkeypatch):
    from vgglab.evaluate import inference

    machine(native=False)
    res = vgglab.fit(
        {**tiny_config, "train": {**tiny_config["train"], "epochs": 1, "channels_last": True, "device": "cpu"}},
        out=tmp_path / "run",
        log=lambda *_: None,
    )
    inf = inference.load_inference(res.run_dir)
    assert (inf.precision, inf.channels_last) == ("fp32", True)
    assert inf.model.features.block1.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    real = machine_facts.machine_info
    monkeypatch.setattr(machine_facts, "machine_info", lambda: {**real(), "cpu": "another CPU"})
    inf = inference.load_inference(res.run_dir)
    assert (inf.precision, inf.channels_last) == ("fp32", False)


@pytest.mark.parametrize(
    "setting, mode", [(True, None), ("reduce-overhead", "reduce-overhead"), ("max-autotune", "max-autotune")]
)
def test_train_compile_compiles_training_and_evaluation_in_the_given_mode(tmp_path, tiny_config, monkeypatch, setting, mode):
    compiled = []

    def fake_compile(module, mode=None):
        compiled.append((type(module).__name__, mode))
        return module

    monkeypatch.setattr(torch, "compile", fake_compile)
    tiny_config["train"].update(epochs=1, compile=setting)
    vgglab.fit(tiny_config, out=tmp_path / "run", log=lambda *_: None)
    # the training step, the validation model and the final test's model, all in one mode
    assert compiled == [("VGG", mode)] * 3


@pytest.mark.slow
def test_train_compile_really_runs_on_this_machine(tmp_path, tiny_config):
    tiny_config["train"].update(epochs=1, compile=True)
    res = vgglab.fit(tiny_config, out=tmp_path / "run", log=lambda *_: None)
    assert 0 <= res.metrics["test_top1"] <= 1


def test_a_layout_verdict_within_the_probes_noise_is_measured_again_then_kept_at_the_safe_default(model, machine, tmp_path):
    """Issue 22: two equal arms must not flip the choice from one probe to the next."""
    machine(native=False, capability="AVX2")
    for rates in ({("fp32", False): 100.0, ("fp32", True): 99.0}, {("fp32", False): 99.0, ("fp32", True): 100.5}):
        timer = FakeTimer(rates)
        c = resolve(model, tmp_path / str(len(list(tmp_path.iterdir()))), timer)
        assert (c.precision, c.channels_last) == ("fp32", speed_choice.CPU_TIE_LAYOUT)
        assert len(timer.calls) == 2  # measured once more before deciding
        assert "a tie (within 3%): kept the layout never much slower on CPUs" in c.channels_last_reason
        assert "probe, measured twice" in c.channels_last_reason


def test_a_clear_difference_is_not_a_tie_and_a_noisy_probe_widens_the_margin(model, machine, tmp_path):
    machine(native=False, capability="AVX2")
    timer = FakeTimer({("fp32", False): 100.0, ("fp32", True): 90.0})
    c = resolve(model, tmp_path / "a", timer)
    assert c.channels_last is False and len(timer.calls) == 1 and "within" not in c.channels_last_reason

    class Noisy(FakeTimer):
        def __call__(self, *a):
            r = speed.Rates(super().__call__(*a))
            r.spread = 0.15  # steps of one arm varied by 15 %: a 10 % gap proves nothing
            return r

    noisy = Noisy({("fp32", False): 100.0, ("fp32", True): 90.0})
    c = resolve(model, tmp_path / "b", noisy)
    assert (
        c.channels_last is speed_choice.CPU_TIE_LAYOUT
        and len(noisy.calls) == 2
        and "within its noise (15%): inconclusive" in c.channels_last_reason
    )
    assert c.provisional and "the probe was inconclusive" in c.header("auto", "auto")


def test_time_arms_reports_its_spread(model):
    rates = speed.time_arms(model, [("fp32", False), ("fp32", True)], 4, CPU, budget_s=2.0, max_rounds=3)
    assert isinstance(rates, speed.Rates) and rates.spread >= 0.0


class NoisyTimer(FakeTimer):
    """A probe that shared its cores: the rates it returns, with the spread such a probe measures."""

    def __init__(self, rates, spread):
        super().__init__(rates)
        self.spread = spread

    def __call__(self, *a):
        r = speed.Rates(super().__call__(*a))
        r.spread = self.spread
        return r


def test_a_busy_probe_neither_flips_bf16_off_nor_poisons_the_cache_on_native_bf16(model, machine, tmp_path):
    """Issue 26: two busy processes made bf16 measure 0.90x fp32; the quiet run after must not inherit that."""
    machine(native=True, capability="AVX512")
    busy = NoisyTimer({("fp32", False): 100.0, ("fp32", True): 60.0, ("bf16", False): 90.0, ("bf16", True): 70.0}, spread=0.45)
    c = resolve(model, tmp_path, busy)
    assert c.precision == "bf16" and c.provisional
    assert "0.70x fp32 in the probe, measured twice, within its noise (45%): inconclusive, so bf16" in c.precision_reason
    assert "the probe was inconclusive" in c.header("auto", "auto") and "only" not in c.header("auto", "auto")
    quiet = NoisyTimer(
        {("fp32", False): 100.0, ("fp32", True): 110.0, ("bf16", False): 150.0, ("bf16", True): 170.0}, spread=0.01
    )
    c = resolve(model, tmp_path, quiet)
    assert len(quiet.calls) == 1  # the busy verdict was not kept: measured again
    assert (c.precision, c.channels_last, c.provisional) == ("bf16", True, False)
    again = resolve(model, tmp_path, quiet)
    assert len(quiet.calls) == 1 and "cached probe" in again.precision_reason and again.precision == "bf16"


def test_a_busy_probe_on_avx2_changes_nothing(model, machine, tmp_path):
    machine(native=False, capability="AVX2")
    busy = NoisyTimer({("fp32", False): 100.0, ("fp32", True): 80.0}, spread=0.6)
    c = resolve(model, tmp_path, busy)
    assert (c.precision, c.channels_last) == ("fp32", speed_choice.CPU_TIE_LAYOUT) and c.provisional
    assert [a for a, _ in busy.calls] == [[("fp32", False), ("fp32", True)]] * 2  # bf16 is never probed without native support


def test_a_clear_bf16_loss_on_a_quiet_probe_is_a_cached_fp32_verdict(model, machine, tmp_path):
    machine(native=True, capability="AVX512")
    quiet = NoisyTimer({("fp32", False): 100.0, ("fp32", True): 110.0, ("bf16", False): 50.0, ("bf16", True): 55.0}, spread=0.01)
    c = resolve(model, tmp_path, quiet)
    assert (c.precision, c.provisional) == ("fp32", False) and "measured 0.50x fp32" in c.precision_reason
    resolve(model, tmp_path, quiet)
    assert len(quiet.calls) == 1


def test_the_spread_is_a_median_over_rounds_not_the_worst_step():
    # arm b is 1.2x slower in every round but one, where another job stalled it 5x
    times = {("fp32", False): [1.0, 1.0, 1.0, 1.0, 1.0], ("fp32", True): [1.2, 1.2, 6.0, 1.2, 1.21]}
    rates = speed.rates_of(times, batch=10)
    assert rates[("fp32", False)] == pytest.approx(10.0) and rates[("fp32", True)] == pytest.approx(10 / 1.2)
    assert rates.spread < 0.01
    shared = {("fp32", False): [1.0, 1.6, 1.0, 2.0, 1.1], ("fp32", True): [1.9, 1.0, 1.5, 1.0, 1.2]}
    assert speed.rates_of(shared, batch=10).spread > 0.2  # busy throughout: the ratio wanders every round


@pytest.mark.parametrize(
    "content",
    ["[1, 2]", '{"KEY": 3}', '{"KEY": {"rates": [["fp32", "yes", -1]], "spread": 0}}', '{"KEY": {"rates": 5}}', "not json"],
)
def test_a_probe_cache_of_the_wrong_shape_is_measured_again_with_a_warning(model, machine, tmp_path, content):
    machine(native=False)
    timer = FakeTimer({("fp32", False): 50.0, ("fp32", True): 60.0})
    key = speed_probe.probe_key(machine_facts.machine_info(), model, 128, f"arms={[('fp32', False), ('fp32', True)]}")
    (tmp_path / "speed_probe.json").write_text(content.replace("KEY", key))
    with pytest.warns(UserWarning, match="speed probe cache"):
        c = resolve(model, tmp_path, timer)
    assert c.channels_last is True and len(timer.calls) == 1
    assert speed.ProbeCache(tmp_path).get(key)["rates"]  # rewritten whole


def test_vgglab_speed_forget_removes_the_cached_verdicts(model, machine, tmp_path, capsys):
    from vgglab.cli import main

    machine(native=False)
    resolve(model, tmp_path, FakeTimer({("fp32", False): 50.0, ("fp32", True): 60.0}))
    assert main(["speed", "--cache-dir", str(tmp_path)]) == 0
    assert "1 cached speed verdict" in capsys.readouterr().out
    assert main(["speed", "--forget", "--cache-dir", str(tmp_path)]) == 0
    assert "forgot 1 cached speed verdict" in capsys.readouterr().out and not (tmp_path / "speed_probe.json").exists()


def test_inference_probe_with_layouts_measures_both_layouts_and_keeps_the_faster(model, machine, tmp_path):
    """The probe recipe's descriptors: forward passes are the whole job, so the layout is measured too."""
    machine(native=True, capability="AVX512")
    timer = FakeTimer({("fp32", False): 7.3, ("fp32", True): 9.6, ("bf16", False): 11.4, ("bf16", True): 28.8})
    c = speed.resolve_inference_precision(model, CPU, cache_dir=tmp_path, timer=timer, layouts=True)
    assert (c.precision, c.channels_last) == ("bf16", True)
    assert timer.calls[0][0] == [("fp32", False), ("fp32", True), ("bf16", False), ("bf16", True)]
    machine(native=False, capability="AVX2")
    timer = FakeTimer({("fp32", False): 7.0, ("fp32", True): 5.0})
    c = speed.resolve_inference_precision(model, CPU, cache_dir=tmp_path / "other", timer=timer, layouts=True)
    assert (c.precision, c.channels_last) == ("fp32", False) and "no native bf16" in c.precision_reason


def test_apple_mps_is_picked_by_auto_after_cuda_and_runs_fp32_without_a_probe(model, monkeypatch, tmp_path):
    """Untested on real Apple hardware (none here): availability is patched."""
    from vgglab.device import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("mps") and resolve_device("mps") == torch.device("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto").type == "cuda"  # CUDA first
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    mps = torch.device("mps")
    c = speed.resolve_speed("auto", "auto", model, 128, mps, cache_dir=tmp_path, timer=FakeTimer({}))
    assert (c.precision, c.channels_last) == ("fp32", False) and "MPS" in c.precision_reason
    assert speed.resolve_inference_precision(model, mps, cache_dir=tmp_path, timer=FakeTimer({})).precision == "fp32"
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="MPS is not available"):
        resolve_device("mps")


def test_compile_on_mps_falls_back_in_one_warning(monkeypatch):
    from vgglab.train.loop import maybe_compile

    class OnMps(torch.nn.Module):
        def parameters(self, recurse=True):
            yield torch.nn.Parameter(torch.empty(1, device="meta"))

    monkeypatch.setattr(torch.Tensor, "device", property(lambda self: torch.device("mps")))
    module = OnMps()
    with pytest.warns(UserWarning, match="not used on Apple's MPS"):
        assert maybe_compile(module, True) is module

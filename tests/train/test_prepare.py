"""Run preparation: which config a resumed run uses, and the process it starts in."""

import pytest
import torch
import yaml

from vgglab.errors import VgglabError
from vgglab.run.checkpoint import save_checkpoint
from vgglab.train.config import ConfigError, load_config
from vgglab.train.prepare import read_run_config, start_process


def run_dir(tmp_path, tiny_config):
    """A run directory as fit leaves it (config.yaml, last.pt), without training."""
    d = tmp_path / "run"
    d.mkdir()
    cfg = load_config(tiny_config)
    cfg.resolved = {"precision": "fp32", "channels_last": False}
    (d / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict()))
    save_checkpoint({"epoch": 1}, d / "last.pt")
    return d


def test_a_resumed_run_uses_its_own_config_with_overrides(tmp_path, tiny_config):
    d = run_dir(tmp_path, tiny_config)
    cfg, ckpt = read_run_config(None, ["train.epochs=5"], d)
    assert cfg.train.epochs == 5 and cfg.model.name == "vgg11_bn" and ckpt["epoch"] == 1
    cfg, _ = read_run_config(tiny_config, ["train.epochs=5"], d)  # the same recipe beside it is fine
    assert cfg.train.epochs == 5 and cfg.resolved == {"precision": "fp32", "channels_last": False}


def test_a_different_config_beside_resume_is_refused_naming_the_keys(tmp_path, tiny_config):
    d = run_dir(tmp_path, tiny_config)
    other = {**tiny_config, "optim": {**tiny_config["optim"], "lr": 0.2}}
    with pytest.raises(
        ConfigError,
        match=rf"cannot resume {d} with --config .*: it differs from the run's config.yaml in optim.lr; "
        "omit --config to continue the run as it was, and give changes with --set",
    ):
        read_run_config(other, None, d)
    with pytest.raises(VgglabError, match="has no config.yaml"):
        read_run_config(None, None, tmp_path)


def test_config_differences_are_dotted_keys_and_ignore_what_auto_resolved(tiny_config):
    a = load_config(tiny_config)
    b = load_config(tiny_config, ["data.batch_size=64", "model.options.width=0.25"])
    b.resolved = {"precision": "bf16"}
    assert a.differences(b) == ["data.batch_size", "model.options"]
    assert a.differences(load_config(tiny_config)) == []


def test_start_process_checks_the_device_and_seeds(tiny_config):
    torch.manual_seed(123)
    info, device = start_process(load_config(tiny_config))
    assert device.type in ("cpu", "cuda") and not info.enabled and info.is_main
    assert torch.equal(torch.rand(3), (torch.manual_seed(0), torch.rand(3))[1])  # train.seed 0
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available on this machine"):
            start_process(load_config(tiny_config, ["train.device=cuda"]))
        with pytest.raises(ConfigError, match="fp16 needs CUDA"):
            start_process(load_config(tiny_config, ["train.precision=fp16", "train.device=cpu"]))

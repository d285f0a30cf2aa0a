"""Checkpoints and model.safetensors: written atomically, read back with their RunMeta, refused clearly."""

import pytest
import torch

from vgglab import RunMeta, create_model
from vgglab.data import Normalization
from vgglab.errors import VgglabError
from vgglab.run.checkpoint import (
    CheckpointError,
    load_checkpoint,
    meta_of,
    model_from_checkpoint,
    read_safetensors,
    resolve_checkpoint,
    save_checkpoint,
    save_safetensors,
)


def model():
    torch.manual_seed(0)
    return create_model("vgg11_bn", blocks=[[8], [16]], num_classes=3, input_size=8, head="gap").eval()


def meta(m):
    return RunMeta(
        ("cat", "dog", "eel"), 8, 9, m.config.to_dict(), Normalization("standardize", (0.5, 0.4, 0.3), (0.2, 0.25, 0.3))
    )


def test_a_checkpoint_round_trips_weights_and_metadata(tmp_path):
    m = model()
    ema = model()
    with torch.no_grad():
        next(ema.parameters()).add_(1.0)
    save_checkpoint({**meta(m).to_dict(), "model": m.state_dict(), "ema": ema.state_dict(), "epoch": 2}, tmp_path / "last.pt")
    ck = load_checkpoint(tmp_path)  # a run directory means its best.pt, else last.pt
    assert ck["format"] == "vgglab-checkpoint" and ck["version"] == 1 and ck["path"] == str(tmp_path / "last.pt")
    assert meta_of(ck) == meta(m)
    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(model_from_checkpoint(ck).eval()(x), ema(x))  # the average where there is one
    assert torch.equal(model_from_checkpoint(ck, use_ema=False).eval()(x), m(x))
    save_checkpoint({"epoch": 3}, tmp_path / "best.pt")
    assert resolve_checkpoint(tmp_path).name == "best.pt"


def test_safetensors_carry_the_same_runmeta(tmp_path):
    m = model()
    save_safetensors(m, meta(m), tmp_path / "model.safetensors", epoch=4)
    state, got = read_safetensors(tmp_path / "model.safetensors")
    assert got == meta(m) and got.normalization.divisor().tolist() == pytest.approx([0.2, 0.25, 0.3])
    assert all(torch.equal(state[k], v) for k, v in m.state_dict().items())


def test_bad_files_get_one_line_errors(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "nope.pt")
    with pytest.raises(CheckpointError, match=f"no best.pt or last.pt in run directory {tmp_path}"):
        load_checkpoint(tmp_path)
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="is not a vgglab checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    (tmp_path / "cut.pt").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(CheckpointError, match=r"cannot load checkpoint .*cut.pt: .*written completely\?\)$"):
        load_checkpoint(tmp_path / "cut.pt")
    m = model()
    save_safetensors(m, meta(m), tmp_path / "m.safetensors")
    (tmp_path / "half.safetensors").write_bytes((tmp_path / "m.safetensors").read_bytes()[:100])
    with pytest.raises(CheckpointError, match="cannot read .*half.safetensors: .*is it a complete .safetensors file"):
        read_safetensors(tmp_path / "half.safetensors")


def test_runmeta_refuses_foreign_or_newer_files():
    with pytest.raises(VgglabError, match="x.pt lacks classes, image_size, eval_resize, model_config, normalization"):
        RunMeta.from_mapping({}, "x.pt")
    d = meta(model()).to_dict()
    assert RunMeta.from_mapping(d, "x") == meta(model())
    with pytest.raises(VgglabError, match="written by a newer vgglab .*format 2"):
        RunMeta.from_mapping({**d, "version": 2}, "x.pt")

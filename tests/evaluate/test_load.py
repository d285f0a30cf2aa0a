"""vgglab.load_model: one call from a run, checkpoint or model.safetensors to a usable model."""

import pytest
import torch
from PIL import Image

import vgglab
from vgglab.evaluate import load_inference
from vgglab.evaluate.predict import load_image
from vgglab.run.checkpoint import load_checkpoint, model_from_checkpoint


def test_a_run_directory_gives_the_selected_model_in_eval_mode_with_its_metadata(trained_run):
    model = vgglab.load_model(trained_run, device="cpu")
    ckpt = load_checkpoint(trained_run / "best.pt")
    assert not model.training
    assert model.meta.classes == tuple(ckpt["classes"]) and model.meta.image_size == ckpt["image_size"]
    assert model.meta.normalization.to_dict() == ckpt["normalization"]
    ref = model_from_checkpoint(ckpt).eval()
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x))


def test_model_safetensors_loads_the_same_model_as_its_checkpoint(trained_run):
    from_file = vgglab.load_model(trained_run / "model.safetensors", device="cpu")
    from_ckpt = vgglab.load_model(trained_run / "best.pt", device="cpu")
    assert from_file.meta == from_ckpt.meta
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(from_file(x), from_ckpt(x))


def test_preprocess_matches_how_evaluation_and_predict_prepare_images(trained_run, tmp_path):
    model = vgglab.load_model(trained_run, device="cpu")
    inf = load_inference(trained_run)
    g = torch.Generator().manual_seed(0)
    rgb = torch.randint(0, 256, (3, 50, 70), generator=g, dtype=torch.uint8)
    Image.fromarray(rgb.permute(1, 2, 0).numpy()).save(tmp_path / "photo.png")
    expected = inf.prepare(load_image(inf, tmp_path / "photo.png"))  # what `vgglab predict` feeds
    with Image.open(tmp_path / "photo.png") as im:
        got = model.preprocess(im)
    assert got.shape == (1, 1, 32, 32)
    torch.testing.assert_close(got, expected)
    stored = torch.randint(0, 256, (4, 1, model.meta.eval_resize, model.meta.eval_resize), generator=g, dtype=torch.uint8)
    torch.testing.assert_close(model.preprocess(stored), inf.prepare(stored))  # a cached split's images
    assert model.preprocess(rgb).shape == (1, 1, 32, 32)  # any size, RGB to the model's gray


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: d / "missing.safetensors", "checkpoint not found"),
        (lambda d: d / "missing.pt", "checkpoint not found"),
        (lambda d: _junk(d / "junk.safetensors"), "cannot read .*junk.safetensors"),
    ],
)
def test_bad_paths_are_one_line_errors(tmp_path, make, message):
    with pytest.raises(vgglab.VgglabError, match=message) as err:
        vgglab.load_model(make(tmp_path))
    assert "\n" not in str(err.value)


def _junk(path):
    path.write_bytes(b"not a safetensors file")
    return path


def test_preprocess_refuses_float_images(trained_run):
    model = vgglab.load_model(trained_run, device="cpu")
    with pytest.raises(vgglab.VgglabError, match="uint8"):
        model.preprocess(torch.rand(1, 32, 32))

import pytest
import torch
import torchvision

from vgglab.models import SpecError, create_model, load_torchvision_weights, to_torchvision_state_dict

TORCHVISION_VGGS = ["vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn"]


# One BatchNorm model in the default run; all eight (about a minute) under -m slow, as CI runs.
@pytest.mark.parametrize("name", [n if n == "vgg11_bn" else pytest.param(n, marks=pytest.mark.slow) for n in TORCHVISION_VGGS])
def test_torchvision_weights_give_equal_outputs_and_round_trip(name):
    torch.manual_seed(1)
    reference = getattr(torchvision.models, name)(weights=None).eval()
    # non-trivial BatchNorm running statistics, so the mapping of buffers is tested too
    for m in reference.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    model = load_torchvision_weights(create_model(name), reference.state_dict()).eval()
    x = torch.randn(2, 3, 64, 64)  # any size: both pool adaptively to 7x7
    with torch.inference_mode():
        torch.testing.assert_close(model(x), reference(x), atol=1e-5, rtol=0)

    fresh = getattr(torchvision.models, name)(weights=None)
    fresh.load_state_dict(to_torchvision_state_dict(model), strict=True)
    for (k, a), (k2, b) in zip(fresh.state_dict().items(), reference.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(a, b)
    del reference, fresh, model


@pytest.mark.slow  # 5-8 s: in the slow suite (CI runs it), keeping the default run under 4 minutes
def test_mismatched_weights_list_the_offending_keys(tmp_path):
    sd = torchvision.models.vgg11(weights=None).state_dict()
    with pytest.raises(SpecError, match=r"missing from the file: features\.1\.bias.*features\.1\.running_mean"):
        load_torchvision_weights(create_model("vgg11_bn"), sd)
    with pytest.raises(
        SpecError, match=r"shape mismatch: classifier\.6\.weight \(1000, 4096\) vs head\.classifier\.weight \(10, 4096\)"
    ):
        load_torchvision_weights(create_model("vgg11", num_classes=10), sd)
    path = tmp_path / "vgg11.pth"
    torch.save(sd, path)
    model = load_torchvision_weights(create_model("vgg11"), path)
    assert torch.equal(model.features.block1.conv1.weight, sd["features.0.weight"])


def test_weight_file_that_runs_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (exec, ("import pathlib; pathlib.Path('pwned').touch()",))

    path = tmp_path / "evil.pth"
    torch.save({"features.0.weight": Evil()}, path)
    with pytest.raises(SpecError, match="cannot read"):
        load_torchvision_weights(create_model("vgg11"), path)
    assert not (tmp_path / "pwned").exists()


def test_models_without_torchvision_layout_are_refused():
    with pytest.raises(SpecError, match="imagenet"):
        to_torchvision_state_dict(create_model("vgg16_cifar"))

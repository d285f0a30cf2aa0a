import json

import pytest
import torch

import vgglab
from vgglab.cli import main
from vgglab.models import SpecError, create_model, create_model_from_spec, list_models, summarize

PUBLISHED_PARAMS = {
    # torchvision's documented counts at 224x224 / 1000 classes
    "vgg11": 132_863_336,
    "vgg13": 133_047_848,
    "vgg16": 138_357_544,
    "vgg19": 143_667_240,
    "vgg16_bn": 138_365_992,
    # the tutorials' models at 10 classes
    "vgg16_cifar": 15_255_626,
    "vgg_cifar_i": 9_878_794,
    "vgg_cifar_ii": 13_878_282,
    "vgg_cifar_iii": 23_317_514,
}


@pytest.mark.parametrize("name", sorted(PUBLISHED_PARAMS))
def test_parameter_counts_match_published(name):
    with torch.device("meta"):
        model = create_model(name)
    assert sum(p.numel() for p in model.parameters()) == PUBLISHED_PARAMS[name]


def test_registry_names_cover_the_paper():
    names = set(list_models())
    for base in ["vgg11", "vgg13", "vgg16_c", "vgg16", "vgg19"]:
        assert base in names and f"{base}_bn" in names
    assert "vgg11_lrn" in names and "vgg11_lrn_bn" not in names
    assert {"vgg16_cifar", "vgg_cifar_i", "vgg_cifar_ii", "vgg_cifar_iii"} <= names
    assert list_models("vgg16*") == ["vgg16", "vgg16_bn", "vgg16_c", "vgg16_c_bn", "vgg16_cifar"]


def test_config_c_has_1x1_convs_as_last_conv_of_blocks_3_to_5():
    with torch.device("meta"):
        model = create_model("vgg16_c")
    kernels = {n: m.kernel_size[0] for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)}
    assert [n for n, k in kernels.items() if k == 1] == [
        "features.block3.conv3",
        "features.block4.conv3",
        "features.block5.conv3",
    ]
    assert len(kernels) == 13


def test_lrn_sits_after_first_conv_only_in_a_lrn():
    with torch.device("meta"):
        model = create_model("vgg11_lrn")
    names = model.layer_names()
    assert names[:3] == ["features.block1.conv1", "features.block1.relu1", "features.block1.lrn"]
    assert sum(isinstance(m, torch.nn.LocalResponseNorm) for m in model.modules()) == 1


def test_unknown_model_name_suggests_close_names():
    with pytest.raises(SpecError, match=r"unknown model 'vgg61'.*did you mean.*'vgg16'"):
        create_model("vgg61")


def test_unknown_model_option_is_named():
    with pytest.raises(SpecError, match=r"unknown model option 'num_clases'.*'num_classes'"):
        create_model("vgg11", num_clases=10)


def test_spec_with_the_tutorials_typo_fails_naming_the_key():
    spec = {"blocks": [[{"out_channels": 64, "in_ckjhannels": 3}]], "head": "gap", "input_size": 32}
    with pytest.raises(SpecError, match=r"in_ckjhannels.*valid keys: out_channels, kernel_size"):
        create_model_from_spec(spec)
    with pytest.raises(SpecError, match=r"unknown key 'num_clases'.*'num_classes'"):
        create_model_from_spec({"blocks": [[8]], "num_clases": 3})
    with pytest.raises(SpecError, match=r"head: unknown key 'hiden'"):
        create_model_from_spec({"blocks": [[8]], "head": {"type": "cifar", "hiden": 3}})
    with pytest.raises(SpecError, match=r"model spec.blocks\[0\].convs\[0\].out_channels: required, but not given"):
        create_model_from_spec({"blocks": [[{"kernel_size": 3}]]})
    with pytest.raises(SpecError, match=r"model spec.width: expected a number, got 'x' \(str\)"):
        create_model_from_spec({"blocks": [[8]], "width": "x"})


def test_custom_spec_builds_the_described_network():
    spec = {
        "name": "tiny",
        "blocks": [[16, 16], {"convs": [32, {"out_channels": 32, "kernel_size": 1}], "pool": "max"}],
        "head": {"type": "cifar", "hidden": 64, "num_hidden": 1},
        "num_classes": 5,
        "input_size": 32,
        "batch_norm": True,
    }
    model = create_model_from_spec(spec)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 5)
    assert model.head.fc1.in_features == 32 * 8 * 8  # computed from input size and pools
    assert model.features.block2.conv2.kernel_size == (1, 1)
    # the config round-trips through a plain dict, as a checkpoint stores it
    again = create_model_from_spec(model.config.to_dict())
    assert again.config == model.config


def test_too_small_input_names_the_minimum():
    model = create_model("vgg11_bn", head="gap", num_classes=3)
    with pytest.raises(SpecError, match="at least 32x32"):
        model(torch.randn(1, 3, 16, 16))
    with pytest.raises(SpecError, match="at least 32x32"):
        create_model("vgg16_cifar", input_size=16)


def test_cifar_head_at_another_size_is_computed_and_mismatch_is_clear():
    model = create_model("vgg16_cifar", input_size=64, width=0.125)
    assert model.head.fc1.in_features == 64 * 2 * 2
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 10)
    with pytest.raises(SpecError, match="input_size=32"):
        model(torch.randn(2, 3, 32, 32))


def test_width_multiplier_and_paper_init():
    model = create_model("vgg11", width=0.5, head="gap", num_classes=4, init="paper")
    assert model.features.block1.conv1.out_channels == 32
    w = model.features.block5.conv2.weight
    assert abs(w.std().item() - 0.01) < 1e-3
    kaiming = create_model("vgg11", width=0.5, head="gap", num_classes=4)
    w = kaiming.features.block5.conv2.weight  # fan_out = 256 * 9
    assert abs(w.std().item() - (2 / (256 * 9)) ** 0.5) < 2e-3


def test_receptive_field_of_vgg16():
    with torch.device("cpu"):
        model = create_model("vgg16", width=0.0625, head="gap")  # geometry does not depend on width
    layers = {row["name"]: row for row in summarize(model, 32)["layers"]}
    assert layers["features.block1.conv2"]["receptive_field"] == 5
    assert layers["features.block3.conv3"]["receptive_field"] == 40
    assert layers["features.block3.pool"]["receptive_field"] == 44
    assert layers["features.block3.pool"]["stride"] == 8


def test_summary_counts_match_torch():
    model = create_model("vgg16_cifar")
    s = summarize(model)
    assert s["total_params"] == 15_255_626 == sum(row["params"] for row in s["layers"])
    assert sum(s["blocks"].values()) == s["total_params"]
    # conv MACs of block1.conv1 at 32x32: 64 out * 3 in * 9 taps * 32 * 32 positions
    layer = next(row for row in s["layers"] if row["name"] == "features.block1.conv1")
    assert layer["macs"] == 64 * 3 * 9 * 32 * 32
    assert s["macs"] == sum(row["macs"] for row in s["layers"])


def test_cli_summary_json_and_models(capsys):
    assert main(["summary", "vgg_cifar_i", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["total_params"] == 9_878_794
    assert {"trainable_params", "macs", "blocks", "layers"} <= set(out)
    assert main(["models", "vgg_cifar_*"]) == 0
    text = capsys.readouterr().out
    assert "13,878,282" in text and "vgg16 " not in text
    assert main(["summary", "vgg16x"]) == 2
    assert "did you mean" in capsys.readouterr().err


def test_public_api():
    assert vgglab.list_models() == list_models()
    assert isinstance(vgglab.create_model("vgg_cifar_i", width=0.25), vgglab.VGG)

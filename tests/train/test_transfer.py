import copy

import pytest
import torch
import torchvision

import vgglab
from vgglab import create_model
from vgglab.run.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from vgglab.train.transfer import TransferError, init_from, transfer


@pytest.fixture(scope="module")
def torchvision_vgg16_bn(tmp_path_factory):
    torch.manual_seed(3)
    tv = torchvision.models.vgg16_bn(weights=None)
    for m in tv.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.weight.data.uniform_(0.5, 1.5)
    path = tmp_path_factory.mktemp("tv") / "vgg16_bn-random.pth"
    torch.save(tv.state_dict(), path)
    return path, tv.state_dict()


def test_cross_geometry_from_torchvision_into_a_cifar_head(torchvision_vgg16_bn):
    path, sd = torchvision_vgg16_bn
    model = create_model("vgg16_bn", head="cifar", num_classes=10, input_size=32)
    report = init_from(model, path, "cross-geometry")
    convs = [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)]
    bns = [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(convs) == 13 and len(bns) == 13
    tv_convs = [k for k in sd if k.startswith("features.") and k.endswith(".weight") and sd[k].dim() == 4]
    for (name, conv), tv_key in zip(convs, tv_convs, strict=True):
        assert torch.equal(conv.weight, sd[tv_key]), name
    for (name, bn), tv_key in zip(bns, [k for k in sd if k.endswith("running_mean")], strict=True):
        assert torch.equal(bn.running_mean, sd[tv_key]), name
    skipped = {k for k, _, _ in report.skipped}
    assert {"head.fc1.weight", "head.fc2.weight", "head.classifier.weight"} <= skipped
    assert all(k.startswith("head.") for k in skipped)
    text = report.format()
    assert "skipped  head.fc1.weight [4096, 25088] (target [512, 512])" in text


def test_fc6_folded_over_its_taps_equals_pooling_a_1x1_map(torchvision_vgg16_bn):
    path, _ = torchvision_vgg16_bn
    source = create_model("vgg16_bn")
    vgglab.models.load_torchvision_weights(source, path)
    target = create_model("vgg16_bn", head="cifar", hidden=4096, input_size=32)
    report = init_from(target, path, "cross-geometry", fold_fc6=True)
    assert [k for k, _, _ in report.reshaped] == ["head.fc1.weight"]
    f = torch.randn(2, 512, 1, 1)
    with torch.no_grad():
        via_pool = source.head.fc1(torch.flatten(source.head.pool(f), 1))
        folded = target.head.fc1(torch.flatten(f, 1))
    torch.testing.assert_close(folded, via_pool, atol=1e-4, rtol=1e-4)


def test_shallow_to_deep_paper_rule():
    shallow = create_model("vgg11", width=0.25, num_classes=10, input_size=32, hidden=64)
    deep = create_model("vgg16", width=0.25, num_classes=10, input_size=32, hidden=64)
    fresh = copy.deepcopy(deep.state_dict())
    report = transfer(deep, shallow.state_dict(), shallow.config, "shallow-to-deep")
    matched = {k for k, _ in report.matched}
    first_four = {"features.block1.conv1", "features.block2.conv1", "features.block3.conv1", "features.block3.conv2"}
    assert {k.rsplit(".", 1)[0] for k in matched if k.startswith("features.")} == first_four
    assert {k.rsplit(".", 1)[0] for k in matched if k.startswith("head.")} == {"head.fc1", "head.fc2", "head.classifier"}
    sd = deep.state_dict()
    for k in matched:
        assert torch.equal(sd[k], shallow.state_dict()[k]), k
    for k in ["features.block1.conv2.weight", "features.block4.conv1.weight", "features.block5.conv3.weight"]:
        assert torch.equal(sd[k], fresh[k]), k  # left at the fresh initialisation
    # block4.conv1 has the same shape in both nets, but the paper rule leaves it fresh; rule "all" takes it
    assert not torch.equal(sd["features.block4.conv1.weight"], shallow.state_dict()["features.block4.conv1.weight"])
    deep_all = create_model("vgg16", width=0.25, num_classes=10, input_size=32, hidden=64)
    report_all = transfer(deep_all, shallow.state_dict(), shallow.config, "shallow-to-deep", match="all")
    assert "features.block4.conv1.weight" in {k for k, _ in report_all.matched}


def test_modes_that_cannot_apply_are_errors():
    a = create_model("vgg11", width=0.25, head="gap", num_classes=3)
    b = create_model("vgg13", width=0.25, head="gap", num_classes=3)
    with pytest.raises(TransferError, match="exact init needs the same architecture"):
        transfer(b, a.state_dict(), a.config, "exact")
    with pytest.raises(TransferError, match="same conv configuration; features.block1.conv2.weight"):
        transfer(a, b.state_dict(), b.config, "features")
    c = create_model("vgg11", width=0.5, head="gap", num_classes=3)
    with pytest.raises(TransferError, match="matched nothing"):
        transfer(c, {"head.classifier.weight": torch.zeros(1, 1)}, a.config, "shallow-to-deep")


def test_a_checkpoint_crafted_to_run_code_is_refused(tmp_path):
    class Payload:
        def __reduce__(self):
            return (exec, (f"open({str(tmp_path / 'pwned')!r}, 'w').write('x')",))

    evil = tmp_path / "evil.pt"
    torch.save({"format": "vgglab-checkpoint", "model": Payload()}, evil)
    with pytest.raises(CheckpointError, match="cannot load checkpoint"):
        load_checkpoint(evil)
    with pytest.raises(CheckpointError):
        init_from(create_model("vgg11", width=0.25), evil, "exact")
    tv_evil = tmp_path / "vgg16-evil.pth"
    torch.save({"features.0.weight": Payload()}, tv_evil)
    with pytest.raises(TransferError, match="weights_only"):
        init_from(create_model("vgg16", width=0.25), tv_evil, "features")
    assert not (tmp_path / "pwned").exists()


def test_fine_tuning_freezes_blocks_bit_identically(tmp_path, tiny_config):
    tiny_config["train"]["epochs"] = 1
    base = vgglab.fit(tiny_config, out=tmp_path / "base", log=lambda *_: None).run_dir
    start = load_checkpoint(base / "last.pt")["model"]
    cfg = copy.deepcopy(tiny_config)
    cfg["train"].update(init_from=str(base), init_mode="exact", freeze=["block1", "block2"])
    cfg["optim"]["head_lr_mult"] = 10.0
    cfg["optim"]["weight_decay"] = 5e-4
    run = vgglab.fit(cfg, out=tmp_path / "tuned", log=lambda *_: None).run_dir
    after = load_checkpoint(run / "last.pt")
    for k, v in after["model"].items():
        if k.startswith(("features.block1.", "features.block2.")):
            assert torch.equal(v, start[k]), f"{k} changed although frozen"
    assert not torch.equal(after["model"]["features.block3.conv1.weight"], start["features.block3.conv1.weight"])
    assert not torch.equal(after["model"]["features.block3.bn1.running_mean"], start["features.block3.bn1.running_mean"])
    lrs = sorted({g["lr"] for g in after["optimizer"]["param_groups"]})
    assert lrs == pytest.approx([0.05, 0.5])
    assert "matched" in (run / "init_report.txt").read_text()
    # unfreezing after the first epoch: block1 trains in epoch 2
    cfg["train"].update(epochs=2, unfreeze_after=1)
    run2 = vgglab.fit(cfg, out=tmp_path / "unfrozen", log=lambda *_: None).run_dir
    assert not torch.equal(
        load_checkpoint(run2 / "last.pt")["model"]["features.block1.conv1.weight"], start["features.block1.conv1.weight"]
    )
    with pytest.raises(vgglab.VgglabError, match="train.freeze: unknown part 'block9'"):
        vgglab.fit({**cfg, "train": {**cfg["train"], "freeze": ["block9"]}}, out=tmp_path / "bad", log=lambda *_: None)


def test_save_checkpoint_round_trip(tmp_path):
    save_checkpoint({"epoch": 3, "w": torch.arange(4)}, tmp_path / "c.pt")
    assert torch.equal(load_checkpoint(tmp_path / "c.pt")["w"], torch.arange(4))


# end to end (tens of seconds): the slow suite, which CI runs (issue 36's 4-minute fast suite)
@pytest.mark.slow
def test_finetune_recipe_end_to_end_from_torchvision_weights(tmp_path, torchvision_vgg16_bn, monkeypatch):
    """The recipe's own init_from (torchvision:vgg16_bn) read from the torch hub cache, offline."""
    import shutil
    from pathlib import Path

    from ..data.test_sources import make_tree

    path, sd = torchvision_vgg16_bn
    hub = tmp_path / "torch_home" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    shutil.copy(path, hub / torchvision.models.VGG16_BN_Weights.DEFAULT.url.rsplit("/", 1)[1])
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", lambda *a, **k: pytest.fail("went to the network"))
    tree = make_tree(tmp_path / "tree", per_class=4, size=36)
    recipe = Path(__file__).resolve().parents[2] / "configs" / "finetune_imagefolder.yaml"
    overrides = [
        f"data.root={tree}",
        "data.image_size=32",
        "data.val_size=2",
        "data.batch_size=4",
        f"data.cache_dir={tmp_path / 'c'}",
        "train.epochs=1",
        "train.precision=fp32",
        "log.progress=none",
    ]
    lines = []
    res = vgglab.fit(recipe, overrides, out=tmp_path / "ft", log=lines.append)
    assert any("initialised from" in row and "all-but-last" in row for row in lines)
    # the first screen: from the command to the header line, the init summary and what did not
    # match, not 105 tensor names; the full list is in the run directory
    header = next(i for i, row in enumerate(lines) if "params) on" in row)
    first_screen = "\n".join(lines[: header + 1]).splitlines()
    assert len(first_screen) < 15, first_screen
    init = next(row for row in lines if "initialised from" in row)
    assert "95 tensors matched, 0 reshaped, 2 skipped, 2 new" in init and f"listed in {res.run_dir / 'init_report.txt'}" in init
    assert "\n  skipped: head.classifier.weight" in init and "\n  new: head.classifier.weight" in init
    full = (res.run_dir / "init_report.txt").read_text().splitlines()
    assert len(full) == 1 + 95 + 2 + 2 and full[1].startswith("  matched  features.block1.conv1.weight")
    assert "  matched  head.fc1.weight [4096, 25088]" in full and "  matched  head.fc2.weight [4096, 4096]" in full
    ckpt = load_checkpoint(res.run_dir / "last.pt")
    assert torch.equal(ckpt["model"]["features.block1.conv1.weight"], sd["features.0.weight"])  # frozen in epoch 1
    assert ckpt["normalization"]["mean"] == pytest.approx([0.485, 0.456, 0.406])
    assert ckpt["model"]["head.classifier.weight"].shape == (2, 4096)


def test_all_but_last_keeps_every_pretrained_layer_but_the_class_layer():
    source = create_model("vgg11", width=0.125, head={"type": "imagenet", "hidden": 32}, num_classes=10, input_size=32)
    target = create_model("vgg11", width=0.125, head={"type": "imagenet", "hidden": 32}, num_classes=3, input_size=32)
    report = transfer(target, source.state_dict(), source.config, "all-but-last")
    assert [k for k, *_ in report.skipped] == ["head.classifier.weight", "head.classifier.bias"]
    assert [k for k, _ in report.new] == ["head.classifier.weight", "head.classifier.bias"]
    assert torch.equal(target.head.fc1.weight, source.head.fc1.weight) and torch.equal(target.head.fc2.bias, source.head.fc2.bias)
    other = create_model("vgg11", width=0.125, head={"type": "imagenet", "hidden": 64}, num_classes=3, input_size=32)
    with pytest.raises(TransferError, match="all-but-last init needs the same layers"):
        transfer(other, source.state_dict(), source.config, "all-but-last")

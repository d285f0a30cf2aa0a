"""The linear probe (issue 41): descriptors cached once, a head fitted on them and folded into the
model, the run as ordinary as any other; the cache's key and its recovery after Ctrl-C; bad inputs."""

import errno
import json

import numpy as np
import pytest
import torch
from PIL import Image

import vgglab
from vgglab.data import load_dataset
from vgglab.data.normalization import Normalization
from vgglab.data.stream import make_loader
from vgglab.errors import VgglabError
from vgglab.models import VGG, create_model
from vgglab.run.checkpoint import load_checkpoint, model_from_checkpoint, save_safetensors
from vgglab.run.meta import RunMeta
from vgglab.train import feature_cache
from vgglab.train.config import ConfigError, load_config


def make_tree(root, n_train=30, n_test=12, classes=("a", "b", "c"), seed=0):
    """JPEGs whose class shows in a colour channel, of varied sides."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("test", n_test)):
        for i in range(n):
            c = i % len(classes)
            d = root / split / classes[c]
            d.mkdir(parents=True, exist_ok=True)
            w, h = (int(v) for v in rng.integers(40, 80, 2))
            a = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            a[..., c % 3] = a[..., c % 3] // 4 + 180
            Image.fromarray(a).save(d / f"{i:03d}.jpg", quality=90)
    return root


def make_weights(path, seed=0, head=None):
    """A small pretrained-like VGG-11 with an ImageNet-style head (two hidden FC layers), as safetensors."""
    torch.manual_seed(seed)
    m = create_model("vgg11", width=0.125, head=head or {"type": "imagenet", "hidden": 32}, num_classes=10, input_size=32)
    meta = RunMeta(
        tuple(f"k{i}" for i in range(10)), 32, 36, m.config.to_dict(), Normalization("standardize", (0.5,) * 3, (0.25,) * 3)
    )
    save_safetensors(m, meta, path)
    return path


@pytest.fixture
def setup(tmp_path):
    tree = make_tree(tmp_path / "tree")
    weights = make_weights(tmp_path / "w.safetensors")
    return tmp_path, tree, weights


def overrides(tmp_path, tree, weights, *more):
    return [
        f"data.root={tree}",
        "data.image_size=32",
        "data.val_size=6",
        f"data.cache_dir={tmp_path / 'cache'}",
        f"train.init_from={weights}",
        "model.name=vgg11",
        "train.precision=fp32",
        "train.channels_last=false",
        "log.progress=none",
        *more,
    ]


def probe(tmp_path, tree, weights, name, *more):
    lines = []
    res = vgglab.fit("probe_imagefolder", overrides(tmp_path, tree, weights, *more), out=tmp_path / name, log=lines.append)
    return res, lines


class Forwards:
    """Counts images through the network's conv part."""

    def __init__(self, monkeypatch):
        self.images = 0
        original = VGG.forward_features

        def counted(model, x):
            self.images += len(x)
            return original(model, x)

        monkeypatch.setattr(VGG, "forward_features", counted)


def test_a_second_run_with_another_head_setting_does_no_forward_pass(setup, monkeypatch):
    tmp_path, tree, weights = setup
    first, lines = probe(tmp_path, tree, weights, "r1")
    assert json.loads((first.run_dir / "probe.json").read_text())["descriptors_computed"] == 42
    assert any(line.startswith("probe: C=") and "chosen on validation" in line for line in lines)
    grid = first.metrics["probe"]["grid"]
    assert [g["C"] for g in grid] == [0.001, 0.01, 0.1, 1.0, 10.0, 100.0] and all("val_top1" in g for g in grid)
    counted = Forwards(monkeypatch)
    second, lines = probe(tmp_path, tree, weights, "r2", "probe.c_grid=[0.3,3]")
    assert counted.images == 0 and second.metrics["probe"]["descriptors_computed"] == 0
    assert "descriptors: 0 computed, 42 read" in "\n".join(lines)
    assert second.metrics["probe"]["C"] in (0.3, 3.0)


def test_a_changed_or_added_file_is_recomputed_and_nothing_else(setup, monkeypatch):
    tmp_path, tree, weights = setup
    probe(tmp_path, tree, weights, "r1")
    changed = tree / "train" / "a" / "000.jpg"
    Image.fromarray(np.zeros((50, 60, 3), dtype=np.uint8)).save(changed)
    Image.fromarray(np.full((50, 60, 3), 200, dtype=np.uint8)).save(tree / "test" / "b" / "new.jpg")
    counted = Forwards(monkeypatch)
    res, _ = probe(tmp_path, tree, weights, "r2")
    assert res.metrics["probe"]["descriptors_computed"] == 2 and counted.images == 2


def test_other_weights_never_reuse_a_descriptor(setup):
    tmp_path, tree, weights = setup
    probe(tmp_path, tree, weights, "r1")
    other = make_weights(tmp_path / "other.safetensors", seed=1)
    res, _ = probe(tmp_path, tree, other, "r2")
    assert res.metrics["probe"]["descriptors_computed"] == 42
    again, _ = probe(tmp_path, tree, weights, "r3", "probe.layer=fc6")  # another layer: another cache
    assert again.metrics["probe"]["descriptors_computed"] == 42


@pytest.mark.parametrize(
    "layer,more", [("fc7", ()), ("fc6", ()), ("pool5", ()), ("fc7", ("probe.head=sgd", "train.epochs=2"))], ids=str
)
def test_the_folded_model_equals_the_probe_on_the_test_split(setup, layer, more):
    tmp_path, tree, weights = setup
    res, _ = probe(tmp_path, tree, weights, "r", f"probe.layer={layer}", *more)
    ckpt = load_checkpoint(res.run_dir)
    model = model_from_checkpoint(ckpt).eval()
    cfg = load_config(res.run_dir / "config.yaml")
    ds = load_dataset(cfg.data)
    loader = make_loader(ds.test, 8, image_size=32, norm=Normalization.from_dict(ckpt["normalization"]), channels_last=False)
    with torch.inference_mode():
        logits = torch.cat([model(x) for x, _ in loader])
    # the probe's own logits, from the cached descriptors and the fitted head
    identity_dir = res.metrics["probe"]["cache"]
    cache = feature_cache.FeatureCache(None, {})
    cache.dir = type(cache.dir)(identity_dir)
    desc = torch.from_numpy(cache.read(feature_cache.image_keys(ds.test)))
    head = model.head.classifier
    torch.testing.assert_close(logits, head(desc), rtol=1e-4, atol=1e-4)
    top1 = (logits.argmax(1) == ds.test.y).float().mean().item()
    assert top1 == pytest.approx(res.metrics["test_top1"])
    # eval takes the run as it is, and says the same
    assert vgglab.load_run(res.run_dir).evaluate()["top1"] == pytest.approx(res.metrics["test_top1"])


def test_ctrl_c_while_caching_keeps_what_was_written_and_the_next_run_continues(setup, monkeypatch):
    tmp_path, tree, weights = setup
    real_add = feature_cache.FeatureCache.add
    calls = {"n": 0}

    def add_then_stop(self, keys, x):
        real_add(self, keys, x)
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(feature_cache.FeatureCache, "add", add_then_stop)
    with pytest.raises(KeyboardInterrupt):
        probe(tmp_path, tree, weights, "r1", "data.eval_batch_size=4")
    monkeypatch.setattr(feature_cache.FeatureCache, "add", real_add)
    res, _ = probe(tmp_path, tree, weights, "r2", "data.eval_batch_size=4")
    assert res.metrics["probe"]["descriptors_computed"] == 42 - 8


def test_augmented_views_are_cached_named_and_sampled_by_a_head_the_engine_trains(setup):
    tmp_path, tree, weights = setup
    sets = ("probe.views=2", "train.epochs=3", "schedule.name=cosine", "data.batch_size=8")
    res, lines = probe(tmp_path, tree, weights, "r1", *sets)
    assert "2 augmented views per training image" in lines[0]
    assert res.metrics["probe"]["descriptors_computed"] == 42 + 2 * 24
    assert res.metrics["probe"]["head"] == "sgd" and sum(line.startswith("head epoch ") for line in lines) == 3
    assert len(vgglab.load_run(res.run_dir).metrics) == 3  # one metrics.csv row per epoch of the head
    again, _ = probe(tmp_path, tree, weights, "r2", *sets)  # the same seed: the same views drawn, the same head
    assert again.metrics["probe"]["descriptors_computed"] == 0
    a, b = (load_checkpoint(r.run_dir)["model"]["head.classifier.weight"] for r in (res, again))
    assert torch.equal(a, b)
    other, _ = probe(tmp_path, tree, weights, "r3", *sets, "train.seed=1")  # another seed: other views, computed once
    assert other.metrics["probe"]["descriptors_computed"] == 2 * 24
    fitted, _ = probe(tmp_path, tree, weights, "r4", "probe.views=2", "probe.head=logistic", "probe.c_grid=[1]")
    assert fitted.metrics["probe"]["head"] == "logistic" and fitted.metrics["probe"]["descriptors_computed"] == 0


def test_appendix_b_dense_descriptor(setup):
    tmp_path, tree, weights = setup
    res, lines = probe(tmp_path, tree, weights, "r1", "probe.descriptor=dense", "probe.scales=[32,48]")
    assert "dense descriptor" in lines[0] and 0.0 <= res.metrics["test_top1"] <= 1.0
    stacked, _ = probe(tmp_path, tree, weights, "r2", "probe.descriptor=dense", "probe.scales=[32,48]", "probe.scale_pool=stack")
    assert stacked.metrics["probe"]["descriptors_computed"] == 42  # another pooling: another cache


def one_line(exc_info) -> str:
    text = str(exc_info.value)
    assert "\n" not in text
    return text


def test_bad_inputs_are_one_line_each(setup, tmp_path, monkeypatch):
    _, tree, weights = setup
    with pytest.raises(ConfigError) as e:  # a layer that does not exist
        probe(tmp_path, tree, weights, "x1", "probe.layer=fc9")
    assert "probe.layer" in one_line(e) and "fc7" in str(e.value)
    vgg13 = create_model("vgg13", width=0.125, head={"type": "imagenet", "hidden": 32}, num_classes=10, input_size=32)
    meta = RunMeta(
        tuple(f"k{i}" for i in range(10)), 32, 36, vgg13.config.to_dict(), Normalization("standardize", (0.5,) * 3, (0.25,) * 3)
    )
    save_safetensors(vgg13, meta, tmp_path / "vgg13.safetensors")
    with pytest.raises(ConfigError) as e:  # weights of another architecture than the recipe's
        probe(tmp_path, tree, tmp_path / "vgg13.safetensors", "x2")
    assert "holds a vgg13" in one_line(e) and "model.name" in str(e.value)
    gap = make_weights(tmp_path / "gap.safetensors", head="gap")
    with pytest.raises(ConfigError) as e:  # Appendix B on a network without FC layers to run as convolutions
        probe(tmp_path, tree, gap, "x3", "probe.descriptor=dense")
    assert "dense" in one_line(e) and "pool5" in str(e.value)
    lonely = make_tree(tmp_path / "lonely", n_train=7, classes=("a", "b", "c", "d", "e", "f"))
    with pytest.raises(VgglabError) as e:  # a class with one image, and the grid needs a validation split
        probe(tmp_path, lonely, weights, "x4")
    assert "class" in one_line(e)
    with pytest.raises(ConfigError) as e:
        probe(tmp_path, tree, weights, "x5", "data.val_size=0")
    assert "validation" in one_line(e) and "c_grid" in str(e.value)
    with pytest.raises(ConfigError) as e:  # tracking that would record nothing
        probe(tmp_path, tree, weights, "x5b", "log.tensorboard=true")
    assert "no epochs to track" in one_line(e)
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    with pytest.raises(VgglabError) as e:  # a cache folder that cannot be written
        probe(tmp_path, tree, weights, "x6", f"data.cache_dir={blocker}")
    assert "feature cache" in one_line(e) and "data.cache_dir" in str(e.value)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(feature_cache.np, "savez", full)
    with pytest.raises(VgglabError) as e:  # a full disk
        probe(tmp_path, tree, weights, "x7", f"data.cache_dir={tmp_path / 'fresh'}")
    assert "kept" in one_line(e) and "data.cache_dir" in str(e.value)


def test_resuming_a_probe_run_says_run_it_again(setup):
    tmp_path, tree, weights = setup
    res, _ = probe(tmp_path, tree, weights, "r1")
    with pytest.raises(VgglabError, match="no training to resume"):
        vgglab.fit(resume=res.run_dir)


def test_lp_ft_starts_fine_tuning_from_the_probe_run(setup):
    """Linear probe, then fine-tune (Kumar et al. 2022): the probe run is the fine-tune's exact init."""
    tmp_path, tree, weights = setup
    res, _ = probe(tmp_path, tree, weights, "p")
    lines = []
    ft = vgglab.fit(
        {
            "data": {"dataset": "imagefolder", "root": str(tree), "image_size": 32, "val_size": 6, "batch_size": 8},
            "augment": {"crop": "pad", "padding": 2, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
            "model": {"name": "vgg11", "options": {"width": 0.125, "head": {"type": "imagenet", "hidden": 32}}},
            "optim": {"lr": 0.001},
            "train": {
                "epochs": 1,
                "init_from": str(res.run_dir),
                "init_mode": "exact",
                "freeze": ["features"],
                "precision": "fp32",
            },
            "log": {"progress": "none"},
        },
        [f"data.cache_dir={tmp_path / 'cache'}"],
        out=tmp_path / "ft",
        log=lines.append,
    )
    assert any("initialised from" in line and "(exact)" in line for line in lines)
    before, after = load_checkpoint(res.run_dir)["model"], load_checkpoint(ft.run_dir)["model"]
    assert torch.equal(before["features.block1.conv1.weight"], after["features.block1.conv1.weight"])  # frozen
    assert not torch.equal(before["head.classifier.weight"], after["head.classifier.weight"])  # the head trained on


@pytest.mark.slow  # three commands end to end (the fast suite checks eval and load_run on every layer's run)
def test_predict_export_report_and_load_model_take_the_probe_run(setup, capsys):
    from vgglab.cli import main

    tmp_path, tree, weights = setup
    res, _ = probe(tmp_path, tree, weights, "r")
    model = vgglab.load_model(res.run_dir, device="cpu")
    assert model.config.num_classes == 3 and model.meta.classes == ("a", "b", "c")
    photo = next((tree / "test" / "b").iterdir())
    assert main(["predict", str(res.run_dir), str(photo), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["top"][0]["class"] in ("a", "b", "c")
    assert main(["export", str(res.run_dir), "--format", "safetensors"]) == 0
    assert (res.run_dir / "export" / "model.safetensors").is_file()
    assert main(["report", str(res.run_dir)]) == 0 and (res.run_dir / "report.html").is_file()


def test_a_damaged_shard_is_computed_again_not_trusted(setup):
    tmp_path, tree, weights = setup
    res, _ = probe(tmp_path, tree, weights, "r1", "data.eval_batch_size=8")
    shards = sorted(type(tmp_path)(res.metrics["probe"]["cache"]).glob("shard-*.npz"))
    shards[0].write_bytes(b"not a shard")  # a disk error, an edit
    again, _ = probe(tmp_path, tree, weights, "r2", "data.eval_batch_size=8")
    assert 0 < again.metrics["probe"]["descriptors_computed"] <= 8
    assert again.metrics["test_top1"] == pytest.approx(res.metrics["test_top1"])

"""torchvision:NAME weights through torchvision's real loading path, offline: a random state dict
saved under the weight's own file name in a temporary torch hub cache stands in for the download."""

from urllib.error import URLError

import pytest
import torch
import torchvision
from PIL import Image
from torchvision.models import get_model_weights

import vgglab
from vgglab.cli import main
from vgglab.errors import VgglabError
from vgglab.pretrained import parse_pretrained


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """TORCH_HOME with torchvision's vgg11 file (random weights) in hub/checkpoints; no network."""
    home = tmp_path_factory.mktemp("torch_home")
    weights = get_model_weights("vgg11").DEFAULT
    torch.manual_seed(7)
    tv = torchvision.models.vgg11(weights=None).eval()
    (home / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(tv.state_dict(), home / "hub" / "checkpoints" / weights.url.rsplit("/", 1)[1])
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TORCH_HOME", str(home))
        mp.setattr(torch.hub, "download_url_to_file", lambda *a, **k: pytest.fail("went to the network"))
        yield home, tv


def test_a_named_torchvision_model_loads_from_the_hub_cache_and_equals_torchvision(hub):
    _, tv = hub
    model = vgglab.load_model("torchvision:vgg11", device="cpu")
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(model(x), tv(x), atol=1e-5, rtol=0)
    meta = model.meta
    assert len(meta.classes) == 1000 and meta.classes[:2] == ("tench", "goldfish")
    assert (meta.image_size, meta.eval_resize) == (224, 256)
    assert meta.normalization.mean == pytest.approx((0.485, 0.456, 0.406)) and meta.normalization.std == pytest.approx(
        (0.229, 0.224, 0.225)
    )
    named = parse_pretrained("torchvision:vgg11:IMAGENET1K_V1")
    assert named.name == "torchvision:vgg11:IMAGENET1K_V1" and named.url == get_model_weights("vgg11").DEFAULT.url


def test_unknown_names_are_one_line_listing_the_valid_ones():
    with pytest.raises(
        VgglabError,
        match=r"^unknown pretrained model 'torchvision:vgg12'; valid: torchvision:vgg11, torchvision:vgg11_bn, .*torchvision:vgg19_bn$",
    ):
        parse_pretrained("torchvision:vgg12")
    with pytest.raises(
        VgglabError, match=r"^torchvision:vgg16:IMAGENET1K_FEATURES has no trained classifier .*init_mode: features"
    ):
        vgglab.load_model("torchvision:vgg16:IMAGENET1K_FEATURES", device="cpu")  # refused before any download
    with pytest.raises(
        VgglabError,
        match=r"^unknown weights 'V9' for vgg16; valid: torchvision:vgg16:IMAGENET1K_V1, torchvision:vgg16:IMAGENET1K_FEATURES$",
    ):
        parse_pretrained("torchvision:vgg16:V9")


def test_no_file_and_no_network_names_the_url_and_where_to_put_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(url, dst, *a, **k):
        raise URLError("no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    url = get_model_weights("vgg13").DEFAULT.url
    expected = f"cannot download {url} (no network); without network, place that file at {tmp_path / 'hub' / 'checkpoints' / url.rsplit('/', 1)[1]}"
    with pytest.raises(VgglabError) as err:
        vgglab.load_model("torchvision:vgg13", device="cpu")
    assert str(err.value) == expected
    assert main(["predict", "torchvision:vgg13", str(tmp_path)]) == 2  # the CLI: one line, exit 2


# end to end (tens of seconds): the slow suite, which CI runs (issue 36's 4-minute fast suite)
@pytest.mark.slow
def test_predict_prints_imagenet_category_names(hub, tmp_path, capsys):
    Image.new("RGB", (300, 200), (200, 120, 40)).save(tmp_path / "photo.png")
    assert main(["predict", "torchvision:vgg11", str(tmp_path / "photo.png"), "--topk", "3", "--device", "cpu"]) == 0
    line = capsys.readouterr().out.strip()
    names = get_model_weights("vgg11").DEFAULT.meta["categories"]
    top = [part.rsplit(" ", 1)[0] for part in line.split(": ", 1)[1].split(", ")]
    assert line.startswith(f"{tmp_path / 'photo.png'}: ") and len(top) == 3 and all(n in names for n in top)


def test_fine_tuning_takes_the_weights_mean_and_std_unless_the_recipe_pins_them(hub, tiny_config):
    from vgglab.data import load_dataset
    from vgglab.train.config import load_config
    from vgglab.train.prepare import training_normalization

    cfg = load_config(tiny_config, ["train.init_from=torchvision:vgg11", "train.init_mode=features"])
    ds = load_dataset(cfg.data)
    assert training_normalization(cfg, ds).mean == pytest.approx((0.485, 0.456, 0.406))
    pinned = load_config(tiny_config, ["train.init_from=torchvision:vgg11", "augment.mean=[0.5]", "augment.std=[0.5]"])
    assert training_normalization(pinned, ds).mean == (0.5,)
    assert training_normalization(load_config(tiny_config), ds).mean == pytest.approx(tuple(ds.stats.mean.tolist()))


def test_feature_extractor_gives_the_layers_hooks_see_with_summary_shapes():
    torch.manual_seed(0)
    model = vgglab.create_model("vgg11_bn", width=0.25, num_classes=10, input_size=32, head="cifar").eval()
    layers = ["features.block1.bn1", "features.block2.relu1", "features.block4.pool", "head.fc1"]
    x = torch.randn(3, 3, 32, 32)
    seen = {}
    modules = dict(model.named_modules())
    hooks = [modules[n].register_forward_hook(lambda m, i, o, n=n: seen.__setitem__(n, o.detach().clone())) for n in layers]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    with torch.no_grad():
        got = vgglab.feature_extractor(model, layers)(x)
    shapes = {row["name"]: row["output_shape"] for row in vgglab.models.summarize(model)["layers"]}
    assert list(got) == layers
    for n in layers:
        assert list(got[n].shape[1:]) == shapes[n]
        torch.testing.assert_close(got[n], seen[n], atol=0, rtol=0)
    assert (got["features.block1.bn1"] < 0).any()  # the BN output itself, not clobbered by the in-place ReLU after it
    assert model.features.block1.relu1.inplace  # the model keeps its own in-place ReLUs
    with pytest.raises(VgglabError, match="unknown layer 'features.block9.conv1'"):
        vgglab.feature_extractor(model, ["features.block9.conv1"])


# end to end (tens of seconds): the slow suite, which CI runs (issue 36's 4-minute fast suite)
@pytest.mark.slow
def test_eval_on_a_folder_named_by_imagenet_categories(hub, tmp_path):
    from tests.data.test_sources import make_tree
    from vgglab.evaluate.checkpoint_eval import evaluate_checkpoint

    tree = make_tree(tmp_path / "tree", classes=("goldfish", "tench"), per_class=2, size=40)
    with pytest.raises(VgglabError, match="has no dataset of its own: pass --data-root"):
        evaluate_checkpoint("torchvision:vgg11", device="cpu", out=tmp_path / "e0")
    m = evaluate_checkpoint("torchvision:vgg11", data_root=str(tree), device="cpu", out=tmp_path / "ev")
    assert m["n"] == 4 and 0.0 <= m["top1"] <= m["top5"] <= 1.0
    assert (tmp_path / "ev" / "eval.json").is_file()


def imagenet_val_tree(root, synsets: int = 1000, photos=((0, 300, 240), (0, 240, 300), (7, 333, 250))):
    """ImageNet's validation layout: val/<synset id>/<image>, a few odd-sized photos in some folders."""
    from tests.evaluate.test_parity import photo

    for k in range(synsets):
        (root / "val" / f"n{1440764 + 37 * k:08d}").mkdir(parents=True)
    folders = sorted((root / "val").iterdir())
    for i, (label, w, h) in enumerate(photos):
        photo(w, h, i).save(folders[label] / f"ILSVRC2012_val_{i:08d}.JPEG", quality=90)
    return root


# end to end (tens of seconds): the slow suite, which CI runs (issue 36's 4-minute fast suite)
@pytest.mark.slow
def test_eval_on_imagenets_validation_layout_matches_torchvision_and_the_dense_by_hand(hub, tmp_path):
    """`vgglab eval torchvision:vgg11 --data-root IMAGENET --split val`: synset folders map to the
    categories by index order; the single crop is torchvision's reference evaluation; dense sees
    whole images rescaled to each Q, with flips."""
    from torchvision.transforms.functional import pil_to_tensor, resize

    from vgglab.evaluate import dense_head, dense_logits, load_inference, predict_split
    from vgglab.evaluate.checkpoint_eval import evaluate_checkpoint

    _, tv = hub
    root = imagenet_val_tree(tmp_path / "imagenet")
    inf = load_inference("torchvision:vgg11", "cpu", precision="fp32")  # compared with torchvision to 1e-5: fp32
    split, _ = inf.load_split("val", str(root))
    assert split.y.tolist() == [0, 0, 7] and len(split) == 3
    files = [root / "val" / f for f in split.files]
    ims = [Image.open(f).convert("RGB") for f in files]
    t = get_model_weights("vgg11").DEFAULT.transforms()
    with torch.inference_mode():
        reference = tv(torch.stack([t(im) for im in ims])).softmax(1)
    torch.testing.assert_close(predict_split(inf, split, "none"), reference, atol=1e-5, rtol=1e-4)

    dense = predict_split(inf, split, "dense", scales=[224, 256])
    model, head = inf.model, dense_head(inf.model)
    with torch.inference_mode():
        for i, im in enumerate(ims):
            views = []
            for q in (224, 256):
                x = inf.normalize(pil_to_tensor(resize(im, [q]))[None])  # the whole image, shorter side q
                assert min(x.shape[-2:]) == q and x.shape[-1] != x.shape[-2]
                views += [dense_logits(model, v, head) for v in (x, x.flip(3))]  # score map averaged
            expected = torch.stack([v.softmax(1) for v in views]).mean(0)[0]
            torch.testing.assert_close(dense[i], expected, atol=1e-5, rtol=1e-4)

    m = evaluate_checkpoint(
        "torchvision:vgg11", data_root=str(root), split="val", tta="dense", scales=[224], device="cpu", out=tmp_path / "ev"
    )
    assert m["n"] == 3 and m["scales"] == [224] and m["top1_error"] == pytest.approx(1 - m["top1"])
    assert (tmp_path / "ev" / "eval-dense.json").is_file()


def test_a_part_of_the_synset_folders_cannot_be_mapped_and_says_so(hub, tmp_path):
    from vgglab.evaluate.checkpoint_eval import evaluate_checkpoint

    root = imagenet_val_tree(tmp_path / "imagenet", synsets=10)
    with pytest.raises(VgglabError, match="10 synset folders: .* needs all 1000 folders"):
        evaluate_checkpoint(
            "torchvision:vgg11", data_root=str(root), split="val", device="cpu", out=tmp_path / "ev", precision="fp32"
        )
    with pytest.raises(VgglabError, match="no train split at .*expected .*train/<class>/<image>"):
        evaluate_checkpoint(
            "torchvision:vgg11", data_root=str(root), split="train", device="cpu", out=tmp_path / "ev", precision="fp32"
        )

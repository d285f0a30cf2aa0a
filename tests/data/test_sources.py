import pickle
import shutil
import tarfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import vgglab.data.sources as sources
from vgglab.data import DataError, load_dataset
from vgglab.train.config import DataConfig


def make_tree(root: Path, classes=("cat", "dog"), per_class=6, size=40, modes=("RGB",)):
    """An ImageFolder tree of random images in several modes and sizes."""
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for ci, c in enumerate(classes):
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(per_class):
                arr = rng.integers(0, 256, (size + 3 * i, size + 5 * i, 3), dtype=np.uint8)
                arr[..., ci] = 255  # class-dependent colour
                im = Image.fromarray(arr)
                mode = modes[i % len(modes)]
                if mode == "CMYK":
                    im.convert("CMYK").save(d / f"{i}.jpg")
                elif mode == "P":
                    im.convert("P").save(d / f"{i}.png")
                else:
                    im.convert(mode).save(d / f"{i}.png")
    return root


def test_digits_is_offline_stratified_and_cached(tmp_path, monkeypatch):
    cfg = DataConfig(dataset="digits", cache_dir=str(tmp_path))
    ds = load_dataset(cfg)
    assert ds.in_chans == 1 and ds.image_size == 32 and ds.classes == [str(i) for i in range(10)]
    assert len(ds.train) + len(ds.val) + len(ds.test) == 1797
    assert len(ds.test) == 360 and len(ds.val) == round(0.1 * 1437)
    counts = torch.bincount(ds.val.y, minlength=10)
    assert counts.min() >= 13 and counts.max() <= 16  # stratified: ~14 of each digit
    # a second load reads the cache and never decodes
    monkeypatch.setattr(sources.DigitsSource, "decode", lambda self: pytest.fail("decoded twice"))
    again = load_dataset(cfg)
    assert torch.equal(again.train.x, ds.train.x) and torch.equal(again.test.y, ds.test.y)


def test_a_damaged_cache_is_reported_then_rebuilt(tmp_path):
    cfg = DataConfig(dataset="digits", cache_dir=str(tmp_path))
    first = load_dataset(cfg)
    first.cache_file.write_bytes(b"not a torch file")
    with pytest.warns(UserWarning, match=f"dataset cache {first.cache_file} could not be read .*decoding the dataset again"):
        again = load_dataset(cfg)
    assert torch.equal(again.train.x, first.train.x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # rebuilt: the next load reads it silently
        load_dataset(cfg)


def test_each_kind_has_its_source_with_its_own_cache_key(tmp_path):
    make_tree(tmp_path / "tree")
    digits = sources.resolve_source(DataConfig(dataset="digits", image_size=16))
    folder = sources.resolve_source(DataConfig(dataset="imagefolder", root=str(tmp_path / "tree")))
    cifar = sources.resolve_source(DataConfig(dataset="cifar10", root=str(tmp_path / "c"), download=True))
    assert (type(digits), digits.image_size, digits.store_size) == (sources.DigitsSource, 16, 16)
    assert type(folder) is sources.ImageFolderSource and type(cifar) is sources.CifarSource
    keys = {digits.cache_key(), folder.cache_key(), cifar.cache_key()}
    assert len(keys) == 3
    cat = tmp_path / "tree" / "train" / "cat"
    key = folder.cache_key()
    (cat / "extra.png").write_bytes((cat / "0.png").read_bytes())
    assert folder.cache_key() != key  # a new file is a new dataset


def test_validation_split_is_seeded_and_can_be_empty(tmp_path):
    a = load_dataset(DataConfig(dataset="digits", cache_dir=str(tmp_path), val_size=100))
    b = load_dataset(DataConfig(dataset="digits", cache_dir=str(tmp_path), val_size=100))
    c = load_dataset(DataConfig(dataset="digits", cache_dir=str(tmp_path), val_size=100, split_seed=1))
    assert len(a.val) == 100 and torch.equal(a.val.x, b.val.x) and not torch.equal(a.val.x, c.val.x)
    none = load_dataset(DataConfig(dataset="digits", cache_dir=str(tmp_path), val_size=0))
    assert none.val is None and len(none.train) == 1437
    limited = load_dataset(DataConfig(dataset="digits", cache_dir=str(tmp_path), train_limit=200))
    assert len(limited.train) == 200 and len(limited.val) == 144  # carved first, from all training images
    assert torch.bincount(limited.train.y, minlength=10).min() >= 18  # the subset is stratified too


def test_imagefolder_any_mode_and_size(tmp_path):
    root = make_tree(tmp_path / "tree", modes=("RGB", "L", "RGBA", "CMYK", "P", "RGB"))
    ds = load_dataset(DataConfig(dataset="imagefolder", root=str(root), image_size=32, cache_dir=str(tmp_path / "c"), val_size=2))
    assert ds.classes == ["cat", "dog"] and ds.in_chans == 3
    assert ds.store_size == round(32 * 256 / 224)  # resize-shorter-side, center crop at eval
    assert ds.train.x.shape[1:] == (3, ds.store_size, ds.store_size) and ds.train.x.dtype == torch.uint8
    assert len(ds.train) + len(ds.val) == 12 and len(ds.test) == 12
    # the class colour survives decoding of RGB images: red channel saturated for 'cat'
    cat_rgb = ds.test.x[0]
    assert cat_rgb[0].float().mean() > 250


def test_unreadable_image_is_skipped_and_counted_or_fails_when_strict(tmp_path):
    root = make_tree(tmp_path / "tree")
    bad = root / "train" / "cat" / "broken.png"
    bad.write_bytes(b"not an image at all")
    with pytest.warns(UserWarning, match="broken.png"):
        ds = load_dataset(
            DataConfig(dataset="imagefolder", root=str(root), image_size=32, cache_dir=str(tmp_path / "c"), val_size=0)
        )
    assert ds.skipped == [str(bad)] and len(ds.train) == 12
    with pytest.raises(DataError, match=r"cannot read image .*broken.png"):
        load_dataset(
            DataConfig(dataset="imagefolder", root=str(root), image_size=32, cache_dir=str(tmp_path / "c2"), strict=True)
        )


def test_archive_root_is_unpacked_once(tmp_path):
    tree = make_tree(tmp_path / "src" / "mydata", size=32)
    archive = tmp_path / "mydata.tar.gz"
    with tarfile.open(archive, "w:gz") as t:
        t.add(tree, arcname="mydata")
    shutil.rmtree(tmp_path / "src")
    cfg = DataConfig(dataset="cifar10", root=str(archive), cache_dir=str(tmp_path / "c"), val_size=0)
    ds = load_dataset(cfg)
    assert ds.image_size == 32 == ds.store_size and len(ds.train) == 12
    unpacked = list((tmp_path / "c" / "unpacked").iterdir())
    assert len(unpacked) == 1 and (unpacked[0] / ".complete").exists()
    load_dataset(cfg)
    assert list((tmp_path / "c" / "unpacked").iterdir()) == unpacked


def test_missing_dataset_says_where_and_how(tmp_path):
    with pytest.raises(DataError, match=r"cifar10 dataset not found at .*nowhere: set data.download: true"):
        load_dataset(DataConfig(dataset="cifar10", root=str(tmp_path / "nowhere"), download=False, cache_dir=str(tmp_path)))
    with pytest.raises(DataError, match="needs train/<class>/ and test/<class>/"):
        load_dataset(DataConfig(dataset="imagefolder", root=str(tmp_path), cache_dir=str(tmp_path)))


def _write_cifar_python(folder: Path, n_train=20, n_test=10):
    """The official python-format layout (pickled batches), with random pixels."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = [f"data_batch_{i}" for i in range(1, 6)]
    per = n_train // 5
    for name in names + ["test_batch"]:
        n = n_test if name == "test_batch" else per
        batch = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), "labels": list(rng.integers(0, 10, n))}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump(
            {"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]}, f
        )


@pytest.fixture
def no_md5(monkeypatch):
    """Our fake batches cannot match the official checksums; check presence only."""
    import torchvision.datasets.cifar as tv_cifar

    monkeypatch.setattr(tv_cifar, "check_integrity", lambda fpath, md5=None: Path(fpath).is_file())


def test_cifar_python_format_is_read_with_torchvision(tmp_path, no_md5):
    _write_cifar_python(tmp_path / "root" / "cifar-10-batches-py")
    ds = load_dataset(
        DataConfig(dataset="cifar10", root=str(tmp_path / "root"), download=False, cache_dir=str(tmp_path / "c"), val_size=0)
    )
    assert ds.classes[0] == "airplane" and ds.train.x.shape == (20, 3, 32, 32) and len(ds.test) == 10
    with open(tmp_path / "root" / "cifar-10-batches-py" / "data_batch_1", "rb") as f:
        first = pickle.load(f)["data"][0].reshape(3, 32, 32)
    assert any(torch.equal(torch.from_numpy(first), x) for x in ds.train.x)


def test_cifar_download_goes_through_torchvisions_downloader(tmp_path, no_md5, monkeypatch):
    """download: true calls torchvision's downloader; here it is served from a local archive."""
    import torchvision.datasets.utils as tv_utils

    _write_cifar_python(tmp_path / "mirror" / "cifar-10-batches-py")
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as t:
        t.add(tmp_path / "mirror" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    requested = []

    def fake_download_url(url, root, filename=None, md5=None, **kw):
        requested.append(url)
        Path(root).mkdir(parents=True, exist_ok=True)
        shutil.copy(archive, Path(root) / filename)

    monkeypatch.setattr(tv_utils, "download_url", fake_download_url)
    root = tmp_path / "data"
    ds = load_dataset(DataConfig(dataset="cifar10", root=str(root), download=True, cache_dir=str(tmp_path / "c"), val_size=0))
    assert requested and requested[0].endswith("cifar-10-python.tar.gz")
    assert len(ds.train) == 20 and (root / "cifar-10-batches-py").is_dir()

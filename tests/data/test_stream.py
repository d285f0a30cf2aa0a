"""The streamed storage (issue 20): deterministic whatever the workers and processes, full-image
crops, the storage auto picks, and bad files with one line each."""

import copy
import csv
import dataclasses
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

import vgglab
from vgglab.data import load_dataset
from vgglab.data.config import AugmentConfig, DataConfig
from vgglab.data.decode import crop_box as _box
from vgglab.data.decode import decode_view
from vgglab.data.errors import DataError
from vgglab.data.stream import make_loader

from ..conftest import TINY


def make_tree(root, n_train=24, n_test=8, classes=2, seed=0):
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("test", n_test)):
        for i in range(n):
            d = root / split / f"c{i % classes}"
            d.mkdir(parents=True, exist_ok=True)
            w, h = (int(v) for v in rng.integers(40, 90, 2))
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(d / f"{i:03d}.jpg", quality=90)
    return root


@pytest.fixture
def tree(tmp_path):
    return make_tree(tmp_path / "tree")


def stream_ds(tree, tmp_path, **data):
    cfg = DataConfig(
        dataset="imagefolder",
        root=str(tree),
        image_size=32,
        storage="stream",
        cache_dir=str(tmp_path / "cache"),
        val_size=0,
        **data,
    )
    return load_dataset(cfg)


def batches(ds, workers, shard=(0, 1), aug=None, epoch=1):
    aug = aug or AugmentConfig(crop="scale", scale_min=36, scale_max=64, pca_std=0.1)
    ld = make_loader(
        ds.train,
        8,
        image_size=32,
        norm=ds.normalization(aug),
        augment=aug,
        pca=ds.stats,
        shuffle=True,
        drop_last=True,
        seed=3,
        workers=workers,
        shard=shard,
        channels_last=False,
    )
    ld.set_epoch(epoch)
    return [(x, y) for x, y in ld]


def test_stream_batches_are_bit_identical_for_0_1_2_workers(tree, tmp_path):
    ds = stream_ds(tree, tmp_path)
    assert ds.storage == "stream" and len(ds.train) == 24
    ref = batches(ds, 0)
    assert len(ref) == 3 and ref[0][0].shape == (8, 3, 32, 32)
    for workers in (1, 2):
        got = batches(ds, workers)
        assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(ref, got, strict=True))
    assert not torch.equal(batches(ds, 0, epoch=2)[0][0], ref[0][0])  # another epoch, other draws


def test_two_ranks_slices_equal_the_one_process_batch(tree, tmp_path):
    ds = stream_ds(tree, tmp_path)
    one = batches(ds, 0)
    r0, r1 = batches(ds, 0, shard=(0, 2)), batches(ds, 0, shard=(1, 2))
    for (x, y), (a, ya), (b, yb) in zip(one, r0, r1, strict=True):
        assert torch.equal(torch.cat([a, b]), x) and torch.equal(torch.cat([ya, yb]), y)


def test_pad_crops_stream_as_the_memory_path_crops(tree, tmp_path):
    """The same plan and the same device step: streamed batches are the cached ones, up to the
    resampling (a crop box resized in one step, against resize-then-crop)."""
    aug = AugmentConfig(crop="pad", padding=4)
    mem = load_dataset(
        DataConfig(
            dataset="imagefolder", root=str(tree), image_size=32, storage="memory", cache_dir=str(tmp_path / "cache"), val_size=0
        )
    )
    st = stream_ds(tree, tmp_path)
    st.stats = mem.stats  # one normalisation for both
    assert mem.storage == "memory"
    for (a, ya), (b, yb) in zip(batches(st, 1, aug=aug), batches(mem, 0, aug=aug), strict=True):
        assert torch.equal(ya, yb)
        corr = torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1]
        assert corr > 0.9, corr


def test_scale_crops_cover_the_whole_image_and_both_sides_of_a_wide_one():
    g = torch.Generator().manual_seed(0)
    w, h, out = 300, 120, 32
    boxes = [
        _box(("scale", int(s), float(u), float(v), False), w, h, out)
        for s, u, v in zip(
            torch.randint(40, 80, (500,), generator=g), torch.rand(500, generator=g), torch.rand(500, generator=g), strict=True
        )
    ]
    lefts, rights = [b[0] for b in boxes], [b[2] for b in boxes]
    tops, bottoms = [b[1] for b in boxes], [b[3] for b in boxes]
    assert min(lefts) < 5 and max(rights) > w - 5 and min(tops) < 5 and max(bottoms) > h - 5
    # every column of the wide image falls in some crop: no center-only bias
    covered = np.zeros(w, dtype=bool)
    for b in boxes:
        covered[int(b[0]) : int(np.ceil(b[2]))] = True
    assert covered.all()
    side = min(w, h) / 40 * out  # S = 40: a crop of `out` rescaled pixels spans 96 original ones
    assert boxes and max(b[2] - b[0] for b in boxes) <= side + 1e-6


def test_auto_picks_stream_for_full_image_crops_and_memory_otherwise(tree, tmp_path):
    cfg = DataConfig(dataset="imagefolder", root=str(tree), image_size=32, cache_dir=str(tmp_path / "c"), val_size=0)
    ds = load_dataset(cfg, AugmentConfig(crop="scale", scale_min=36, scale_max=48))
    assert ds.storage == "stream" and "needs the full images" in ds.storage_note and "kB" in ds.storage_note
    ds = load_dataset(cfg, AugmentConfig(crop="pad"))
    assert ds.storage == "memory" and "auto -> memory" in ds.storage_note


def test_bad_files_streamed_are_one_line_each(tmp_path):
    tree = make_tree(tmp_path / "t", n_train=8, n_test=4)
    d = tree / "train" / "c0"
    (d / "zero.jpg").write_bytes(b"")
    good = (d / "000.jpg").read_bytes()
    (d / "truncated.jpg").write_bytes(good[: len(good) // 3])
    (d / "notes.txt").write_text("not an image")
    Image.new("CMYK", (50, 40), (0, 255, 0, 0)).save(d / "cmyk.jpg")
    Image.fromarray(np.arange(50 * 40, dtype=np.uint16).reshape(40, 50) * 30).save(d / "deep.png")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = stream_ds(tree, tmp_path)
    skipped = sorted(p.rsplit("/", 1)[-1] for p in ds.skipped)
    assert skipped == ["notes.txt", "zero.jpg"], skipped  # headers unreadable: left out at indexing
    assert all("\n" not in str(w.message) for w in caught)
    cmyk = decode_view(d / "cmyk.jpg", ("eval", None), 32)
    assert (
        cmyk.shape == (3, 32, 32) and cmyk[1].float().mean() < 60 and cmyk[0].float().mean() > 200
    )  # CMYK (0, 255, 0, 0) is magenta
    deep = decode_view(d / "deep.png", ("eval", None), 32)
    assert deep.shape == (3, 32, 32) and deep.max() > 200  # 16-bit scaled to 8 bits, not clipped to white
    (d / "002.jpg").unlink()  # deleted between indexing and reading
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = batches(ds, 0, aug=AugmentConfig(crop="scale", scale_min=36, scale_max=48))
    assert sum(len(b[1]) for b in got) == 8 and any("002.jpg" in str(w.message) for w in caught)
    strict = stream_ds(tree, tmp_path / "s", strict=False)
    with pytest.raises(DataError, match=r"cannot read image .*(002|truncated)"):
        ld = make_loader(strict.train, 8, image_size=32, norm=strict.normalization(), augment=None, workers=0)
        ld.split.strict = True
        list(ld)


def test_a_streamed_run_resumes_to_the_same_metrics(tmp_path):
    tree = make_tree(tmp_path / "t", n_train=32, n_test=8)
    cfg = copy.deepcopy(TINY)
    cfg["data"] = {
        "dataset": "imagefolder",
        "root": str(tree),
        "image_size": 32,
        "batch_size": 8,
        "storage": "stream",
        "workers": 1,
        "val_size": 8,
    }
    cfg["augment"] = {"crop": "scale", "scale_min": 36, "scale_max": 60}
    cfg["model"]["options"]["in_chans"] = 3
    cfg["train"].update(epochs=2, precision="fp32", channels_last=False)
    whole = vgglab.fit(cfg, out=tmp_path / "whole", log=lambda *_: None).run_dir
    cfg["train"]["epochs"] = 1
    part = vgglab.fit(cfg, out=tmp_path / "part", log=lambda *_: None).run_dir
    vgglab.fit(None, ["train.epochs=2"], resume=part, log=lambda *_: None)

    def losses(run):
        with open(run / "metrics.csv") as f:
            return [(r["train_loss"], r["val_loss"]) for r in csv.DictReader(f)]

    assert losses(whole) == losses(part)


def test_data_command_shows_sides_storage_and_memory(tree, tmp_path):
    from vgglab.viz.data import describe_data, format_data

    cfg = DataConfig(
        dataset="imagefolder", root=str(tree), image_size=32, storage="stream", cache_dir=str(tmp_path / "c"), val_size=0
    )
    info = describe_data(cfg, AugmentConfig(crop="scale", scale_min=36, scale_max=48))
    assert info["storage"] == "stream" and set(info["sides"]) == {"train", "test"}
    lo, mid, hi = (info["sides"]["train"][k] for k in ("min", "median", "max"))
    assert 40 <= lo[0] <= mid[0] <= hi[0] < 90 and lo[0] <= lo[1]
    assert info["memory_bytes"]["memory"] == 32 * 3 * 37 * 37
    text = format_data(info)
    assert "train image sides" in text and "memory storage needs" in text


def test_a_decompression_bomb_an_empty_class_and_an_unwritable_cache(tmp_path, monkeypatch):
    tree = make_tree(tmp_path / "t", n_train=8, n_test=4)
    Image.new("RGB", (200, 200), (9, 9, 9)).save(tree / "train" / "c0" / "bomb.png")
    (tree / "train" / "c2").mkdir()  # a class folder with no images
    (tree / "test" / "c2").mkdir()
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)  # 200 x 200 is over twice the limit: PIL refuses it
    blocker = tmp_path / "cache-is-a-file"
    blocker.write_text("")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = load_dataset(
            DataConfig(dataset="imagefolder", root=str(tree), image_size=32, storage="stream", cache_dir=str(blocker), val_size=0)
        )
    messages = [str(w.message) for w in caught]
    assert any("bomb.png" in m for m in messages) and any("could not cache the stream index" in m for m in messages)
    assert all("\n" not in m for m in messages) and blocker.read_text() == ""
    assert ds.classes == ["c0", "c1", "c2"] and int((ds.train.y == 2).sum()) == 0
    assert sum(len(b[1]) for b in batches(ds, 1)) == 8
    with pytest.raises(DataError, match=r"cannot read image .*bomb.png"):
        load_dataset(
            DataConfig(
                dataset="imagefolder",
                root=str(tree),
                image_size=32,
                storage="stream",
                cache_dir=str(tmp_path / "c2"),
                val_size=0,
                strict=True,
            )
        )


def test_a_worker_error_is_one_line_and_evaluation_batches_come_in_order(tree, tmp_path):
    from vgglab.data.stream import uint8_batches

    ds = stream_ds(tree, tmp_path)
    got = torch.cat(list(uint8_batches(ds.test, 3, workers=1)))
    assert torch.equal(got, ds.test.images(slice(0, len(ds.test))))  # workers decode what the main process would
    bad = ds.test.subset(torch.arange(len(ds.test)))
    bad.strict = True
    (tree / bad.files[4]).write_bytes(b"\xff\xd8 not a jpeg")
    with pytest.raises(DataError) as err:
        list(uint8_batches(bad, 3, workers=1))
    assert "\n" not in str(err.value) and str(err.value).startswith("cannot read image") and bad.files[4] in str(err.value)


@pytest.mark.parametrize("storage", ["memory", "stream"])
def test_imagenets_layout_reads_val_as_the_test_split_and_holds_validation_out_of_train(tmp_path, storage):
    """train/ and val/ with no test/ (ImageNet's): val/ is what results are reported on, so it is the
    test split, and the validation split the schedule watches comes out of train/."""
    from tests.data.test_sources import make_tree

    tree = make_tree(tmp_path / "t", per_class=5)
    (tree / "test").rename(tree / "val")
    ds = load_dataset(
        DataConfig(
            dataset="imagefolder", root=str(tree), storage=storage, val_size=2, image_size=32, cache_dir=str(tmp_path / "c")
        )
    )
    assert (len(ds.train), len(ds.val), len(ds.test)) == (8, 2, 10)
    assert ds.classes == ["cat", "dog"] and ds.test.y.tolist() == [0] * 5 + [1] * 5


@pytest.mark.slow  # 5-8 s: in the slow suite (CI runs it), keeping the default run under 4 minutes
def test_whole_image_batches_for_the_papers_evaluation(tmp_path):
    """Whole images rescaled per scale (aspect kept, torchvision's sizes), batched by original size;
    a file broken after indexing is a warning and a gray stand-in, or one DataError when strict."""
    from vgglab.data.errors import DataError
    from vgglab.data.stream import full_image_batches
    from vgglab.data.stream_index import folder_split

    folder = tmp_path / "val"
    for i, (w, h) in enumerate([(40, 30), (30, 47), (40, 30)]):
        (folder / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((h, w, 3), 60 * i, dtype=np.uint8)).save(folder / f"c{i % 2}" / f"{i}.png")
    split, classes = folder_split(folder, 36, 32, cache_dir=str(tmp_path / "c"))
    assert classes == ["c0", "c1"] and len(split) == 3
    seen = {}
    for rows, batches in full_image_batches(split, [32, 48], pixels=10_000, workers=0):
        assert [tuple(b.shape[-2:]) for b in batches] in ([(32, 42), (48, 64)], [(50, 32), (75, 48)])  # (H, W) per scale
        for r, img in zip(rows.tolist(), batches[0], strict=True):
            seen[r] = img
    assert sorted(seen) == [0, 1, 2]
    broken = folder / split.files[0]
    broken.write_bytes(broken.read_bytes()[:40])  # truncated after the index was built
    with pytest.warns(UserWarning, match="gray image stands in"):
        out = [b for _, b in full_image_batches(split, [32], pixels=10_000, workers=0)]
    assert sum(len(b[0]) for b in out) == 3
    strict = dataclasses.replace(split, strict=True)
    with pytest.raises(DataError, match=f"cannot read image .*{broken.name}"):
        list(full_image_batches(strict, [32], pixels=10_000, workers=1))

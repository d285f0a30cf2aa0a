"""Resume and the files a run keeps: data never lost, no hang and no orphan worker on special files,
nothing silent, one line instead of a traceback, and the first file under the rule of every file."""

import copy
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch
import yaml
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

import vgglab
from vgglab.errors import VgglabError

from ..conftest import TINY
from .helpers import REPO, cli, copy_run, folder_config, tree


def files_of(run: Path) -> dict:
    return {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    cfg = copy.deepcopy(TINY)
    cfg["train"]["epochs"] = 2
    out = tmp_path_factory.mktemp("r2") / "run"
    vgglab.fit(cfg, out=out, log=lambda *_: None)
    return out


# --- data lost ---------------------------------------------------------------------------------


def test_resume_without_last_pt_never_retrains_a_run_that_trained(run, tmp_path, capsys):
    r = copy_run(run, tmp_path / "r")
    (r / "last.pt").unlink()
    before = files_of(r)
    code, err = cli(["train", "--resume", r, "--set", "train.epochs=5"], capsys)
    assert code == 2 and len(err) == 1 and "last.pt is missing, yet it has trained (metrics.csv (2 epochs)" in err[0]
    assert "--init-from" in err[0] and files_of(r) == before
    code, err = cli(["train", "--config", r / "config.yaml", "--out", r], capsys)  # nor offered as a restart in place
    assert code == 2 and "already exists" in err[0] and files_of(r) == before


@pytest.mark.parametrize("name", ["run.lock", "metrics.csv"])
def test_run_files_are_never_written_through_a_symlink(run, tmp_path, capsys, name):
    r = copy_run(run, tmp_path / "r")
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    if name == "metrics.csv":
        (r / name).unlink()
    os.symlink(victim, r / name)
    code, err = cli(["train", "--resume", r, "--set", "train.epochs=3"], capsys)
    assert code == 2 and len(err) == 1 and "symbolic link" in err[0]
    assert victim.read_text() == "precious"


# --- hangs and special files -------------------------------------------------------------------


def run_cli(args, timeout=180):
    return subprocess.run(
        [sys.executable, "-m", "vgglab", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
    )


# end to end (tens of seconds): the slow suite, which CI runs (issue 36's 4-minute fast suite)
@pytest.mark.slow
@pytest.mark.parametrize("special", ["fifo", "devzero", "bomb", "junk"])
def test_a_special_or_bad_file_sorting_first_is_skipped_like_any_other(tmp_path, special):
    root = tree(tmp_path / "t")
    first = root / "train" / "ant" / "!first.png"
    if special == "fifo":
        os.mkfifo(first)
    elif special == "devzero":
        os.symlink("/dev/zero", first)
    elif special == "bomb":  # a header claiming 2.5 gigapixels: PIL refuses it as a decompression bomb
        Image.new("1", (50_000, 50_000)).save(first)
    else:
        first.write_bytes(b"\x00junk, e.g. a macOS ._ file")
    for storage in ("memory", "stream"):
        p = run_cli(
            [
                "data",
                "--dataset",
                "imagefolder",
                "--data-root",
                root,
                "--set",
                f"data.storage={storage}",
                "--set",
                f"data.cache_dir={tmp_path / 'cache'}",
            ]
        )
        assert p.returncode == 0, p.stderr
        assert p.stdout.startswith("imagefolder: train 18, val 2, test 6")
    p = run_cli(
        [
            "data",
            "--dataset",
            "imagefolder",
            "--data-root",
            root,
            "--set",
            "data.strict=true",
            "--set",
            f"data.cache_dir={tmp_path / 'cache2'}",
        ]
    )
    if special in ("fifo", "devzero"):  # never listed as images at all
        assert p.returncode == 0, p.stderr
    else:
        assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1 and "!first.png" in p.stderr


@pytest.mark.slow  # 5-8 s: in the slow suite (CI runs it), keeping the default run under 4 minutes
def test_predict_of_a_fifo_is_an_error_line_not_a_hang(run, tmp_path):
    fifo = tmp_path / "f.png"
    os.mkfifo(fifo)
    p = run_cli(["predict", run, fifo, "--device", "cpu", "--precision", "fp32"], timeout=120)
    assert p.returncode == 1 and "it is a FIFO, not an image file" in p.stderr


@pytest.mark.slow  # 5-8 s: in the slow suite (CI runs it), keeping the default run under 4 minutes
def test_no_loader_worker_outlives_a_killed_run(tmp_path):
    root = tree(tmp_path / "t", per_class=150, side=40)
    cfg = folder_config(root, storage="stream", workers=2, batch_size=8, cache_dir=str(tmp_path / "cache"))
    cfg["train"]["epochs"] = 50
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(cfg))
    proc = subprocess.Popen(
        [sys.executable, "-m", "vgglab", "train", "--config", tmp_path / "r.yaml", "--out", tmp_path / "run"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
    )
    main_ps = psutil.Process(proc.pid)
    deadline = time.time() + 120
    workers = []
    while time.time() < deadline and len(workers) < 2:
        workers = main_ps.children(recursive=True)
        time.sleep(0.2)
    assert len(workers) >= 2, "the run never started its loader workers"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    gone_by = time.time() + 5
    while time.time() < gone_by and any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers):
        time.sleep(0.1)
    alive = [w.pid for w in workers if w.is_running() and w.status() != psutil.STATUS_ZOMBIE]
    assert alive == [], f"workers {alive} outlived their killed main process"


# --- silent ------------------------------------------------------------------------------------


@pytest.mark.parametrize("edit", ["drop train", "edit lr"])
def test_a_hand_edited_config_yaml_is_refused_on_resume(run, tmp_path, capsys, edit):
    r = copy_run(run, tmp_path / "r")
    cfg = yaml.safe_load((r / "config.yaml").read_text())
    if edit == "drop train":
        del cfg["train"]
    else:
        cfg["optim"]["lr"] = 0.5
    (r / "config.yaml").write_text(yaml.safe_dump(cfg))
    before = files_of(r)
    code, err = cli(["train", "--resume", r, "--set", "train.epochs=3"], capsys)
    assert code == 2 and len(err) == 1
    assert ("lacks train" in err[0]) if edit == "drop train" else ("optim.lr 0.05 -> 0.5" in err[0])
    assert files_of(r) == before


def test_scale_bounds_below_the_image_size_are_refused(tmp_path):
    cfg = folder_config(tree(tmp_path / "t"))
    cfg["augment"] = {"crop": "scale", "scale_min": 8, "scale_max": 12}
    with pytest.raises(VgglabError, match="augment.scale_min 8 is below the 32-pixel input"):
        vgglab.fit(cfg, out=tmp_path / "run", log=lambda *_: None)


@pytest.mark.parametrize("tamper", ["more classes", "std 0", "num_classes", "not json", "config list"])
def test_model_safetensors_whose_metadata_disagrees_is_one_line(run, tmp_path, capsys, tamper):
    with safe_open(str(run / "model.safetensors"), "pt") as f:
        meta, tensors = dict(f.metadata()), {k: f.get_tensor(k) for k in f.keys()}
    if tamper == "more classes":
        meta["classes"] = json.dumps([*json.loads(meta["classes"]), "extra"])
    elif tamper == "std 0":
        norm = json.loads(meta["normalization"])
        norm["std"] = [0.0] * len(norm["std"])
        meta["normalization"] = json.dumps(norm)
    elif tamper == "num_classes":
        mc = json.loads(meta["model_config"])
        mc["num_classes"] = 3
        meta["model_config"] = json.dumps(mc)
        meta["classes"] = json.dumps(["a", "b", "c"])
    elif tamper == "not json":
        meta["image_size"] = "{{"
    else:
        meta["config"] = "[1, 2]"
    path = tmp_path / "model.safetensors"
    save_file(tensors, str(path), metadata=meta)
    image = tmp_path / "x.png"
    Image.new("L", (16, 16), 100).save(image)
    code, err = cli(["predict", path, image, "--precision", "fp32"], capsys)
    assert code == 2 and len(err) == 1 and ("damaged" in err[0] or "do not fit" in err[0]), err


# --- tracebacks --------------------------------------------------------------------------------


def test_garbage_rows_in_metrics_csv_are_dropped_on_resume(run, tmp_path):
    r = copy_run(run, tmp_path / "r")
    with open(r / "metrics.csv", "a") as f:
        f.write("garbage,,\n\x00\x01,nonsense\n")
    with pytest.warns(UserWarning, match="not an epoch's row"):
        vgglab.fit(overrides=["train.epochs=3"], resume=r, log=lambda *_: None)
    epochs = [line.split(",")[0] for line in (r / "metrics.csv").read_text().splitlines()[1:]]
    assert epochs == ["1", "2", "3"]


def test_a_dataset_cache_of_the_wrong_shape_is_rebuilt_with_a_warning(tmp_path):
    root = tree(tmp_path / "t")
    cfg = folder_config(root, storage="memory", cache_dir=str(tmp_path / "cache"))
    ds = vgglab.data.load_dataset(vgglab.train.config.load_config(cfg).data)
    blob = torch.load(ds.cache_file, weights_only=True)
    blob["train_x"] = blob["train_x"][:, :, :5]  # valid torch, wrong shape
    torch.save(blob, ds.cache_file)
    with pytest.warns(UserWarning, match="wrong shape"):
        again = vgglab.data.load_dataset(vgglab.train.config.load_config(cfg).data)
    assert again.train.x.shape[1:] == ds.train.x.shape[1:]


def test_a_stream_index_of_the_wrong_shape_is_rebuilt_with_a_warning(tmp_path):
    root = tree(tmp_path / "t")
    cfg = folder_config(root, storage="stream", cache_dir=str(tmp_path / "cache"))
    data = vgglab.train.config.load_config(cfg).data
    first = vgglab.data.load_dataset(data)
    (index,) = (tmp_path / "cache" / "streams").glob("*.json")
    bad = json.loads(index.read_text())
    bad["splits"]["train"][0][2] = "wide"
    index.write_text(json.dumps(bad))
    with pytest.warns(UserWarning, match="wrong shape"):
        again = vgglab.data.load_dataset(data)
    assert again.train.files == first.train.files


@pytest.mark.parametrize("storage", ["memory", "stream"])
def test_a_tree_changed_since_the_run_started_is_named_and_its_validation_split_kept(tmp_path, storage):
    root = tree(tmp_path / "t", per_class=12)
    cfg = folder_config(root, storage=storage, val_size=4, cache_dir=str(tmp_path / "cache"))
    out = tmp_path / "run"
    vgglab.fit(cfg, out=out, log=lambda *_: None)
    before = vgglab.run.record.read_record(out)
    assert len(before["val"]) == 4 and len(before["tree"]["train"]) == 24
    # images added to (and one removed from) train/ and test/ between two starts of the run
    rng = np.random.default_rng(1)
    for i in range(20):
        Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(root / "train" / "ant" / f"new{i:02d}.png")
    gone_val = before["val"][0]
    (root / gone_val).unlink()
    (root / "test" / "bee" / "000.png").unlink()
    lines = []
    vgglab.fit(overrides=["train.epochs=2"], resume=out, log=lines.append)
    (note,) = [line for line in lines if "data changed" in line]
    assert "train +20 / -1 images" in note and "test +0 / -1 images" in note
    assert "kept as recorded (3 of its 4 images still there)" in note
    # the validation split is the recorded one, less the removed image; the new images train
    ds = vgglab.data.load_dataset(vgglab.train.config.load_config(cfg).data, keep_val=before["val"])
    assert sorted(ds.val.files) == sorted(before["val"][1:])
    assert sum(f.startswith("train/ant/new") for f in ds.train.files) == 20
    # the record now holds the tree as this start found it: a third start says nothing
    lines.clear()
    vgglab.fit(overrides=["train.epochs=3"], resume=out, log=lines.append)
    assert not [line for line in lines if "data changed" in line]
    after = vgglab.run.record.read_record(out)
    assert sorted(after["val"]) == sorted(before["val"][1:])
    # evaluation of the run's validation split reads the recorded one too
    inf = vgglab.evaluate.inference.load_inference(out)
    split, _ = inf.load_split("val")
    assert len(split) == 3


def test_a_damaged_split_record_is_one_line_on_resume(tmp_path, capsys):
    root = tree(tmp_path / "t")
    out = tmp_path / "run"
    vgglab.fit(folder_config(root, cache_dir=str(tmp_path / "cache")), out=out, log=lambda *_: None)
    (out / "splits.json.gz").write_bytes(b"not gzip")
    kept = files_of(out)
    code, err = cli(["train", "--resume", out, "--set", "train.epochs=2"], capsys)
    assert code != 0 and len(err) == 1 and "splits.json.gz cannot be read" in err[0] and "delete it" in err[0]
    assert files_of(out) == kept

"""torchrun + DistributedDataParallel on CPU (gloo), two processes on this machine."""

import csv
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest
import torch
import yaml

from vgglab.data import BatchLoader, Normalization, PixelStats, Split
from vgglab.data.config import AugmentConfig
from vgglab.evaluate.checkpoint_eval import evaluate_checkpoint
from vgglab.run.checkpoint import load_checkpoint

pytestmark = pytest.mark.slow

# No BatchNorm and no dropout: then 2 x 32 and 1 x 64 are the same computation.
DDP_CONFIG = {
    "name": "ddp",
    "data": {"dataset": "digits", "batch_size": 64, "train_limit": 384},
    "augment": {"crop": "pad", "padding": 2, "flip": True},
    "model": {"name": "vgg11", "options": {"width": 0.125, "head": "gap"}},
    "optim": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
    "schedule": {"name": "none"},
    # gloo, also where a GPU is present; precision and layout pinned: auto may resolve differently for
    # a 32-image shard than for the whole 64-image batch (bf16 on a CPU with native bf16), and this test
    # compares the arithmetic of DDP with one process, not the speed probe
    "train": {"epochs": 2, "seed": 0, "threads": 1, "device": "cpu", "precision": "fp32", "channels_last": False},
    "log": {"progress": "line"},
}


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def torchrun(nproc, args, **kw):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "-m", "vgglab", *args]
    return subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600, **kw)


def rows(run):
    with open(run / "metrics.csv") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    cfg = tmp / "ddp.yaml"
    cfg.write_text(yaml.safe_dump(DDP_CONFIG))
    two = torchrun(2, ["train", "--config", str(cfg), "--out", str(tmp / "two")])
    assert two.returncode == 0, two.stdout[-3000:] + two.stderr[-3000:]
    one = subprocess.run(
        [sys.executable, "-m", "vgglab", "train", "--config", str(cfg), "--out", str(tmp / "one")],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert one.returncode == 0, one.stderr[-3000:]
    return tmp, two, one


def test_two_processes_match_one_process_with_the_global_batch(runs):
    tmp, _, _ = runs
    a, b = load_checkpoint(tmp / "two" / "last.pt")["model"], load_checkpoint(tmp / "one" / "last.pt")["model"]
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=0, msg=k)


def test_only_rank_zero_writes_and_prints(runs):
    tmp, two, _ = runs
    assert [r["epoch"] for r in rows(tmp / "two")] == ["1", "2"]
    out = two.stdout + two.stderr
    assert out.count("epoch 1/2  train loss") == 1 and out.count("test top-1:") == 1
    assert sorted(p.name for p in (tmp / "two").iterdir()) == sorted(p.name for p in (tmp / "one").iterdir())
    assert not [p for p in (tmp / "two").iterdir() if p.name.endswith(".tmp")]
    # the global training metrics are all-reduced: both runs saw the same images
    r2, r1 = rows(tmp / "two")[-1], rows(tmp / "one")[-1]
    assert float(r2["train_loss"]) == pytest.approx(float(r1["train_loss"]), abs=1e-4)


def test_sharded_validation_equals_single_process_evaluation(runs):
    tmp, _, _ = runs
    m = evaluate_checkpoint(tmp / "two" / "last.pt", split="val", out=tmp / "ev", device="cpu", pictures=False)
    assert float(rows(tmp / "two")[-1]["val_top1"]) == pytest.approx(m["top1"], abs=1e-6)
    assert float(rows(tmp / "two")[-1]["val_loss"]) == pytest.approx(m["loss"], rel=1e-4)


def test_a_two_process_checkpoint_resumes_in_one_process(runs):
    tmp, _, _ = runs
    r = subprocess.run(
        [sys.executable, "-m", "vgglab", "train", "--resume", str(tmp / "two"), "--set", "train.epochs=3"],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert [x["epoch"] for x in rows(tmp / "two")] == ["1", "2", "3"]


def test_indivisible_global_batch_is_a_clear_error(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({**DDP_CONFIG, "data": {**DDP_CONFIG["data"], "batch_size": 63}}))
    r = torchrun(2, ["train", "--config", str(cfg), "--out", str(tmp_path / "r")])
    assert r.returncode != 0 and "not divisible by the 2 processes" in r.stderr


def test_killing_one_rank_ends_the_job(tmp_path):
    cfg = tmp_path / "c.yaml"
    long = {**DDP_CONFIG, "data": {**DDP_CONFIG["data"], "train_limit": None}, "train": {**DDP_CONFIG["train"], "epochs": 50}}
    cfg.write_text(yaml.safe_dump(long))
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "vgglab",
        "train",
        "--config",
        str(cfg),
        "--out",
        str(tmp_path / "r"),
    ]
    job = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not (tmp_path / "r" / "metrics.csv").exists():  # both ranks are training
            assert time.time() < deadline and job.poll() is None
            time.sleep(0.2)
        workers = [p for p in psutil.Process(job.pid).children(recursive=True) if "vgglab" in " ".join(p.cmdline())]
        assert len(workers) == 2
        os.kill(workers[-1].pid, signal.SIGKILL)
        start = time.time()
        code = job.wait(timeout=60)
        assert code != 0 and time.time() - start < 60
        for w in workers:
            assert not w.is_running() or w.status() == psutil.STATUS_ZOMBIE
    finally:
        if job.poll() is None:
            job.kill()


def test_loader_shards_without_overlap_and_augments_independently_of_world_size():
    g = torch.Generator().manual_seed(0)
    split = Split(torch.randint(0, 256, (40, 3, 12, 12), generator=g, dtype=torch.uint8), torch.arange(40))
    stats = PixelStats(torch.full((3,), 0.5), torch.full((3,), 0.25), torch.tensor([0.1, 0.01, 0.001]), torch.eye(3))
    aug = AugmentConfig(crop="pad", padding=2, flip=True, pca_std=0.1)

    def make(rank, world):
        return BatchLoader(
            split,
            8,
            image_size=12,
            norm=Normalization.of(stats),
            augment=aug,
            pca=stats,
            seed=5,
            shuffle=True,
            drop_last=True,
            shard=(rank, world),
        )

    single = [(x, y) for x, y in make(0, 1)]
    r0, r1 = list(make(0, 2)), list(make(1, 2))
    assert len(r0) == len(r1) == len(single) == 5
    for (x, y), (x0, y0), (x1, y1) in zip(single, r0, r1, strict=True):
        assert torch.equal(torch.cat([y0, y1]), y) and not set(y0.tolist()) & set(y1.tolist())
        assert torch.equal(torch.cat([x0, x1]), x)  # the same augmentation for the same sample
    ev = [
        torch.cat([y for _, y in BatchLoader(split, 16, image_size=12, norm=Normalization.of(stats), shard=(r, 3))])
        for r in range(3)
    ]
    assert sorted(torch.cat(ev).tolist()) == list(range(40))  # evaluation shards cover every image once


def test_more_processes_than_gpus_is_a_clear_error_before_joining(monkeypatch):
    from vgglab.errors import VgglabError
    from vgglab.train import distributed

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(distributed.dist, "init_process_group", lambda *a, **k: pytest.fail("joined a group it cannot serve"))
    with pytest.raises(
        VgglabError, match=r"torchrun started 2 processes per node but this node has 1 CUDA device\(s\): use --nproc_per_node 1"
    ):
        distributed.setup("auto")

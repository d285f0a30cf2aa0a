"""One writer per run directory; resume changes only what it can honour, and says when (issue 19)."""

import copy
import csv
import json
import os
import subprocess
import sys

import pytest
import yaml

import vgglab
from vgglab.errors import VgglabError
from vgglab.run.lock import LOCK_NAME, RunLock, RunLocked
from vgglab.train.config import ConfigError

from ..conftest import TINY


def epochs_of(run):
    with open(run / "metrics.csv") as f:
        return [int(r["epoch"]) for r in csv.DictReader(f)]


def test_a_second_holder_is_refused_naming_the_first_and_release_frees_it(tmp_path):
    first = RunLock(log=lambda *_: None)
    first.acquire(tmp_path)
    holder = json.loads((tmp_path / LOCK_NAME).read_text())
    assert holder["pid"] == os.getpid()
    with pytest.raises(RunLocked, match=rf"in use by process {os.getpid()} on .*wait for it to finish"):
        RunLock().acquire(tmp_path)  # another open file: flock refuses it even in one process
    first.release()
    assert not (tmp_path / LOCK_NAME).exists()
    again = RunLock()
    again.acquire(tmp_path)
    again.release()
    first.release()  # idempotent


def test_a_stale_lock_is_taken_over_with_a_note(tmp_path):
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": 999999, "host": "h", "started": 0, "command": "vgglab train"}))
    notes = []
    lock = RunLock(log=notes.append)
    lock.acquire(tmp_path)
    assert (
        len(notes) == 1 and "took over the lock" in notes[0] and "process 999999" in notes[0] and "no longer running" in notes[0]
    )
    lock.release()


RESUME = r"""
import sys, vgglab
from vgglab.cli import main
sys.exit(main(["train", "--resume", sys.argv[1], "--set", "train.epochs=4"]))
"""


@pytest.mark.slow  # 5-8 s: in the slow suite (CI runs it), keeping the default run under 4 minutes
def test_two_processes_resuming_one_run_exactly_one_proceeds(tmp_path):
    cfg = copy.deepcopy(TINY)
    cfg["train"]["epochs"] = 1
    cfg["data"]["train_limit"] = 640  # epochs long enough that the two overlap
    run = vgglab.fit(cfg, out=tmp_path / "run", log=lambda *_: None).run_dir
    procs = [
        subprocess.Popen([sys.executable, "-c", RESUME, str(run)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 2], outs
    refused = next(err for p, (_, err) in zip(procs, outs, strict=True) if p.returncode == 2)
    assert refused.strip().count("\n") == 0 and "is in use by process" in refused
    assert epochs_of(run) == [1, 2, 3, 4]  # each epoch once
    assert not (run / LOCK_NAME).exists()


def test_resume_honours_epochs_and_records_when(tmp_path):
    cfg = copy.deepcopy(TINY)
    cfg["train"]["epochs"] = 1
    run = vgglab.fit(cfg, out=tmp_path / "run", log=lambda *_: None).run_dir
    vgglab.fit(None, ["train.epochs=3"], resume=run, log=lambda *_: None)
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["train"]["epochs"] == 3 and saved["changes"] == [{"epoch": 2, "set": {"train.epochs": 3}}]
    with open(run / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["changed"] for r in rows] == ["", "train.epochs=3", ""]
    assert vgglab.load_run(run).metrics[1]["changed"] == "train.epochs=3"


def test_resume_refuses_a_change_it_cannot_honour_and_records_nothing(tmp_path):
    cfg = copy.deepcopy(TINY)
    cfg["train"]["epochs"] = 1
    run = vgglab.fit(cfg, out=tmp_path / "run", log=lambda *_: None).run_dir
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    with pytest.raises(ConfigError, match=r"cannot change optim.lr on resume.*may change .*train.epochs.*--init-from"):
        vgglab.fit(None, ["optim.lr=0.5"], resume=run, log=lambda *_: None)
    with pytest.raises(ConfigError, match=r"train.epochs=0 is below|train.epochs must be >= 1"):
        vgglab.fit(None, ["train.epochs=0"], resume=run, log=lambda *_: None)
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before


def test_a_run_that_stopped_before_its_first_checkpoint_restarts_in_place(tmp_path):
    cfg = copy.deepcopy(TINY)
    cfg["optim"]["lr"] = 1e30  # the first epoch diverges: config.yaml written, no last.pt
    with pytest.raises(VgglabError, match=r"no checkpoint was written; restart it in place with vgglab train --resume"):
        vgglab.fit(cfg, out=tmp_path / "run", log=lambda *_: None)
    run = tmp_path / "run"
    assert (run / "config.yaml").is_file() and not (run / "last.pt").exists()
    with pytest.raises(
        VgglabError, match=r"stopped before its first checkpoint: restart it in place with `vgglab train --resume"
    ):
        vgglab.fit(cfg, out=run, log=lambda *_: None)
    notes = []
    res = vgglab.fit(None, ["optim.lr=0.05", "train.epochs=1"], resume=run, log=notes.append)
    assert any("training it again from epoch 1 in place" in n for n in notes)
    assert epochs_of(res.run_dir) == [1] and yaml.safe_load((run / "config.yaml").read_text())["optim"]["lr"] == 0.05

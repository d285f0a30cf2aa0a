"""Runs written by an earlier vgglab still resume and evaluate (tests/fixtures/old_run: see its README)."""

import csv
import shutil
from pathlib import Path

import yaml

import vgglab
from vgglab.evaluate import evaluate_checkpoint
from vgglab.train.config import load_config

OLD_RUN = Path(__file__).resolve().parent.parent / "fixtures" / "old_run"


def test_a_run_written_before_the_declared_config_resumes_and_evaluates(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(OLD_RUN, run)
    saved = load_config(run / "config.yaml")
    assert saved.train.epochs == 1 and saved.resolved is not None

    result = vgglab.fit(resume=run, overrides=["train.epochs=2"], log=lambda *_: None)

    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert result.metrics["test_n"] == 360
    written = yaml.safe_load((run / "config.yaml").read_text())
    assert written["train"]["epochs"] == 2 and written["changes"] == [{"epoch": 2, "set": {"train.epochs": 2}}]
    metrics = evaluate_checkpoint(run / "last.pt", out=tmp_path / "eval")
    assert metrics["n"] == 360 and 0.0 <= metrics["top1"] <= 1.0

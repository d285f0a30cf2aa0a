"""Reporter: metrics.csv, the line per epoch, the progress callback, and silence off rank 0."""

import csv

from vgglab.train.config import Config
from vgglab.train.reporter import METRIC_COLUMNS, MetricsLog, Reporter


def row(epoch, val=True):
    return {
        "epoch": epoch,
        "train_loss": 1.0 / epoch,
        "train_top1": 0.5,
        "val_loss": 0.9 if val else None,
        "val_top1": 0.75 if val else None,
        "lr": 0.05,
        "seconds": 2.0,
        "images_per_s": 1234.5,
    }


def read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def reporter(tmp_path, progress="line", is_main=True, epochs=3):
    lines = []
    cfg = Config.from_dict({"train": {"epochs": epochs}, "log": {"progress": progress}})
    return Reporter(cfg, tmp_path, is_main, lines.append), lines


def test_each_epoch_is_one_csv_row_and_one_line(tmp_path):
    rep, lines = reporter(tmp_path)
    for e in (1, 2):
        rep.start_epoch(e, steps=10, local_batch=8, lr_now=lambda: 0.05)
        rep.end_training()
        rep.end_epoch(row(e))
    rows = read(tmp_path / "metrics.csv")
    assert [r["epoch"] for r in rows] == ["1", "2"] and list(rows[0]) == METRIC_COLUMNS
    assert rows[1]["train_loss"] == "0.5" and rows[0]["images_per_s"] == "1234.5"
    assert lines == [
        f"epoch {e}/3  train loss {1 / e:.4f} top-1 50.00%  val loss 0.9000 top-1 75.00%  lr 0.05  1234 img/s  2.0s"
        for e in (1, 2)
    ]


def test_without_validation_the_val_columns_are_empty_and_not_printed(tmp_path):
    rep, lines = reporter(tmp_path)
    rep.end_epoch(row(1, val=False))
    assert read(tmp_path / "metrics.csv")[0]["val_top1"] == "" and "val" not in lines[0]


def test_resuming_forgets_the_rows_after_the_checkpoint(tmp_path):
    rep, _ = reporter(tmp_path)
    for e in (1, 2, 3):
        rep.end_epoch(row(e))
    again, _ = reporter(tmp_path)
    again.resumed(1)
    again.end_epoch(row(2))
    assert [r["epoch"] for r in read(tmp_path / "metrics.csv")] == ["1", "2"]
    assert MetricsLog(tmp_path / "metrics.csv").rows()[-1]["epoch"] == "2"


def test_other_ranks_write_and_print_nothing(tmp_path):
    rep, lines = reporter(tmp_path, is_main=False)
    assert rep.start_epoch(1, 10, 8, lambda: 0.1) is None
    rep.resumed(0)
    rep.end_epoch(row(1))
    rep.close()
    assert lines == [] and not (tmp_path / "metrics.csv").exists()


def test_a_bar_gets_a_progress_callback_and_none_prints_nothing(tmp_path, capsys):
    rep, lines = reporter(tmp_path, progress="bar")
    on_step = rep.start_epoch(1, steps=4, local_batch=8, lr_now=lambda: 0.1)
    on_step(8, lambda: (0.7, 0.25))
    on_step(16, lambda: (0.7, 0.25))
    assert rep._progress.bar.n == 16  # images, as the loop counts them
    assert rep.end_training() >= 0 and rep._progress is None
    (tmp_path / "q").mkdir()
    quiet, quiet_lines = reporter(tmp_path / "q", progress="none")
    assert quiet.start_epoch(1, 4, 8, lambda: 0.1) is None
    quiet.end_epoch(row(1))
    assert quiet_lines == [] and (tmp_path / "q" / "metrics.csv").exists()

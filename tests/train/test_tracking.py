"""Tracking that survives a resume: TensorBoard scalars numeric only (the change as text), and
one MLflow run per vgglab run, read back with MLflow's own client from a real local store."""

import copy
import time

import pytest
import yaml

import vgglab
from vgglab.cli import main
from vgglab.dotted import flatten
from vgglab.train import tracking
from vgglab.train.tracking import ID_FILE

from ..conftest import TINY

mlflow = pytest.importorskip("mlflow", reason="the mlflow extra (installed by the dev extra, so CI runs this)")
event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")


def tracked_config(epochs=2):
    cfg = copy.deepcopy(TINY)
    cfg["train"]["epochs"] = epochs
    cfg["log"] = {"progress": "none", "tensorboard": True, "mlflow": True}
    return cfg


@pytest.fixture
def store(tmp_path, monkeypatch):
    """A real local store; the working directory is the test's, where MLflow puts artifacts (./mlruns)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)
    return uri


def test_a_resumed_run_with_a_change_stays_one_mlflow_run_and_one_tensorboard_series(tmp_path, store, monkeypatch):
    out = tmp_path / "run"
    vgglab.fit(tracked_config(2), out=out, log=lambda *_: None)
    # resumed from elsewhere, the environment's URI gone: the run's own file says where its run is
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    vgglab.fit(overrides=["train.epochs=3"], resume=out, log=lambda *_: None)

    client = mlflow.tracking.MlflowClient(tracking_uri=store)
    (run,) = client.search_runs(experiment_ids=["0"])
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")] == [1, 2, 3]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_top1")] == [1, 2, 3]
    assert "final_test_top1" in run.data.metrics
    # every setting of config.yaml: a param, or a tag for those a resume may change
    saved = flatten(
        {k: v for k, v in yaml.safe_load((out / "config.yaml").read_text()).items() if k not in ("changes", "resolved")}
    )
    logged = {**run.data.params, **run.data.tags}
    for key, value in saved.items():
        assert logged[key] == ("null" if value is None else str(value) if not isinstance(value, (list, dict)) else logged[key]), (
            key
        )
    assert "train.epochs" not in run.data.params and run.data.tags["train.epochs"] == "3"
    assert run.data.tags["vgglab.change.epoch_3"] == "train.epochs=3"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "model.safetensors", "results.json", "metrics.csv"} <= artifacts

    acc = event_accumulator.EventAccumulator(str(out / "tensorboard"))
    acc.Reload()
    for tag in ("train_loss", "train_top1", "val_loss", "val_top1", "lr", "seconds", "images_per_s"):
        assert [e.step for e in acc.Scalars(tag)] == [1, 2, 3], tag
    assert "changed" not in acc.Tags()["scalars"]
    assert any("changed" in t for t in acc.Tags()["tensors"])  # add_text: the change, as text


def test_a_tracking_store_that_fails_is_one_warning_and_the_run_goes_on(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////proc/no-such-folder/mlflow.db")
    cfg = tracked_config(2)
    cfg["log"]["tensorboard"] = False
    with pytest.warns(UserWarning, match="mlflow tracking is off for this run") as warned:
        result = vgglab.fit(cfg, out=tmp_path / "run", log=lambda *_: None)
    assert len([w for w in warned if "mlflow" in str(w.message)]) == 1
    assert result.metrics["test_top1"] > 0 and len((tmp_path / "run" / "metrics.csv").read_text().splitlines()) == 3
    assert not (tmp_path / "run" / ID_FILE).exists()


def test_mlflow_turned_on_at_a_resume_gets_the_earlier_epochs_too(tmp_path, store, monkeypatch):
    out = tmp_path / "run"
    cfg = tracked_config(2)
    cfg["log"] = {"progress": "none"}
    vgglab.fit(cfg, out=out, log=lambda *_: None)
    # a store slower to create than the run's start waits for (a new SQLite store on a busy machine):
    # the earlier epochs still come before the ones the run logs next
    monkeypatch.setattr(tracking, "HEADER_WAIT_S", 0.0)
    write_id_file = tracking.write_id_file
    monkeypatch.setattr(tracking, "write_id_file", lambda *a: (time.sleep(1.0), write_id_file(*a)))
    vgglab.fit(overrides=["train.epochs=3", "log.mlflow=true"], resume=out, log=lambda *_: None)
    client = mlflow.tracking.MlflowClient(tracking_uri=store)
    (run,) = client.search_runs(experiment_ids=["0"])
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")] == [1, 2, 3]


@pytest.mark.slow  # 5-8 s: in the slow suite (CI runs it), keeping the default run under 4 minutes
def test_the_report_joins_the_runs_mlflow_run(tmp_path, store):
    out = tmp_path / "run"
    cfg = tracked_config(1)
    cfg["log"]["tensorboard"] = False
    vgglab.fit(cfg, out=out, log=lambda *_: None)
    assert main(["report", str(out), "--device", "cpu"]) == 0
    client = mlflow.tracking.MlflowClient(tracking_uri=store)
    (run,) = client.search_runs(experiment_ids=["0"])
    assert "report.html" in {a.path for a in client.list_artifacts(run.info.run_id)}


def test_tracking_without_its_package_is_one_line_before_any_run_file(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    cfg = tracked_config(1)
    with pytest.raises(vgglab.VgglabError, match=r"log.mlflow: true needs the mlflow package: pip install 'vgglab\[mlflow\]'"):
        vgglab.fit(cfg, out=tmp_path / "run", log=lambda *_: None)
    assert not (tmp_path / "run").exists()

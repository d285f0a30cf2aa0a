"""A run in MLflow (``log.mlflow: true``, the optional ``mlflow`` extra): the resolved config as
params, every epoch's metrics at its step, the final metrics, and the run's files as artifacts.

The MLflow run's id and tracking URI are kept in ``RUN_DIR/mlflow_run.json``, so a resumed run
continues the same MLflow run, wherever it is resumed from. The tracking URI is MLflow's own:
``MLFLOW_TRACKING_URI``, else its default (a SQLite store ``mlflow.db`` in the working directory
since MLflow 3.7); the experiment is ``MLFLOW_EXPERIMENT_NAME`` (or ``_ID``) when set, else
MLflow's Default. Only the main process of a torchrun run logs.

MLflow params cannot change once logged, yet a resume may change a few settings
(:data:`~vgglab.train.config.RESUME_KEYS`, e.g. ``train.epochs``): those go in as tags, which
can, and every other key of config.yaml as a param; each resume's change is also a tag
``vgglab.change.epoch_N``. A tracking failure (store unwritable, server down) is one warning:
training goes on, and metrics.csv stays the record.
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from pathlib import Path

from ..files import write_text
from .config import RESUME_KEYS, Config, ConfigError

ID_FILE = "mlflow_run.json"
MAX_PARAM = 6000  # characters MLflow keeps of a param value


def flatten(d: dict, prefix: str = "") -> dict[str, object]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists and scalars are leaves."""
    out: dict[str, object] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _text(v) -> str:
    return "null" if v is None else json.dumps(v) if isinstance(v, (list, dict)) else str(v)


class MLflowRun:
    """One vgglab run's MLflow run. Every method is a no-op once a call has failed (after one warning)."""

    def __init__(self, client, run_id: str, warn=None):
        self.client, self.run_id = client, run_id
        self.warn = warn or (lambda msg: warnings.warn(msg, stacklevel=3))
        self.failed = False

    @classmethod
    def open(cls, cfg: Config, run_dir: Path, resumed_rows: list[dict] | None = None, log=print) -> "MLflowRun | None":
        """The run's MLflow run (continued when ``mlflow_run.json`` names one, else created, with
        the rows of epochs trained before tracking was turned on), or None when ``log.mlflow`` is
        off or MLflow cannot be reached (one warning)."""
        if not cfg.log.mlflow:
            return None
        try:
            import mlflow  # noqa: F401  (the optional extra)
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise ConfigError("log.mlflow: true needs the mlflow package: pip install 'vgglab[mlflow]'") from None
        id_file = run_dir / ID_FILE
        try:
            if id_file.exists():
                saved = json.loads(id_file.read_text())
                client = MlflowClient(tracking_uri=saved["tracking_uri"])
                client.get_run(saved["run_id"])  # raises when the store no longer has it
                client.update_run(saved["run_id"], status="RUNNING")
                run = cls(client, saved["run_id"])
                log(f"mlflow: continuing run {saved['run_id']} at {saved['tracking_uri']}")
                return run
            uri = mlflow.get_tracking_uri()
            client = MlflowClient(tracking_uri=uri)
            run_id = client.create_run(_experiment_id(client), run_name=run_dir.name,
                                       tags={"vgglab.run_dir": str(run_dir.resolve())}).info.run_id
            write_text(id_file, json.dumps({"run_id": run_id, "tracking_uri": uri}, indent=1))
            log(f"mlflow: run {run_id} at {uri}")
        except Exception as exc:  # noqa: BLE001 (any store or network failure)
            warnings.warn(f"mlflow tracking is off for this run: {_why(exc)}; metrics.csv keeps the record", stacklevel=2)
            return None
        run = cls(client, run_id)
        run.log_config(cfg)
        for row in resumed_rows or []:
            run.log_epoch(row)
        return run

    def _call(self, what: str, fn, *args, **kwargs) -> None:
        if self.failed:
            return
        try:
            fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001
            self.failed = True
            self.warn(f"mlflow tracking stopped ({what}: {_why(exc)}); training goes on and metrics.csv keeps the record")

    def log_config(self, cfg: Config) -> None:
        from mlflow.entities import Param, RunTag

        flat = flatten(cfg.to_dict())
        mutable = set(RESUME_KEYS) | {"changes", "resolved"} | {k for k in flat if k.startswith(("changes", "resolved"))}
        params = [Param(k, _text(v)[:MAX_PARAM]) for k, v in flat.items() if k not in mutable]
        tags = [RunTag(k, _text(v)[:MAX_PARAM]) for k, v in flat.items() if k in mutable and not k.startswith("changes")]
        for i in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
            self._call("params", self.client.log_batch, self.run_id, params=params[i:i + 100])
        self._call("tags", self.client.log_batch, self.run_id, tags=tags)

    def log_change(self, cfg: Config, epoch: int, changed: str) -> None:
        """A resume's changes: the tags of the keys it changed, and the change itself as a tag."""
        from mlflow.entities import RunTag

        flat = flatten(cfg.to_dict())
        tags = [RunTag(k, _text(flat[k])[:MAX_PARAM]) for k in RESUME_KEYS if k in flat]
        tags.append(RunTag(f"vgglab.change.epoch_{epoch}", changed))
        self._call("tags", self.client.log_batch, self.run_id, tags=tags)

    def log_epoch(self, row: dict) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        step = int(row["epoch"])
        metrics = [Metric(k, _number(v), now, step) for k, v in row.items() if k != "epoch" and _number(v) is not None]
        self._call("metrics", self.client.log_batch, self.run_id, metrics=metrics)

    def log_final(self, result: dict, run_dir: Path) -> None:
        """The selected checkpoint's validation and test metrics (``final_`` prefixed), and the
        run's files: config.yaml, model.safetensors, results.json, metrics.csv, a report if any."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(f"final_{k}", _number(v), now, 0) for k, v in result.items() if k != "timings" and _number(v) is not None]
        self._call("final metrics", self.client.log_batch, self.run_id, metrics=metrics)
        for name in ("config.yaml", "model.safetensors", "results.json", "metrics.csv", "report.html"):
            if (run_dir / name).is_file():
                self._call(f"artifact {name}", self.client.log_artifact, self.run_id, str(run_dir / name))

    def end(self, status: str = "FINISHED") -> None:
        self._call("end", self.client.set_terminated, self.run_id, status=status)


def log_artifact_to_run(run_dir: Path, path: Path, log=print) -> bool:
    """Add ``path`` (e.g. a report) to the MLflow run of ``run_dir`` when it has one and MLflow is
    installed; a failure is one warning. Returns whether it was logged."""
    id_file = Path(run_dir) / ID_FILE
    if not id_file.is_file():
        return False
    try:
        from mlflow.tracking import MlflowClient
    except ImportError:
        return False
    try:
        saved = json.loads(id_file.read_text())
        MlflowClient(tracking_uri=saved["tracking_uri"]).log_artifact(saved["run_id"], str(path))
    except Exception as exc:  # noqa: BLE001
        warnings.warn(f"could not add {path.name} to the run's mlflow run: {_why(exc)}", stacklevel=2)
        return False
    log(f"mlflow: added {path.name} to run {saved['run_id']}")
    return True


def _experiment_id(client) -> str:
    name = os.environ.get("MLFLOW_EXPERIMENT_NAME")
    if name:
        found = client.get_experiment_by_name(name)
        return found.experiment_id if found is not None else client.create_experiment(name)
    return os.environ.get("MLFLOW_EXPERIMENT_ID", "0")


def _number(v) -> float | None:
    """A metric value: a finite number, or one written in metrics.csv (rows read back are text)."""
    if isinstance(v, str):
        try:
            v = float(v)
        except ValueError:
            return None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v) if math.isfinite(v) else None


def _why(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__

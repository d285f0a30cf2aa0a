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
``vgglab.change.epoch_N``.

Tracking never holds the training loop: every MLflow call, the run's creation first, runs in one
background thread, in order. A run waits for it at most :data:`HEADER_WAIT_S` seconds when it starts
(only so that the MLflow run's line comes with the header) and :data:`WAIT_S` seconds when it ends
(for the last records); a store that is down, slow or unwritable costs one warning, training goes on
and metrics.csv stays the record. MLflow's own log lines from that thread (its retries, SQL errors)
are not printed. A run directory copied to another path (``cp -r RUN COPY``) gets an MLflow run of
its own when resumed (tagged ``vgglab.copied_from``); one moved there continues its run.
"""

from __future__ import annotations

import json
import logging
import math
import os
import queue
import threading
import time
import warnings
from pathlib import Path

from ..dotted import flatten
from ..run.files import MLFLOW_ID
from .config import RESUME_KEYS, Config, ConfigError
from .tracking_record import read_id_file, still_owns, store_lock, why, write_id_file

ID_FILE = MLFLOW_ID
MAX_PARAM = 6000  # characters MLflow keeps of a param value
WAIT_S = 10.0  # seconds a run's end waits for the store to take what is queued (a busy machine's new SQLite store takes seconds)
HEADER_WAIT_S = 2.0  # seconds a run's start waits for its MLflow run, only so that its line comes with the header
THREAD_NAME = "vgglab-mlflow"
# MLflow's HTTP client retries with backoff for minutes by default; a run's calls wait WAIT_S at
# most anyway, and these keep the background thread from hammering a dead server meanwhile.
_HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}


def _text(v) -> str:
    return "null" if v is None else json.dumps(v) if isinstance(v, (list, dict)) else str(v)


class _FromTrackingThread(logging.Filter):
    """Drops log records made in the tracking thread: MLflow logs its retries and SQL errors (with
    tracebacks) itself, and vgglab says what happened in one warning instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.threadName != THREAD_NAME


_FILTER = _FromTrackingThread()


def _quiet_tracking_thread() -> None:
    """Before any tracking call: MLflow's HTTP client bounded (unless the user set its variables),
    and its log lines from the tracking thread dropped."""
    for key, value in _HTTP_DEFAULTS.items():
        os.environ.setdefault(key, value)
    for handler in [*logging.getLogger().handlers, *logging.getLogger("mlflow").handlers, logging.lastResort]:
        if handler is not None and _FILTER not in handler.filters:
            handler.addFilter(_FILTER)


class _Worker:
    """One daemon thread running tracking calls in order, so the training loop never waits on a
    store; a call that hangs holds nothing but this thread, which the process does not wait for."""

    def __init__(self):
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        threading.Thread(target=self._run, name=THREAD_NAME, daemon=True).start()

    def _run(self) -> None:
        while True:
            fn, done = self._queue.get()
            try:
                fn()
            except BaseException:  # noqa: BLE001  (fn reports its own failures; nothing may end the thread)
                pass
            finally:
                done.set()

    def submit(self, fn) -> threading.Event:
        done = threading.Event()
        self._queue.put((fn, done))
        return done


class MLflowRun:
    """One vgglab run's MLflow run. Every call, the run's creation first, is queued to the tracking
    thread and returns at once; after the first failure every later call is dropped (one warning
    in all). ``client`` and ``run_id`` are known once the creation has run."""

    def __init__(self, client=None, run_id: str | None = None, warn=None, worker: _Worker | None = None):
        self.client, self.run_id = client, run_id
        self.warn = warn or _warn
        self.worker = worker or _Worker()
        self.failed = False
        self._last: threading.Event | None = None

    @classmethod
    def open(
        cls, cfg: Config, run_dir: Path, resumed_rows: list[dict] | None = None, log=print, wait_s: float | None = None
    ) -> MLflowRun | None:
        """The run's MLflow run (continued when ``mlflow_run.json`` names one made for this
        directory, else created, with the rows of epochs trained before), or None when
        ``log.mlflow`` is off or the id file is damaged (one warning). Creating it is queued like
        every other call; this waits at most ``wait_s`` seconds (default :data:`HEADER_WAIT_S`) for it,
        only so that its line comes with the run's header. The config and the earlier epochs are queued
        here, behind the creation and before anything the run logs next, however long the store takes
        to create. A store that fails is one warning from the tracking thread."""
        if not cfg.log.mlflow:
            return None
        try:
            import mlflow  # noqa: F401  (the optional extra)
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise ConfigError("log.mlflow: true needs the mlflow package: pip install 'vgglab[mlflow]'") from None
        _quiet_tracking_thread()
        run_dir = Path(run_dir)
        id_file = run_dir / ID_FILE
        try:
            saved = read_id_file(id_file)
        except ConfigError as exc:  # damaged: never guess which MLflow run it meant, never overwrite it
            _warn(f"mlflow tracking is off for this run: {exc}")
            return None
        here = str(run_dir.resolve())
        copied_from = None
        if saved is not None and saved.get("run_dir") not in (None, here) and still_owns(saved):
            copied_from, saved = saved, None  # the original run still has it: this is a copy
        run = cls()

        def start() -> None:
            if saved is not None:
                client = MlflowClient(tracking_uri=saved["tracking_uri"])
                client.get_run(saved["run_id"])  # raises when the store no longer has it
                client.update_run(saved["run_id"], status="RUNNING")
                if saved.get("run_dir") != here:  # moved (or written before run_dir was kept)
                    client.set_tag(saved["run_id"], "vgglab.run_dir", here)
                    write_id_file(id_file, saved["run_id"], saved["tracking_uri"], here)
                run.client, run.run_id = client, saved["run_id"]
                log(f"mlflow: continuing run {run.run_id} at {saved['tracking_uri']}")
                return
            uri = mlflow.get_tracking_uri()
            tags = {"vgglab.run_dir": here}
            if copied_from is not None:
                tags["vgglab.copied_from"] = copied_from["run_id"]
            with store_lock(uri):  # two runs creating one new SQLite store at once would race on its tables
                client = MlflowClient(tracking_uri=uri)
                run_id = client.create_run(_experiment_id(client), run_name=run_dir.name, tags=tags).info.run_id
            write_id_file(id_file, run_id, uri, here)
            run.client, run.run_id = client, run_id
            if copied_from is not None:
                log(
                    f"mlflow: {run_dir} is a copy of {copied_from['run_dir']}: its own run {run_id} at {uri} "
                    f"(tagged vgglab.copied_from {copied_from['run_id']})"
                )
            else:
                log(f"mlflow: run {run_id} at {uri}")

        run._call("start", start, off=True)
        started = run._last
        if saved is None:  # a new MLflow run: the config, then the epochs trained before tracking was on
            run.log_config(cfg)
            for row in resumed_rows or []:
                run.log_epoch(row)
        if started is not None:
            started.wait(HEADER_WAIT_S if wait_s is None else wait_s)
        return run

    def _call(self, what: str, fn, off: bool = False) -> None:
        """Queue ``fn()`` (which reads ``self.client`` and ``self.run_id`` when it runs)."""

        def call() -> None:
            if self.failed:
                return
            try:
                fn()
            except Exception as exc:  # noqa: BLE001  (any store or network failure)
                if self.failed:  # already given up on (a wait that timed out said so): one warning in all
                    return
                self.failed = True
                if off:
                    self.warn(
                        f"mlflow tracking is off for this run: {why(exc)}; training goes on and metrics.csv keeps the record"
                    )
                else:
                    self.warn(f"mlflow tracking stopped ({what}: {why(exc)}); training goes on and metrics.csv keeps the record")

        if not self.failed:
            self._last = self.worker.submit(call)

    def wait(self, timeout_s: float = WAIT_S) -> bool:
        """Wait for the queued calls, at most ``timeout_s`` seconds; False (and one warning) when
        the store has not taken them by then: the run goes on without them."""
        if self._last is None or self.failed:
            return True
        if self.worker.submit(lambda: None).wait(timeout_s):  # the queue is in order: all before it are done
            return True
        self.failed = True
        self.warn(
            f"mlflow tracking stopped: the store did not take the run's records within {timeout_s:g} s; "
            "metrics.csv keeps the record"
        )
        return False

    def log_config(self, cfg: Config) -> None:
        from mlflow.entities import Param, RunTag

        flat = flatten(cfg.to_dict())
        mutable = set(RESUME_KEYS) | {"changes", "resolved"} | {k for k in flat if k.startswith(("changes", "resolved"))}
        params = [Param(k, _text(v)[:MAX_PARAM]) for k, v in flat.items() if k not in mutable]
        tags = [RunTag(k, _text(v)[:MAX_PARAM]) for k, v in flat.items() if k in mutable and not k.startswith("changes")]
        for i in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
            self._call("params", lambda batch=params[i : i + 100]: self.client.log_batch(self.run_id, params=batch))
        self._call("tags", lambda: self.client.log_batch(self.run_id, tags=tags))

    def log_change(self, cfg: Config, epoch: int, changed: str) -> None:
        """A resume's changes: the tags of the keys it changed, and the change itself as a tag."""
        from mlflow.entities import RunTag

        flat = flatten(cfg.to_dict())
        tags = [RunTag(k, _text(flat[k])[:MAX_PARAM]) for k in RESUME_KEYS if k in flat]
        tags.append(RunTag(f"vgglab.change.epoch_{epoch}", changed))
        self._call("tags", lambda: self.client.log_batch(self.run_id, tags=tags))

    def log_epoch(self, row: dict) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        step = int(row["epoch"])
        metrics = [Metric(k, x, now, step) for k, v in row.items() if k != "epoch" and (x := _number(v)) is not None]
        self._call("metrics", lambda: self.client.log_batch(self.run_id, metrics=metrics))

    def log_final(self, result: dict, run_dir: Path) -> None:
        """The selected checkpoint's validation and test metrics (``final_`` prefixed), and the
        run's files: config.yaml, model.safetensors, results.json, metrics.csv, a report if any."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(f"final_{k}", x, now, 0) for k, v in result.items() if k != "timings" and (x := _number(v)) is not None]
        self._call("final metrics", lambda: self.client.log_batch(self.run_id, metrics=metrics))
        for name in ("config.yaml", "model.safetensors", "results.json", "metrics.csv", "report.html"):
            if (run_dir / name).is_file():
                self._call(f"artifact {name}", lambda path=str(run_dir / name): self.client.log_artifact(self.run_id, path))

    def end(self, status: str = "FINISHED", timeout_s: float = WAIT_S) -> None:
        """Mark the MLflow run ended, then wait (at most ``timeout_s``) for everything queued."""
        self._call("end", lambda: self.client.set_terminated(self.run_id, status=status))
        self.wait(timeout_s)


def _warn(msg: str) -> None:
    warnings.warn(msg, stacklevel=3)


def log_artifact_to_run(run_dir: Path, path: Path, log=print, wait_s: float = WAIT_S) -> bool:
    """Add ``path`` (e.g. a report) to the MLflow run of ``run_dir`` when it has one and MLflow is
    installed, waiting at most ``wait_s`` seconds; a failure is one warning. Returns whether it was logged."""
    run_dir = Path(run_dir)
    id_file = run_dir / ID_FILE
    if not id_file.is_file():
        return False
    try:
        from mlflow.tracking import MlflowClient
    except ImportError:
        return False
    try:
        saved = read_id_file(id_file)
    except ConfigError as exc:
        _warn(f"could not add {path.name} to the run's mlflow run: {exc}")
        return False
    if saved is None:
        return False
    if saved.get("run_dir") not in (None, str(run_dir.resolve())) and still_owns(saved):
        log(
            f"note: {run_dir} is a copy of {saved['run_dir']}, whose MLflow run {path.name} is not added to "
            "(resume the copy with log.mlflow on to give it a run of its own)"
        )
        return False
    _quiet_tracking_thread()
    failure: list[BaseException] = []

    def call() -> None:
        try:
            MlflowClient(tracking_uri=saved["tracking_uri"]).log_artifact(saved["run_id"], str(path))
        except BaseException as exc:  # noqa: BLE001
            failure.append(exc)

    if not _Worker().submit(call).wait(wait_s) or failure:
        reason = why(failure[0]) if failure else f"the store did not answer within {wait_s:g} s"
        _warn(f"could not add {path.name} to the run's mlflow run: {reason}")
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

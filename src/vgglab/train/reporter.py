"""What a run tells its user: metrics.csv, TensorBoard, MLflow, the progress bar or lines and the
line per epoch."""

from __future__ import annotations

import contextlib
import csv
import io
import os
import time
import warnings
from pathlib import Path

from ..files import refuse_link, write_error, write_text
from ..progress import Progress, resolve_mode
from ..run.files import METRICS, TENSORBOARD
from ..workers import quiet_shutdown_races
from .config import Config, ConfigError
from .tracking import MLflowRun

# changed: the settings a resume changed, on the first epoch trained with them (e.g. train.epochs=30)
METRIC_COLUMNS = ["epoch", "train_loss", "train_top1", "val_loss", "val_top1", "lr", "seconds", "images_per_s", "changed"]


class MetricsLog:
    """``metrics.csv``: one row per finished epoch; accuracies as fractions."""

    def __init__(self, path: Path):
        self.path = path

    def rows(self) -> list[dict]:
        """The rows of finished epochs; lines that are not one (an edit, a stray paste) are dropped
        with a warning, and the next rewrite of the file leaves them out."""
        if not self.path.exists():
            return []
        refuse_link(self.path)
        with open(self.path, newline="", errors="replace") as f:
            rows = list(csv.DictReader(f))
        good = [r for r in rows if _epoch(r) is not None]
        if len(good) < len(rows):
            warnings.warn(f"{self.path}: {len(rows) - len(good)} line(s) that are not an epoch's row were dropped", stacklevel=2)
        return good

    def truncate(self, last_epoch: int) -> None:
        """Keep rows up to ``last_epoch`` (a resumed run rewrites later ones, never duplicates)."""
        keep = [{k: r.get(k) for k in METRIC_COLUMNS} for r in self.rows() if (_epoch(r) or 0) <= last_epoch]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=METRIC_COLUMNS)
        writer.writeheader()
        writer.writerows(keep)
        write_text(self.path, buf.getvalue())

    def append(self, row: dict) -> None:
        refuse_link(self.path)
        new = not self.path.exists()
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=METRIC_COLUMNS)
        if new:
            writer.writeheader()
        writer.writerow({k: _fmt(row.get(k)) for k in METRIC_COLUMNS})
        try:  # one write of the whole row: a full disk leaves no half line
            with open(self.path, "a", newline="") as f:
                f.write(buf.getvalue())
        except OSError as exc:
            raise write_error(self.path, exc, len(buf.getvalue())) from None


def _epoch(row: dict) -> int | None:
    try:
        epoch = int(row.get("epoch") or "")
    except (TypeError, ValueError):
        return None
    return epoch if epoch >= 1 else None


def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


BAR_READ_EVERY = 10  # steps between the bar's loss/top-1 updates (each reads two device sums)


def _tensorboard(cfg: Config, run_dir: Path, purge_step: int | None):
    if not cfg.log.tensorboard:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter  # optional: the tensorboard extra
    except ImportError:
        raise ConfigError("log.tensorboard: true needs the tensorboard package: pip install 'vgglab[tensorboard]'") from None
    quiet_shutdown_races()  # a failed write in TensorBoard's thread is reported once, by _tensorboard_guard
    # purge_step: a resumed run hides whatever an earlier start logged from that epoch on
    return SummaryWriter(str(run_dir / TENSORBOARD), purge_step=purge_step)


class Reporter:
    """Owns a run's outputs about its progress: metrics.csv, TensorBoard, MLflow, the progress bar
    or lines, and the line per epoch. Only the main process writes or prints (``is_main``); the
    others call the same methods and stay silent. ``log`` prints a line."""

    def __init__(self, cfg: Config, run_dir: Path, is_main: bool = True, log=print):
        self.cfg, self.run_dir = cfg, run_dir
        self.epochs, self.is_main, self.log = cfg.train.epochs, is_main, log
        self.metrics = MetricsLog(run_dir / METRICS)
        self.mode = resolve_mode(cfg.log.progress) if is_main else "none"
        self.writer = None
        self.mlflow: MLflowRun | None = None
        self._progress: Progress | None = None
        self._t0 = 0.0
        self._resumed_after: int | None = None
        self.changed: str | None = None

    @contextlib.contextmanager
    def _tensorboard_guard(self):
        """A TensorBoard write that fails (a full or read-only disk: its writer thread fails and the
        next call re-raises that error) stops TensorBoard logging with one warning; training goes on."""
        try:
            yield
        except ConfigError:
            raise
        except Exception as exc:  # noqa: BLE001  (any failure of the optional writer)
            writer, self.writer = self.writer, None
            where = os.fsdecode(exc.filename) if isinstance(exc, OSError) and exc.filename else str(self.run_dir / TENSORBOARD)
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else " ".join(str(exc).split())[:200]
            warnings.warn(
                f"tensorboard logging stopped: could not write {where}: {why}; training goes on and metrics.csv keeps the record",
                stacklevel=3,
            )
            if writer is not None:
                with contextlib.suppress(Exception):
                    writer.close()

    def resumed(self, epoch: int, changed: str | None = None) -> None:
        """Forget the rows after ``epoch`` (they are trained again); ``changed``, the settings the
        resume changed, goes into the next row's ``changed`` column."""
        self.changed, self._resumed_after = changed, epoch
        if self.is_main:
            self.metrics.truncate(epoch)

    def start_tracking(self) -> None:
        """Open TensorBoard and MLflow (after :meth:`resumed`, when resuming): a resumed run goes
        on in the same MLflow run, and TensorBoard hides what an earlier start logged past the
        checkpoint."""
        if not self.is_main:
            return
        after = self._resumed_after
        with self._tensorboard_guard():
            self.writer = _tensorboard(self.cfg, self.run_dir, None if after is None else after + 1)
        self.mlflow = MLflowRun.open(self.cfg, self.run_dir, self.metrics.rows(), log=self.log)
        if self.mlflow is not None and self.changed and after is not None:
            self.mlflow.log_change(self.cfg, after + 1, self.changed)

    def progress(self, total: int, what: str) -> Progress | None:
        """A progress display for other long parts of the run (validation, the final test)."""
        if self.mode == "none":
            return None
        return Progress(total, what, mode=self.mode, interval=self.cfg.log.progress_s, emit=self.log)

    def start_epoch(self, epoch: int, steps: int, local_batch: int, lr_now):
        """Start the epoch's clock and progress; returns the ``on_step(seen, means)`` callback for
        :func:`train_one_epoch`, or None when nothing is shown. A bar reads the running loss and
        top-1 every :data:`BAR_READ_EVERY` steps; plain lines only when one is printed (every
        ``log.progress_s`` or ``VGGLAB_PROGRESS_S`` seconds); ``lr_now()`` is the current rate."""
        self._t0 = time.perf_counter()
        progress = self.progress(steps * local_batch, f"epoch {epoch}/{self.epochs}")
        if progress is None:
            return None
        self._progress, count = progress, [0]

        def on_step(seen, means):
            count[0] += 1
            show = progress.mode == "line" or count[0] % BAR_READ_EVERY == 0 or count[0] == steps

            def stats():
                loss, top1 = means()
                return f"loss {loss:.3f}, top-1 {100 * top1:.2f}%, lr {lr_now():.3g}"

            progress.advance(seen - progress.done, stats if show else None)

        return on_step

    def end_training(self) -> float:
        """Close the bar; the seconds since :meth:`start_epoch`."""
        if self._progress is not None:
            self._progress.close()
            self._progress = None
        return time.perf_counter() - self._t0

    def end_epoch(self, row: dict) -> None:
        """Record a finished epoch's row (keys of METRIC_COLUMNS) everywhere it goes."""
        changed = self.changed
        if changed:
            row, self.changed = {**row, "changed": changed}, None
        if self.is_main:
            self.metrics.append(row)
        if self.writer is not None:
            with self._tensorboard_guard():
                for k, v in row.items():
                    if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "epoch":
                        self.writer.add_scalar(k, v, row["epoch"])
                if changed:  # text, not a scalar: what a resume changed from this epoch on
                    self.writer.add_text("changed", changed, row["epoch"])
                self.writer.flush()
        if self.mlflow is not None:
            self.mlflow.log_epoch(row)
        if self.mode != "none":
            val = f"  val loss {row['val_loss']:.4f} top-1 {100 * row['val_top1']:.2f}%" if row["val_top1"] is not None else ""
            self.log(
                f"epoch {row['epoch']}/{self.epochs}  train loss {row['train_loss']:.4f} top-1 {100 * row['train_top1']:.2f}%{val}  "
                f"lr {row['lr']:.3g}  {row['images_per_s']:.0f} img/s  {row['seconds']:.1f}s"
            )

    def finish(self, result: dict) -> None:
        """The final metrics and the run's files to MLflow, which marks the run finished."""
        if self.mlflow is not None:
            self.mlflow.log_final(result, self.run_dir)
            self.mlflow.end("FINISHED")
            self.mlflow = None

    def close(self, status: str | None = None) -> None:
        """Close TensorBoard; with ``status`` (FAILED, KILLED), end the MLflow run so."""
        self.end_training()
        if self.writer is not None:
            with self._tensorboard_guard():
                self.writer.close()
            self.writer = None
        if status is not None and self.mlflow is not None:
            self.mlflow.end(status)
            self.mlflow = None

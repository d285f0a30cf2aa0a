"""What a run tells its user: metrics.csv, TensorBoard, the progress bar and the line per epoch."""

from __future__ import annotations

import csv
import io
import sys
import time
import warnings
from pathlib import Path

from ..files import refuse_link, write_error, write_text
from .config import Config, ConfigError

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
        keep = [{k: r.get(k) for k in METRIC_COLUMNS} for r in self.rows() if _epoch(r) <= last_epoch]
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


def progress_mode(setting: str) -> str:
    """``bar`` on an interactive terminal or in a notebook (a widget there), else one ``line`` per
    epoch (CI logs stay readable)."""
    if setting != "auto":
        return setting
    return "bar" if sys.stderr.isatty() or "ipykernel" in sys.modules else "line"


def _tensorboard(cfg: Config, run_dir: Path):
    if not cfg.log.tensorboard:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter  # optional: the tensorboard extra
    except ImportError:
        raise ConfigError("log.tensorboard: true needs the tensorboard package: pip install 'vgglab[tensorboard]'") from None
    return SummaryWriter(str(run_dir / "tensorboard"))


class Reporter:
    """Owns a run's outputs about its progress. Only the main process writes or prints
    (``is_main``); the others call the same methods and stay silent. ``log`` prints a line."""

    def __init__(self, cfg: Config, run_dir: Path, is_main: bool = True, log=print):
        self.epochs, self.is_main, self.log = cfg.train.epochs, is_main, log
        self.metrics = MetricsLog(run_dir / "metrics.csv")
        self.mode = progress_mode(cfg.log.progress) if is_main else "none"
        self.writer = _tensorboard(cfg, run_dir) if is_main else None
        self._bar = None
        self._t0 = 0.0
        self.changed: str | None = None

    def resumed(self, epoch: int, changed: str | None = None) -> None:
        """Forget the rows after ``epoch`` (they are trained again); ``changed``, the settings the
        resume changed, goes into the next row's ``changed`` column."""
        self.changed = changed
        if self.is_main:
            self.metrics.truncate(epoch)

    def start_epoch(self, epoch: int, steps: int, local_batch: int, lr_now):
        """Start the epoch's clock (and bar); returns the ``on_step(loss, top1, seen)`` callback
        for :func:`train_one_epoch`, or None when there is no bar to update. ``lr_now()`` is the
        current learning rate, shown on the bar."""
        self._t0 = time.perf_counter()
        if self.mode != "bar":
            return None
        from tqdm.auto import tqdm  # a widget in Jupyter, text elsewhere; only where a bar is shown

        bar = self._bar = tqdm(total=steps, desc=f"epoch {epoch}/{self.epochs}", leave=False, dynamic_ncols=True)

        def on_step(loss, top1, seen):
            bar.update(min(bar.total, -(-seen // local_batch)) - bar.n)
            bar.set_postfix(loss=f"{loss:.3f}", top1=f"{100 * top1:.2f}%", lr=f"{lr_now():.3g}",
                            img_s=f"{seen / (time.perf_counter() - self._t0):.0f}", refresh=False)
        return on_step

    def end_training(self) -> float:
        """Close the bar; the seconds since :meth:`start_epoch`."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        return time.perf_counter() - self._t0

    def end_epoch(self, row: dict) -> None:
        """Record a finished epoch's row (keys of METRIC_COLUMNS) everywhere it goes."""
        if self.changed:
            row, self.changed = {**row, "changed": self.changed}, None
        if self.is_main:
            self.metrics.append(row)
        if self.writer is not None:
            for k, v in row.items():
                if k != "epoch" and v is not None:
                    self.writer.add_scalar(k, v, row["epoch"])
        if self.mode != "none":
            val = f"  val loss {row['val_loss']:.4f} top-1 {100 * row['val_top1']:.2f}%" if row["val_top1"] is not None else ""
            self.log(f"epoch {row['epoch']}/{self.epochs}  train loss {row['train_loss']:.4f} top-1 {100 * row['train_top1']:.2f}%{val}  "
                     f"lr {row['lr']:.3g}  {row['images_per_s']:.0f} img/s  {row['seconds']:.1f}s")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()

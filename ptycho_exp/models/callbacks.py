"""Training callbacks and file outputs: per-epoch log line, history.csv, loss.png (atomic writes), a kill-safe
training backup."""
from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import shutil
import time
from pathlib import Path

import keras

from ptycho_exp.files import atomic_write_bytes

log = logging.getLogger(__name__)


class LinearWarmup(keras.callbacks.Callback):
    """Raise the learning rate linearly from ``target / steps`` to ``target`` over the first ``steps`` batches.

    Measured reason (N=64, gridsize 2, 1e9 photons, Adam 1e-3): in one run of three the first epoch's
    large steps drove one decoder channel's amplitude sigmoid to ~0 and the others' phases to +-pi;
    the dead channel never recovers and the loss stalls. The step count is the optimizer's, so a
    training resumed from a backup does not warm up again.
    """

    def __init__(self, steps: int, target: float):
        super().__init__()
        self.steps = int(steps)
        self.target = float(target)

    def on_train_begin(self, logs=None):
        self.step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))  # read once, not per batch

    def on_train_batch_begin(self, batch, logs=None):
        if self.step < self.steps:
            self.model.optimizer.learning_rate.assign(self.target * (self.step + 1) / self.steps)
        elif self.step == self.steps:
            self.model.optimizer.learning_rate.assign(self.target)
        self.step += 1


class CosineDecay(keras.callbacks.Callback):
    """Set the learning rate every batch along a half cosine from ``peak`` down to ``floor``.

    Step ``start`` (the end of the warm-up) has ``peak``, step ``total`` (the last planned step) has
    ``floor``; before ``start`` it leaves the rate to the warm-up. The step is the optimizer's, so a
    training resumed from a backup continues the curve where it stopped.
    """

    def __init__(self, start: int, total: int, peak: float, floor: float):
        super().__init__()
        self.start, self.total = int(start), max(int(total), int(start) + 1)
        self.peak, self.floor = float(peak), float(floor)

    def rate(self, step: int) -> float:
        """The learning rate at optimizer step ``step`` (0-based) on or after ``start``."""
        t = min(max(step - self.start, 0) / (self.total - self.start), 1.0)
        return self.floor + 0.5 * (self.peak - self.floor) * (1.0 + math.cos(math.pi * t))

    def on_train_begin(self, logs=None):
        self.step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))

    def on_train_batch_begin(self, batch, logs=None):
        if self.step >= self.start:
            self.model.optimizer.learning_rate.assign(self.rate(self.step))
        self.step += 1


def history_csv_text(history: dict[str, list]) -> str:
    """``history`` (key -> per-epoch values) as CSV text with a leading 1-based ``epoch`` column."""
    keys = list(history)
    n = max((len(v) for v in history.values()), default=0)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["epoch", *keys])
    for i in range(n):
        writer.writerow([i + 1, *(history[k][i] if i < len(history[k]) else "" for k in keys)])
    return buf.getvalue()


def read_history_csv(path: Path, n_epochs: int) -> tuple[dict[str, list], list[float]]:
    """The first ``n_epochs`` rows of a ``history.csv`` written before a restart (training resumed from a
    checkpoint), as (history, epoch_seconds). An epoch the file lacks (the job died between saving the
    checkpoint and writing the row) is NaN; a missing or unreadable file gives empty history."""
    try:
        rows = list(csv.DictReader(io.StringIO(Path(path).read_text())))[:n_epochs]
    except (OSError, csv.Error):
        return {}, []
    if not rows:
        return {}, []
    keys = [k for k in rows[0] if k != "epoch"]
    nan = float("nan")
    history = {k: [float(r[k]) if r.get(k) not in ("", None) else nan for r in rows] + [nan] * (n_epochs - len(rows))
               for k in keys}
    return history, list(history.get("epoch_seconds", []))


def plot_history(history: dict[str, list], path: Path, title: str = "") -> None:
    """Save loss / val_loss (and the learning rate, when logged) per epoch as a PNG (Agg, atomic)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    has_lr = bool(history.get("learning_rate"))
    fig = Figure(figsize=(9 if has_lr else 5.5, 3.6))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2 if has_lr else 1, squeeze=False)[0]
    ax = axes[0]
    values = []
    for key in ("loss", "val_loss"):
        ys = [float(v) for v in history.get(key, [])]
        if ys:
            ax.plot(range(1, len(ys) + 1), ys, marker="o", ms=3, label=key)
            values += ys
    finite = [v for v in values if math.isfinite(v)]
    if finite and min(finite) > 0:
        ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_title(title or "training loss")
    ax.legend()
    if has_lr:
        lr = [float(v) for v in history["learning_rate"]]
        axes[1].plot(range(1, len(lr) + 1), lr, color="tab:green")
        axes[1].set_yscale("log")
        axes[1].set_xlabel("epoch")
        axes[1].set_ylabel("learning rate")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    atomic_write_bytes(path, buf.getvalue())


class HistoryRecorder(keras.callbacks.Callback):
    """Collect every epoch's logs (plus the learning rate) and rewrite ``history.csv`` atomically.

    Parameters
    ----------
    csv_path : Path or None
        Where to write the CSV after every epoch (None: keep in memory only).
    """

    def __init__(self, csv_path: Path | None):
        super().__init__()
        self.csv_path = csv_path
        self.history: dict[str, list] = {}
        self.epoch_seconds: list[float] = []
        self._t0 = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._t0 = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if epoch > 0 and not self.history and self.csv_path is not None:
            self.history, self.epoch_seconds = read_history_csv(self.csv_path, epoch)
        logs = dict(logs or {})
        if "learning_rate" not in logs:
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        self.epoch_seconds.append(time.perf_counter() - self._t0)
        logs["epoch_seconds"] = self.epoch_seconds[-1]
        n_before = len(self.epoch_seconds) - 1
        for key, value in logs.items():
            self.history.setdefault(key, [float("nan")] * n_before).append(float(value))
        if self.csv_path is not None:
            atomic_write_bytes(self.csv_path, history_csv_text(self.history).encode())


class EpochLogger(keras.callbacks.Callback):
    """One ``logging`` line per epoch (used instead of the progress bar when output is not a terminal)."""

    def __init__(self, epochs: int, name: str = "fit"):
        super().__init__()
        self.epochs = epochs
        self.name = name
        self._t0 = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._t0 = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        parts = " ".join(f"{k}={v:.4g}" for k, v in logs.items() if isinstance(v, (int, float)))
        log.info("%s epoch %d/%d %s (%.1f s)", self.name, epoch + 1, self.epochs, parts,
                 time.perf_counter() - self._t0)


class AtomicBackupAndRestore(keras.callbacks.BackupAndRestore):
    """``BackupAndRestore`` whose checkpoint survives a kill at any moment.

    Keras writes ``latest.weights.h5`` in place, so a job killed while it is being written leaves a
    truncated HDF5 file and the rerun dies opening it (seen in the chaos test). Here every epoch's
    weights go to a new file named by its epoch, flushed to disk, and only then does an atomic
    ``training_metadata.json`` point at it, so the metadata always names a complete file of the epoch
    it records. A backup that still cannot be read (another version's, a broken disk) is logged,
    removed, and training starts from scratch instead of failing the job.
    """

    def _save_model(self):
        folder = Path(self.backup_dir)
        folder.mkdir(parents=True, exist_ok=True)
        name = f"epoch-{self._current_epoch:05d}-batch-{self._last_batch_seen:06d}.weights.h5"
        self.model.save_weights(str(folder / name), overwrite=True)
        with open(folder / name, "rb+") as fh:
            os.fsync(fh.fileno())
        meta = {"epoch": self._current_epoch, "batch": self._last_batch_seen, "weights": name}
        atomic_write_bytes(self._training_metadata_path, json.dumps(meta).encode())
        for old in folder.glob("*.weights.h5"):
            if old.name != name:
                old.unlink(missing_ok=True)

    def on_train_begin(self, logs=None):
        meta_path = Path(self._training_metadata_path)
        if not meta_path.exists():
            return
        optimizer = self.model.optimizer
        if optimizer is not None and not optimizer.built:
            optimizer.build(self.model.trainable_variables)
        state = [*self.model.variables, *(optimizer.variables if optimizer else ())]
        initial = [keras.ops.convert_to_numpy(v) for v in state]  # put back if a load fails half-way
        try:
            meta = json.loads(meta_path.read_text())
            weights = Path(self.backup_dir) / str(meta["weights"])
            if not weights.is_file():
                raise FileNotFoundError(weights)
            self.model.load_weights(str(weights))
            self.model._initial_epoch = int(meta["epoch"])
        except (OSError, ValueError, KeyError, TypeError) as err:
            for variable, value in zip(state, initial):
                variable.assign(value)
            log.warning("training backup %s is unreadable (%s: %s); removing it and training from epoch 1",
                        self.backup_dir, type(err).__name__, err)
            shutil.rmtree(self.backup_dir, ignore_errors=True)
            return
        log.info("training resumes from the backup of epoch %d in %s", self.model._initial_epoch, self.backup_dir)

    def on_train_end(self, logs=None):
        if self.delete_checkpoint:
            Path(self._training_metadata_path).unlink(missing_ok=True)  # first: a half-deleted backup is no backup
            shutil.rmtree(self.backup_dir, ignore_errors=True)

"""A stage's logs: ``log.csv`` (one row per step), ``validation.csv``, TensorBoard scalars when the
``tensorboard`` package is installed, a console progress bar with ETA, and the GUI's progress callback.

(Named ``run_logs``, not ``logging``, so that it never shadows the standard library's module.)
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from tqdm import tqdm

from ...core.io.atomic import atomic_write_text

__all__ = ["StepLog", "append_csv", "truncate_csv", "all_reduce_mean"]


class StepLog:
    """Where each step's row goes: CSV and TensorBoard on rank 0, the progress bar unless quiet, and
    ``on_step(done, total, loss)``. A context manager, so the bar and the TensorBoard file close."""

    def __init__(self, folder: Path, name: str, start: int, total: int, rank: int, quiet: bool,
                 on_step: Callable[[int, int, float], None] | None = None) -> None:
        self.csv_path = folder / "log.csv"
        self.total, self.rank, self.on_step = total, rank, on_step
        self.tensorboard = _TensorBoard(folder / "tensorboard") if rank == 0 else None
        self.bar = None if quiet else tqdm(total=total, initial=start, desc=name, unit="it", dynamic_ncols=True,
                                           disable=None)

    def step(self, row: dict[str, Any]) -> None:
        """Log one finished step (``row`` holds ``step``, ``lr``, ``loss`` and the method's terms)."""
        if self.rank == 0:
            append_csv(self.csv_path, row)
            if self.tensorboard:
                self.tensorboard.add(row, row["step"])
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{row['loss']:.4f}", refresh=False)
            self.bar.update(1)
        if self.on_step is not None and self.rank == 0:
            self.on_step(row["step"] + 1, self.total, row["loss"])

    def __enter__(self) -> StepLog:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.tensorboard:
            self.tensorboard.close()


class _TensorBoard:
    """TensorBoard scalars when the ``tensorboard`` package is installed; otherwise nothing."""

    def __init__(self, folder: Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter  # noqa: PLC0415 (optional logger)

            self.writer = SummaryWriter(str(folder))
        except Exception:  # ImportError (tensorboard not installed) or a broken install
            self.writer = None

    def add(self, row: dict[str, float], step: int) -> None:
        if self.writer:
            for key, value in row.items():
                if key != "step":
                    self.writer.add_scalar(key, value, step)

    def close(self) -> None:
        if self.writer:
            self.writer.close()


def all_reduce_mean(logs: dict[str, float], device: torch.device) -> dict[str, float]:
    """The mean of each logged value over the processes (the global batch's, as one process would log)."""
    keys = sorted(logs)
    values = torch.tensor([logs[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(values)
    values /= dist.get_world_size()
    return dict(zip(keys, values.tolist()))


def truncate_csv(path: Path, step: int) -> None:
    """Drop log rows of steps ≥ ``step`` (a run killed after its last checkpoint repeats them)."""
    if not path.exists():
        return
    with open(path, encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    if not rows:
        return
    kept = [rows[0]] + [r for r in rows[1:] if r and int(float(r[0])) < step]
    if len(kept) == len(rows):
        return
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows(kept)
    atomic_write_text(path, text.getvalue())


def append_csv(path: Path, row: dict[str, Any]) -> None:
    """Append one row; a key the file's header lacks (a term that starts later in a stage, such as a
    ramped-up consistency weight) widens the header, earlier rows get empty cells, so every line keeps
    one value per named column."""
    fields = list(row)
    if path.exists():
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            header = list(reader.fieldnames or [])
            added = [k for k in row if k not in header]
            earlier = list(reader) if added else []
        fields = header + added
        if added and header:
            text = io.StringIO()
            rewriter = csv.DictWriter(text, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
            rewriter.writeheader()
            rewriter.writerows(earlier)
            atomic_write_text(path, text.getvalue())
    new = not path.exists() or path.stat().st_size == 0
    with open(path, "a", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
        if new:
            writer.writeheader()
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})

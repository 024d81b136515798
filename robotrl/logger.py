"""Metrics to CSV files and TensorBoard, keyed ``train/...`` and ``eval/...`` as the RL community reads them."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

from torch.utils.tensorboard import SummaryWriter

from robotrl.atomic import atomic_write


class CSVWriter:
    """Append rows to one CSV file; the header is fixed by the first row (new keys extend it by rewriting)."""

    def __init__(self, path: Path):
        self.path = path
        self.fields: list[str] = []
        if path.exists():
            with open(path, newline="") as f:
                self.fields = next(csv.reader(f), [])

    def truncate_after(self, frame: int, key: str = "frame") -> None:
        """Drop rows whose ``key`` column is past ``frame`` (a resumed run continues from its last checkpoint)."""
        rows = self.read()
        kept = [r for r in rows if float(r[key]) <= frame]
        if len(kept) != len(rows):
            self._rewrite(kept, self.fields)

    def read(self) -> list[dict[str, str]]:
        if not self.path.exists():
            return []
        with open(self.path, newline="") as f:
            return list(csv.DictReader(f))

    def _rewrite(self, rows: list[dict[str, Any]], fields: list[str]) -> None:
        with atomic_write(self.path, "w") as f:
            writer = csv.DictWriter(f, fieldnames=fields, lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
        self.fields = fields

    def write(self, row: dict[str, Any]) -> None:
        new = [k for k in row if k not in self.fields]
        if new:
            self._rewrite(self.read(), self.fields + new)
        with open(self.path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.fields, lineterminator="\n")
            if f.tell() == 0:
                writer.writeheader()
            writer.writerow(row)


class Logger:
    """Writes ``<run_dir>/train.csv``, ``eval.csv`` and TensorBoard events under ``<run_dir>/tb``."""

    def __init__(self, run_dir: Path, use_tb: bool = True, resume_frame: int | None = None):
        self.csv = {"train": CSVWriter(run_dir / "train.csv"), "eval": CSVWriter(run_dir / "eval.csv")}
        if resume_frame is not None:
            for writer in self.csv.values():
                writer.truncate_after(resume_frame)
        # purge_step drops TensorBoard events logged after the checkpoint we resume from.
        self.tb = SummaryWriter(str(run_dir / "tb"), purge_step=resume_frame) if use_tb else None

    def log(self, kind: str, frame: int, metrics: dict[str, Any]) -> None:
        """Log one row of ``kind`` ("train" or "eval") at env ``frame``."""
        self.csv[kind].write({"frame": frame, **metrics})
        if self.tb is not None:
            for key, value in metrics.items():
                if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
                    self.tb.add_scalar(f"{kind}/{key}", value, frame)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()

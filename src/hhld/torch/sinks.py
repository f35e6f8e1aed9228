"""Where the monitor's rows go: CSV / JSONL files, TensorBoard (the Lightning callback, formerly here, is
:func:`hhld.torch.callbacks.lightning_callback`; ``sinks.lightning_callback`` is the same function).

A sink is any object with ``write(row: dict)`` and ``close()``; the monitor calls ``write``
once per logging interval (after its single host synchronisation). Optional packages
(``tensorboard``, ``lightning``) are imported only when the sink is created.
"""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

from .callbacks import lightning_callback  # noqa: F401 - kept here for existing code (moved to callbacks)

__all__ = ["JSONLSink", "CSVSink", "TensorBoardSink", "lightning_callback"]


def _clean(v):
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)  # JSON has no inf/nan: written as "inf"/"nan" strings, never silently dropped
    return v


class JSONLSink:
    """One JSON object per row."""

    def __init__(self, path):
        self.path = Path(path)
        self._f = open(self.path, "w", encoding="utf-8")  # noqa: SIM115

    def write(self, row: dict) -> None:
        self._f.write(json.dumps({k: _clean(v) for k, v in row.items()}) + "\n")
        self._f.flush()

    def close(self) -> None:
        self._f.close()


class CSVSink:
    """CSV with the union of the columns seen; the file is rewritten when a new column appears
    (rows of the monitor gain columns when tier 1 / tier 2 first report)."""

    def __init__(self, path):
        self.path = Path(path)
        self._rows: list[dict] = []
        self._cols: list[str] = []

    def write(self, row: dict) -> None:
        self._rows.append(row)
        new = [k for k in row if k not in self._cols]
        if new or len(self._rows) == 1:
            self._cols.extend(new)
            with open(self.path, "w", newline="", encoding="utf-8") as f:
                w = csv.DictWriter(f, fieldnames=self._cols)
                w.writeheader()
                w.writerows(self._rows)
        else:
            with open(self.path, "a", newline="", encoding="utf-8") as f:
                csv.DictWriter(f, fieldnames=self._cols).writerow(row)

    def close(self) -> None:
        pass


class TensorBoardSink:
    """Numeric values as scalars under ``prefix/`` (``writer`` a ``SummaryWriter`` or a log dir)."""

    def __init__(self, writer_or_logdir, prefix: str = "hhld"):
        if isinstance(writer_or_logdir, (str, Path)):
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as exc:  # pragma: no cover - depends on the extra
                raise ImportError("TensorBoardSink needs tensorboard: pip install 'hhld[tensorboard]'") from exc
            self.writer = SummaryWriter(str(writer_or_logdir))
            self._own = True
        else:
            self.writer = writer_or_logdir
            self._own = False
        self.prefix = prefix

    def write(self, row: dict) -> None:
        step = int(row.get("step", 0))
        for k, v in row.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)) or k == "step":
                continue
            self.writer.add_scalar(f"{self.prefix}/{k}", v, step)
        if row.get("regime") is not None:
            self.writer.add_text(f"{self.prefix}/regime", str(row["regime"]), step)

    def close(self) -> None:
        if self._own:
            self.writer.close()

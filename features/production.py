"""Production data: the inference log, as monitoring reads it.

The service appends every scored record to ``SALESML_HOME/logs/<task>/date=YYYY-MM-DD/part-*.parquet`` (see
``serving.inference_log``), one row per record with ``time``, ``task``, ``kind``, ``principal``, ``model``,
``version``, ``inputs`` (the record's features as JSON), ``prediction`` (the kind's figure: a risk model's
probability) and ``outputs`` (the whole result as JSON). Logs written before the kind-neutral layout hold
``probability``, ``risk_band``, ``reasons`` and ``actions`` columns instead; both read back alike. This module owns
that layout so that the writer (serving) and the readers (monitoring, notebooks) agree on it.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from datetime import date, datetime, timedelta
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

PARTITION = "date="

#: Columns of an inference log file, the same for every kind: the kind's figure in ``prediction`` (for risk, the
#: probability; the registry names the field) and the whole result as JSON in ``outputs``.
LOG_SCHEMA = pa.schema([("time", pa.timestamp("ns")), ("task", pa.string()), ("kind", pa.string()),
                        ("principal", pa.string()), ("model", pa.string()), ("version", pa.string()),
                        ("inputs", pa.string()), ("prediction", pa.float64()), ("outputs", pa.string())])
_PARTS = itertools.count(1)


def inference_log_file(folder: Path, task: str, day: str, name: str) -> Path:
    """Where one written part of a task's log goes (``day`` is YYYY-MM-DD)."""
    return Path(folder) / task / f"{PARTITION}{day}" / name


def write_log_part(folder: Path, task: str, day: str, columns: dict[str, list]) -> Path:
    """Write one part of a task's log for one day (``columns`` as ``LOG_SCHEMA`` names them), atomically: readers
    never see a half-written file."""
    name = f"part-{os.getpid()}-{int(time.time() * 1000)}-{next(_PARTS)}.parquet"
    path = inference_log_file(folder, task, day, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    pq.write_table(pa.Table.from_pydict(columns, schema=LOG_SCHEMA), tmp)
    tmp.replace(path)
    return path


def logged_days(folder: Path, task: str) -> list[date]:
    """The days for which a task has log files, oldest first."""
    root = Path(folder) / task
    if not root.is_dir():
        return []
    days = []
    for part in root.iterdir():
        if part.is_dir() and part.name.startswith(PARTITION) and any(part.glob("*.parquet")):
            try:
                days.append(date.fromisoformat(part.name.removeprefix(PARTITION)))
            except ValueError:
                continue
    return sorted(days)


def read_inference_log(folder: Path, task: str, since: datetime | date | None = None) -> pd.DataFrame:
    """The logged records of a task (optionally from a time on), with their inputs expanded into columns.

    Only the day partitions from ``since`` on are read.
    """
    cut = pd.Timestamp(since).tz_localize(None) if since is not None else None
    files = [f for day in logged_days(folder, task) if cut is None or day >= cut.date()
             for f in sorted((Path(folder) / task / f"{PARTITION}{day.isoformat()}").glob("*.parquet"))]
    if not files:
        return pd.DataFrame()
    frame = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    if cut is not None:
        frame = frame[frame["time"] >= cut]
    if "outputs" in frame.columns:  # the result's fields as columns, as the older layout had them
        logged = frame["outputs"].notna()
        outputs = pd.DataFrame([json.loads(x) for x in frame.loc[logged, "outputs"]], index=frame.index[logged])
        outputs = outputs.drop(columns=[c for c in ("model", "version") if c in outputs.columns])
        for column in outputs.columns:
            frame[column] = outputs[column] if column not in frame.columns else frame[column].where(
                ~logged, outputs[column])
        frame = frame.drop(columns="outputs")
    inputs = pd.DataFrame([json.loads(x) for x in frame["inputs"]], index=frame.index)
    return frame.drop(columns="inputs").join(inputs, rsuffix="_input")


def recent_production_rows(folder: Path, task: str, days: int = 30) -> pd.DataFrame:
    """The records a task's champion scored in the last ``days`` days of its log (counted back from the newest
    logged day, so that a quiet week does not empty the window)."""
    logged = logged_days(folder, task)
    if not logged:
        return pd.DataFrame()
    return read_inference_log(folder, task, since=logged[-1] - timedelta(days=days - 1))

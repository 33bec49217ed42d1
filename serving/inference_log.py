"""The inference log: every scored record, appended to Parquet files in the background.

Requests hand their scored records to an in-memory queue, bounded in records, and never wait on disk or on
serialisation; a writer thread turns them into rows and flushes them every few seconds into ``SALESML_HOME/logs/<task>/date=YYYY-MM-DD/part-<pid>-<n>.parquet``. When the queue is full a
request's records are dropped and counted (memory stays bounded), and the log is flushed on shutdown. Drift monitoring reads
these files as production data (``features.production`` owns the layout and the readers).
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from features.production import inference_log_file

log = logging.getLogger(__name__)


class InferenceLogger:
    """Asynchronous Parquet writer of scored records.

    Args:
        folder: the logs folder.
        flush_seconds: seconds between writes.
        max_records: entries held in memory at most.
    """

    def __init__(self, folder: Path, flush_seconds: float = 2.0, max_records: int = 200_000):
        self.folder = Path(folder)
        self.flush_seconds = flush_seconds
        self.max_records = max_records
        self.queue: queue.SimpleQueue[tuple] = queue.SimpleQueue()
        self.pending = 0
        self.dropped = 0
        self.written = 0
        self._counter = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._pending_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="salesml-inference-log", daemon=True)
        self._thread.start()

    def log(self, task: str, principal: str, model: str, version: str, inputs: list[dict], results: list[dict],
            id_field: str | None = None) -> None:
        """Queue a request's scored records (never blocks, never serialises: the writer thread does that).

        When the records held in memory would exceed ``max_records``, the request's records are dropped and
        counted instead.
        """
        with self._pending_lock:
            if self.pending + len(results) > self.max_records:
                self.dropped += len(results)
                return
            self.pending += len(results)
        self.queue.put((datetime.now(UTC).replace(tzinfo=None), task, principal, model, version, inputs, results,
                        id_field))

    def _drain(self) -> list[dict]:
        entries = []
        while True:
            try:
                now, task, principal, model, version, inputs, results, id_field = self.queue.get_nowait()
            except queue.Empty:
                break
            for record, result in zip(inputs, results, strict=True):
                if id_field is not None:
                    record = {**record, id_field: result.get(id_field)}
                entries.append({"time": now, "task": task, "principal": principal, "model": model,
                                "version": version, "inputs": json.dumps(record, default=str),
                                "probability": result["probability"], "risk_band": result["risk_band"],
                                "reasons": json.dumps(result["reasons"]), "actions": json.dumps(result["actions"])})
            with self._pending_lock:
                self.pending -= len(results)
        return entries

    def flush(self) -> int:
        """Write what is queued now; returns the entries written."""
        with self._lock:
            items = self._drain()
            if not items:
                return 0
            frame = pd.DataFrame(items)
            for (task, day), part in frame.groupby([frame["task"], frame["time"].dt.strftime("%Y-%m-%d")]):
                self._counter += 1
                path = inference_log_file(self.folder, str(task), day,
                                          f"part-{os.getpid()}-{int(time.time() * 1000)}-{self._counter}.parquet")
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(".tmp")
                part.to_parquet(tmp, index=False)
                tmp.replace(path)
            self.written += len(items)
            return len(items)

    def _run(self) -> None:
        while not self._stop.wait(self.flush_seconds):
            try:
                self.flush()
            except Exception:  # noqa: BLE001 - logging must never take the service down
                log.exception("inference log flush failed")

    def close(self) -> None:
        """Stop the writer and flush what is left."""
        self._stop.set()
        self._thread.join(timeout=10)
        self.flush()
        if self.dropped:
            log.warning("inference log dropped %d entries (queue full)", self.dropped)

"""The inference log: every scored record, appended to Parquet files in the background.

Requests hand their scored records to an in-memory queue, bounded in records, and never wait on disk or on
serialisation; a writer thread turns them into rows and flushes them every few seconds into ``SALESML_HOME/logs/<task>/date=YYYY-MM-DD/part-<pid>-<n>.parquet``. When the queue is full a
request's records are dropped and counted (memory stays bounded), and the log is flushed on shutdown. Drift monitoring reads
these files as production data (``features.production`` owns the layout and the readers).
"""

from __future__ import annotations

import logging
import queue
import threading
from datetime import UTC, datetime
from pathlib import Path

import orjson

from features.production import LOG_SCHEMA, write_log_part

log = logging.getLogger(__name__)


def _json(value: object) -> str:
    """JSON text of a logged value (orjson: the writer shares the GIL with the requests it must not slow down)."""
    return orjson.dumps(value, default=str, option=orjson.OPT_SERIALIZE_NUMPY).decode()


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
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._pending_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="salesml-inference-log", daemon=True)
        self._thread.start()

    def log(self, task: str, principal: str, model: str, version: str, inputs: list[dict], results: list[dict],
            id_field: str | None = None, kind: str = "risk", prediction: str = "probability") -> None:
        """Queue a request's scored records (never blocks, never serialises: the writer thread does that).

        ``kind`` and ``prediction`` come from the task registry: the task's kind, and the result field that is its
        model's figure. When the records held in memory would exceed ``max_records``, the request's records are
        dropped and counted instead.
        """
        with self._pending_lock:
            if self.pending + len(results) > self.max_records:
                self.dropped += len(results)
                return
            self.pending += len(results)
            busy = self.pending >= self.max_records // 4
        self.queue.put((datetime.now(UTC).replace(tzinfo=None), task, principal, model, version, inputs, results,
                        id_field, kind, prediction))
        if busy:  # write now rather than at the next tick, before the queue fills and records are dropped
            self._wake.set()

    def _drain(self) -> dict[tuple[str, str], dict[str, list]]:
        """Take everything queued, as columns per (task, day)."""
        groups: dict[tuple[str, str], dict[str, list]] = {}
        # Results answered from precomputed scores share their inputs and result objects between requests: each
        # is serialised once per drain (the cache holds the object, so its id is not reused).
        texts: dict[int, tuple[object, str]] = {}

        def text(value: object) -> str:
            hit = texts.get(id(value))
            if hit is None:
                hit = texts[id(value)] = (value, _json(value))
            return hit[1]

        while True:
            try:
                now, task, principal, model, version, inputs, results, id_field, kind, field = self.queue.get_nowait()
            except queue.Empty:
                break
            key = (task, now.strftime("%Y-%m-%d"))
            columns = groups.get(key)
            if columns is None:
                columns = groups[key] = {name: [] for name in LOG_SCHEMA.names}
            n = len(results)
            for name, value in (("time", now), ("task", task), ("kind", kind), ("principal", principal),
                                ("model", model), ("version", version)):
                columns[name] += [value] * n
            logged, predicted, outputs = columns["inputs"], columns["prediction"], columns["outputs"]
            for record, result in zip(inputs, results, strict=True):
                if id_field is None or record.get(id_field) == result.get(id_field):
                    logged.append(text(record))
                else:
                    logged.append(_json({**record, id_field: result.get(id_field)}))
                value = result.get(field)
                predicted.append(float(value) if isinstance(value, (int, float)) else None)
                outputs.append(text(result))
            with self._pending_lock:
                self.pending -= n
        return groups

    def flush(self) -> int:
        """Write what is queued now; returns the entries written."""
        with self._lock:
            written = 0
            for (task, day), columns in self._drain().items():
                write_log_part(self.folder, str(task), day, columns)
                written += len(columns["time"])
            self.written += written
            return written

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_seconds)
            self._wake.clear()
            try:
                self.flush()
            except Exception:  # noqa: BLE001 - logging must never take the service down
                log.exception("inference log flush failed")

    def close(self) -> None:
        """Stop the writer and flush what is left."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=10)
        self.flush()
        if self.dropped:
            log.warning("inference log dropped %d entries (queue full)", self.dropped)

"""The inference log's layout: written by the service's logger, read back by monitoring."""

from __future__ import annotations

import threading
from datetime import datetime

import pandas as pd

from features.production import logged_days, read_inference_log, recent_production_rows
from serving.inference_log import InferenceLogger

RESULT = {"probability": 0.25, "risk_band": "low", "reasons": [{"feature": "x"}], "actions": []}


def _log_on(folder, day: str, n: int, start: int = 0) -> None:
    logger = InferenceLogger(folder, flush_seconds=60)
    inputs = [{"opportunity_id": f"O{start + i}", "meetings_30d": float(i)} for i in range(n)]
    logger.log("opportunity_loss", "crm", "risk.opportunity_loss", "3", inputs, [RESULT] * n)
    when = datetime.fromisoformat(f"{day}T12:00:00")
    queued = logger.queue.get()
    logger.queue.put((when, *queued[1:]))
    logger.close()


def test_every_logged_record_reads_back_with_its_inputs_outputs_version_and_principal(tmp_path):
    _log_on(tmp_path, "2026-10-01", 5)
    _log_on(tmp_path, "2026-11-20", 3, start=100)
    frame = read_inference_log(tmp_path, "opportunity_loss")
    assert len(frame) == 8 and set(frame["principal"]) == {"crm"} and set(frame["version"]) == {"3"}
    assert frame["probability"].eq(0.25).all() and sorted(frame["meetings_30d"])[:2] == [0.0, 0.0]
    # The layout is the same for every kind: the kind, its figure, and the whole result.
    assert set(frame["kind"]) == {"risk"} and frame["prediction"].eq(0.25).all()
    assert frame["reasons"].map(lambda r: r == [{"feature": "x"}]).all() and frame["risk_band"].eq("low").all()
    assert [d.isoformat() for d in logged_days(tmp_path, "opportunity_loss")] == ["2026-10-01", "2026-11-20"]
    recent = recent_production_rows(tmp_path, "opportunity_loss", days=30)
    assert sorted(recent["opportunity_id"]) == ["O100", "O101", "O102"]
    assert read_inference_log(tmp_path, "customer_churn").empty


def test_the_queue_is_bounded_and_never_blocks_a_request(tmp_path):
    logger = InferenceLogger(tmp_path, flush_seconds=3600, max_records=10)
    done = threading.Event()

    def flood() -> None:
        for batch in range(5):
            inputs = [{"meetings_30d": float(i)} for i in range(4)]
            results = [{**RESULT, "opportunity_id": f"O{batch}-{i}"} for i in range(4)]
            logger.log("opportunity_loss", "crm", "m", "1", inputs, results, "opportunity_id")
        done.set()

    # Hold the writer's lock, as a slow disk would: the writer cannot drain (it wakes early once a quarter of the
    # queue is used, which otherwise races with the flood), and requests must still never wait for it.
    with logger._lock:
        threading.Thread(target=flood).start()
        assert done.wait(5)
        assert logger.pending == 8 and logger.dropped == 12
    logger.close()
    logged = read_inference_log(tmp_path, "opportunity_loss")
    assert logger.written == 8 and logger.pending == 0 and len(logged) == 8
    assert sorted(logged["opportunity_id"])[:2] == ["O0-0", "O0-1"]
    assert pd.api.types.is_datetime64_any_dtype(read_inference_log(tmp_path, "opportunity_loss")["time"])


def test_a_log_written_in_the_older_risk_layout_reads_back_beside_the_new_one(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from features.production import inference_log_file

    old = inference_log_file(tmp_path, "opportunity_loss", "2026-09-30", "part-old.parquet")
    old.parent.mkdir(parents=True)
    pq.write_table(pa.table({"time": pa.array([datetime(2026, 9, 30, 9)], pa.timestamp("ns")),
                             "task": ["opportunity_loss"], "principal": ["crm"], "model": ["churn.opportunity_loss"],
                             "version": ["1"], "inputs": ['{"opportunity_id": "O9", "meetings_30d": 2.0}'],
                             "probability": [0.7], "risk_band": ["high"], "reasons": ["[]"], "actions": ["[]"]}), old)
    _log_on(tmp_path, "2026-10-01", 2)
    frame = read_inference_log(tmp_path, "opportunity_loss").sort_values("time")
    assert frame["probability"].tolist() == [0.7, 0.25, 0.25]
    assert frame["risk_band"].tolist() == ["high", "low", "low"] and frame["meetings_30d"].tolist() == [2.0, 0.0, 1.0]

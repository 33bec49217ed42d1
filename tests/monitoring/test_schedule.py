"""`salesml schedule`'s jobs in their SQLite store: a restart keeps their next run times, a run missed while the
process was down runs once, and a run a dead process left under way runs again once."""

from __future__ import annotations

import threading
import time
from datetime import UTC, date, datetime, timedelta

import pytest

from monitoring.schedule import (
    ScheduleConfig,
    ScheduleError,
    build_scheduler,
    previous_month_end,
    read_runs,
    run_schedule,
    unfinished_runs,
)
from salesml.settings import get_settings


def _restart(settings, config=ScheduleConfig()) -> dict:
    """The jobs' next runs as a new process finds them (jobs not stored yet are stored when it starts)."""
    built = build_scheduler(settings, config)
    built.scheduler.start(paused=True)  # stores the jobs it added
    built.scheduler.shutdown(wait=False)
    return built.next_runs


def _run_until(settings, done, config=ScheduleConfig(), seconds: float = 60) -> None:
    stop = threading.Event()
    thread = threading.Thread(target=run_schedule, args=(settings, config, stop))
    thread.start()
    deadline = time.time() + seconds
    while time.time() < deadline and not done():
        time.sleep(0.2)
    stop.set()
    thread.join(timeout=60)
    assert done(), read_runs(settings)


def test_a_restart_keeps_the_jobs_and_their_next_runs_and_a_new_cron_reschedules(tmp_path):
    settings = get_settings(home=tmp_path / "home")
    first = _restart(settings)
    assert set(first) == {"retrain", "monitor"}
    assert datetime.fromisoformat(first["retrain"]).day == 1 and datetime.fromisoformat(first["monitor"]).hour == 6
    assert _restart(settings) == first  # neither duplicated nor recomputed
    moved = _restart(settings, ScheduleConfig(monitor_cron="30 7 * * *"))
    assert moved["retrain"] == first["retrain"] and datetime.fromisoformat(moved["monitor"]).minute == 30
    with pytest.raises(ScheduleError, match="crontab line"):
        _restart(settings, ScheduleConfig(retrain_cron="every month"))
    assert previous_month_end(date(2025, 3, 1)) == date(2025, 2, 28)


def test_a_run_missed_while_down_runs_once_and_an_interrupted_run_runs_again_once(tmp_path):
    settings = get_settings(home=tmp_path / "home")
    _restart(settings)
    # The process was down when retraining was due an hour ago (within its grace time).
    store = build_scheduler(settings, ScheduleConfig()).store
    job = store.lookup_job("retrain")
    job._modify(next_run_time=datetime.now(UTC) - timedelta(hours=1))
    store.update_job(job)

    def retrains() -> list[dict]:
        return [r for r in read_runs(settings) if r["job"] == "retrain" and r["status"] != "started"]

    _run_until(settings, lambda: len(retrains()) == 1)
    (run,) = retrains()
    # An empty home has no champion: the run is recorded as failed with the reason, and the schedule goes on.
    assert run["status"] == "failed" and "no task has a champion" in run["message"]
    assert run["as_of"] == f"{previous_month_end(date.today()):%Y-%m-%d}"
    assert datetime.fromisoformat(_restart(settings)["retrain"]) > datetime.now(UTC) + timedelta(days=1)
    assert unfinished_runs(settings) == []

    # A monitoring run under way when the process was killed: started, never finished.
    from monitoring.schedule import _append_run

    _append_run(settings, {"run": "monitor:2025-01-31:killed", "job": "monitor", "as_of": "2025-01-31",
                           "status": "started"})
    assert [u["run"] for u in unfinished_runs(settings)] == ["monitor:2025-01-31:killed"]
    _run_until(settings, lambda: not unfinished_runs(settings))
    again = [r for r in read_runs(settings) if r["run"] == "monitor:2025-01-31:killed"]
    # The killed run's line, then the rerun's: started again, and this time ended.
    assert [r["status"] for r in again] == ["started", "started", "failed"] and "no task has a champion" in again[-1]["message"]
    _run_until(settings, lambda: True, seconds=1)  # a third start: nothing left to run again
    assert len([r for r in read_runs(settings) if r["run"] == "monitor:2025-01-31:killed"]) == 3
    assert len(retrains()) == 1

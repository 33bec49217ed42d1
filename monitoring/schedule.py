"""The loop on a clock: ``salesml schedule`` retrains monthly and monitors daily in one process, with APScheduler.

Jobs live in a SQLite job store (``SALESML_HOME/loop/schedule.sqlite``), so a restart keeps each job's next run
time instead of recomputing it, and a run missed while the process was down runs once when it comes back (within
the job's grace time; several missed runs coalesce into one). A run that was under way when the process died is
found in the run log (``SALESML_HOME/loop/schedule.jsonl``: a ``started`` line without its ``finished``) and run
again once at start: retraining resumes where it stopped (``monitoring.loop`` is crash-safe and idempotent per
month), so a restart neither loses nor repeats a run. Both jobs share one worker thread: they never overlap.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

from salesml.settings import Settings, get_settings

log = logging.getLogger(__name__)

#: Each job: the function APScheduler stores by reference, and how late a missed run may still run.
JOBS = {"retrain": ("monitoring.schedule:scheduled_retrain", timedelta(days=7)),
        "monitor": ("monitoring.schedule:scheduled_monitor", timedelta(hours=20))}


class ScheduleError(ValueError):
    """A schedule that cannot be set: a malformed cron expression or an unknown time zone."""


@dataclass(frozen=True)
class ScheduleConfig:
    """When the jobs run: crontab expressions (minute hour day month weekday) in ``timezone``."""

    retrain_cron: str = "0 2 1 * *"
    monitor_cron: str = "0 6 * * *"
    timezone: str = "UTC"

    def triggers(self) -> dict:
        """Each job's APScheduler trigger.

        Raises:
            ScheduleError: naming the expression or zone at fault.
        """
        from apscheduler.triggers.cron import CronTrigger

        out = {}
        for job, text in (("retrain", self.retrain_cron), ("monitor", self.monitor_cron)):
            try:
                out[job] = CronTrigger.from_crontab(text, timezone=self.timezone)
            except (ValueError, LookupError) as exc:
                raise ScheduleError(f"--{job}-cron {text!r} / --timezone {self.timezone!r}: {exc} (a crontab "
                                    "line: minute hour day month weekday, e.g. '0 2 1 * *')") from None
        return out


def schedule_folder(settings: Settings) -> Path:
    """Where the job store and the run log are."""
    return settings.home / "loop"


def job_store_url(settings: Settings) -> str:
    """The SQLite job store."""
    return f"sqlite:///{schedule_folder(settings) / 'schedule.sqlite'}"


def read_runs(settings: Settings) -> list[dict]:
    """Every line of the run log, oldest first."""
    path = schedule_folder(settings) / "schedule.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _append_run(settings: Settings, entry: dict) -> None:
    path = schedule_folder(settings) / "schedule.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps({"time": datetime.now().astimezone().isoformat(timespec="seconds"), **entry}) + "\n")
        handle.flush()


def unfinished_runs(settings: Settings) -> list[dict]:
    """Runs that started and never finished (the process died during them), oldest first."""
    open_runs: dict[str, dict] = {}
    for entry in read_runs(settings):
        key = entry.get("run")
        if entry.get("status") == "started":
            open_runs[key] = entry
        else:
            open_runs.pop(key, None)
    return list(open_runs.values())


@contextmanager
def _recorded(settings: Settings, job: str, as_of: date, run: str | None = None):
    run = run or f"{job}:{as_of:%Y-%m-%d}:{datetime.now():%Y%m%dT%H%M%S%f}"
    _append_run(settings, {"run": run, "job": job, "as_of": f"{as_of:%Y-%m-%d}", "status": "started"})
    try:
        outcome: dict = {}
        yield outcome
    except Exception as exc:  # noqa: BLE001 - a failed run is recorded and the schedule goes on
        from experiments.registered import RegistryError
        from features.pipeline import FeatureError
        from monitoring.loop import LoopError
        from monitoring.monitor import MonitorError

        if isinstance(exc, (LoopError, MonitorError, RegistryError, FeatureError)):  # not ready: said, no crash
            log.warning("scheduled %s as of %s did not run: %s", job, as_of, exc)
        else:
            log.exception("scheduled %s as of %s failed", job, as_of)
        _append_run(settings, {"run": run, "job": job, "as_of": f"{as_of:%Y-%m-%d}", "status": "failed",
                               "message": f"{type(exc).__name__}: {exc}"})
        return
    _append_run(settings, {"run": run, "job": job, "as_of": f"{as_of:%Y-%m-%d}", "status": "finished", **outcome})


def previous_month_end(day: date) -> date:
    """The last day of the month before ``day``'s."""
    return day.replace(day=1) - timedelta(days=1)


def scheduled_retrain(home: str, as_of: str | None = None, run: str | None = None) -> None:
    """The monthly job: retrain every task with a champion on the data as of the end of the month just closed."""
    from monitoring.loop import retrain

    settings = get_settings(home=Path(home))
    day = date.fromisoformat(as_of) if as_of else previous_month_end(date.today())
    with _recorded(settings, "retrain", day, run) as outcome:
        report = retrain(settings, day, reason="scheduled", trainer="salesml-schedule")
        outcome["tasks"] = {t["task"]: t["status"] for t in report.tasks}


def scheduled_monitor(home: str, as_of: str | None = None, run: str | None = None) -> None:
    """The daily job: monitor every champion as of today (alerts retrain where the policy says so)."""
    from monitoring.monitor import monitor

    settings = get_settings(home=Path(home))
    day = date.fromisoformat(as_of) if as_of else date.today()
    with _recorded(settings, "monitor", day, run) as outcome:
        report = monitor(settings, day, trainer="salesml-schedule")
        outcome["alerts"] = len(report.alerts)


@dataclass
class LoopSchedule:
    """A scheduler set up on the job store, not started, and each job's next run time as it stands."""

    scheduler: object
    store: object
    next_runs: dict[str, str | None]


def build_scheduler(settings: Settings, config: ScheduleConfig) -> LoopSchedule:
    """An APScheduler ``BackgroundScheduler``, not started, on the SQLite job store holding both jobs: each added
    when the store lacks it, given its new trigger when its cron changed, left alone (keeping its next run time,
    due or not) otherwise.

    The store is read and written without starting the scheduler: a started scheduler stopped again processes the
    jobs due at that moment on its way out (APScheduler 3.11), which would advance a missed run's time and lose it.

    Raises:
        ScheduleError: for a malformed cron or time zone.
    """
    from apscheduler.executors.pool import ThreadPoolExecutor
    from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
    from apscheduler.schedulers.background import BackgroundScheduler

    triggers = config.triggers()
    schedule_folder(settings).mkdir(parents=True, exist_ok=True)
    store = SQLAlchemyJobStore(url=job_store_url(settings))
    scheduler = BackgroundScheduler(jobstores={"default": store}, executors={"default": ThreadPoolExecutor(1)},
                                    timezone=config.timezone)
    store.start(scheduler, "default")
    now = datetime.now(triggers["retrain"].timezone)
    runs = {}
    for job, (func, grace) in JOBS.items():
        existing = store.lookup_job(job)
        if existing is None:  # stored when the scheduler starts
            scheduler.add_job(func, triggers[job], id=job, name=f"salesml {job}", args=[str(settings.home)],
                              coalesce=True, max_instances=1, misfire_grace_time=int(grace.total_seconds()))
            runs[job] = triggers[job].get_next_fire_time(None, now)
        elif str(existing.trigger) != str(triggers[job]):
            # Job.modify() goes through a started scheduler; the stored job is changed in place instead.
            existing._modify(trigger=triggers[job], next_run_time=triggers[job].get_next_fire_time(None, now))
            store.update_job(existing)
            runs[job] = existing.next_run_time
        else:
            runs[job] = existing.next_run_time
    return LoopSchedule(scheduler, store, {k: v.isoformat() if v else None for k, v in runs.items()})


def run_schedule(settings: Settings, config: ScheduleConfig, stop: threading.Event,
                 say: Callable[[str], None] = lambda text: None) -> None:
    """Run the schedule until ``stop`` is set: first the runs a dead process left unfinished, then the jobs."""
    built = build_scheduler(settings, config)
    scheduler = built.scheduler
    try:
        for entry in unfinished_runs(settings):
            say(f"running again the {entry['job']} of {entry['as_of']} that was under way when the scheduler "
                "stopped")
            func = scheduled_retrain if entry["job"] == "retrain" else scheduled_monitor
            func(str(settings.home), entry["as_of"], entry["run"])
        for job, when in built.next_runs.items():
            say(f"{job}: next run {when}")
        scheduler.start()
        stop.wait()
    finally:
        if scheduler.running:
            scheduler.shutdown(wait=True)

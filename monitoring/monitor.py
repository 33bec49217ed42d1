"""Production monitoring: each champion's logged predictions against the outcomes that landed since, its data and
prediction drift against its training reference, and the alerts the policy's monitoring thresholds raise
(``salesml monitor``).

For every task with a champion, the inference log of the last ``months`` months is read and labelled from the
feature store as of the monitoring day, by the definitions the models were trained on:

- risk: the task's view built at each day a score was logged whose horizon has passed; the label is the training
  label (the deal lost, the customer without an order, within the horizon after the day it was scored);
- demand: the units sold in each forecast period that has ended (the ``product_week`` view, or the imported task
  table);
- value: the customer view at the model's as-of day, the value of orders within the horizon after it, and
  whether the customer ordered at all (for P(alive));
- segments: the logged assignments themselves, month against month.

Risk scores whose horizon has not passed are not left waiting: the newest day scored at least
``early_outcome_days`` ago is judged on the losses landed since, segment by segment (``drift_segments``): a
segment losing more than its share of the predicted risk says, weeks before the horizon ends, that the champion no
longer fits it (``early_outcomes``).

Drift compares the champion's training reference with the rows of the last ``window_days`` days: the logged
inputs for risk (the features the service scored), the store's newest view rows for the other kinds; prediction
drift compares the champion's test-time predictions with those it served in the window.

The outcome is written to ``SALESML_HOME/monitoring/state.json`` (the newest run, which the service's
``/metrics`` and ``/monitoring`` read), appended to ``history.jsonl``, and rendered as a self-contained HTML report
under ``SALESML_HOME/reports/monitoring``; every alert goes to the append-only audit log, and when the policy says
``retrain_on_alert`` the alerted tasks are retrained at once with the alerts as the reason.
"""

from __future__ import annotations

import html
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from monitoring.live import LIVE_METRICS, by_month, judge, label_scores, month_of_times, risk_figures
from salesml.settings import Settings

log = logging.getLogger(__name__)

class MonitorError(RuntimeError):
    """Monitoring cannot run: no task to watch, an unknown task, or a bad window."""


@dataclass
class TaskMonitoring:
    """One task's monitoring outcome."""

    task: str
    kind: str
    model: str
    champion: str | None
    metric: str
    higher_is_better: bool
    training: dict = field(default_factory=dict)
    training_by_version: dict[str, dict] = field(default_factory=dict)
    months: list[dict] = field(default_factory=list)
    drift: dict | None = None
    early: dict | None = None
    alerts: list[dict] = field(default_factory=list)
    logged: int = 0
    notes: list[str] = field(default_factory=list)

    def latest(self) -> dict | None:
        """The newest month with labelled outcomes (or assignments), or ``None``."""
        judged = [m for m in self.months if m.get("labelled")]
        return judged[-1] if judged else None


@dataclass
class MonitorReport:
    """The outcome of one ``salesml monitor`` run."""

    as_of: str
    window_days: int
    tasks: list[TaskMonitoring] = field(default_factory=list)
    retrains: list[dict] = field(default_factory=list)
    report: str | None = None
    time: str = field(default_factory=lambda: datetime.now().astimezone().isoformat(timespec="seconds"))

    @property
    def alerts(self) -> list[dict]:
        """Every task's alerts."""
        return [a for t in self.tasks for a in t.alerts]

    def to_dict(self) -> dict:
        """JSON-ready."""
        from monitoring.audits import json_ready

        return json_ready(asdict(self) | {"alerts": self.alerts}, digits=None)


def read_state(settings: Settings) -> dict | None:
    """The newest monitoring run (``state.json``), or ``None`` before the first."""
    path = settings.monitoring_dir / "state.json"
    return json.loads(path.read_text()) if path.is_file() else None


def read_history(settings: Settings) -> list[dict]:
    """Every monitoring run recorded, oldest first."""
    path = settings.monitoring_dir / "history.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def parse_window(text: str | int) -> int:
    """Days of a window given as ``30d``, ``4w`` or a number of days.

    Raises:
        MonitorError: for anything else.
    """
    value = str(text).strip().lower()
    units = {"d": 1, "w": 7}
    try:
        days = int(value[:-1]) * units[value[-1]] if value and value[-1] in units else int(value)
    except ValueError:
        raise MonitorError(f"--window must be days such as 30d or 4w, not {text!r}") from None
    if days < 1:
        raise MonitorError(f"--window must be at least one day, not {text!r}")
    return days


def monitor(settings: Settings, as_of: date | None = None, tasks: Sequence[str] | None = None, *,
            window_days: int | None = None, months: int = 12, policy_path: Path | None = None,
            retrain_on_alert: bool | None = None, trainer: str = "salesml-monitor", configs: Path | None = None,
            say: Callable[[str], None] = lambda text: None) -> MonitorReport:
    """Monitor the champions of ``tasks`` as of ``as_of``, record the outcome and raise the alerts.

    Args:
        settings: where everything lives.
        as_of: the monitoring day (default: today); outcomes after it are not used.
        tasks: the tasks (default: every task with a champion).
        window_days: the drift window (default: each task's policy, 30 days).
        months: months of the inference log read, counted back from ``as_of``.
        policy_path: the policy (default ``monitoring/policy.yaml``).
        retrain_on_alert: retrain alerted tasks at once (default: each task's policy says).
        trainer: who retrains when an alert does.
        configs: the training configs an alert's retraining uses (default ``experiments/configs``).
        say: called with a short description of each step.

    Raises:
        MonitorError: when no task is given or has a champion, or a task is unknown.
    """
    from monitoring.audits import json_ready
    from monitoring.loop import task_definitions, write_json_atomically
    from monitoring.policy import load_policy
    from monitoring.review import append_audit_log

    as_of = as_of or date.today()
    definitions = task_definitions(settings, tasks, MonitorError,
                                   "no task has a champion to monitor: train and promote one first")
    names = list(definitions)
    policies = {task: load_policy(task, policy_path).monitoring for task in names}
    window = window_days or max(p.window_days for p in policies.values())
    report = MonitorReport(as_of=f"{as_of:%Y-%m-%d}", window_days=window)
    for task in names:
        say(f"{task}: reading the inference log and the outcomes")
        outcome = monitor_task(settings, definitions[task], as_of, window, months, policies[task])
        report.tasks.append(outcome)
        for alert in outcome.alerts:
            say(f"{task}: ALERT {alert['alert']}: {alert['message']}")
            append_audit_log(settings, {"action": "alert", "task": task, "model": outcome.model,
                                        "version": outcome.champion, "alert": alert["alert"],
                                        "value": json_ready(alert["value"], None),
                                        "threshold": json_ready(alert["threshold"], None),
                                        "month": alert["month"], "message": alert["message"],
                                        "monitoring_as_of": report.as_of})
        if not outcome.alerts:
            latest = outcome.latest()
            figure = (f"{outcome.metric} {latest[outcome.metric]:.4f} in {latest['month']}"
                      if latest and isinstance(latest.get(outcome.metric), float) else "no labelled month yet")
            say(f"{task}: no alert ({figure})")
    folder = settings.monitoring_dir
    folder.mkdir(parents=True, exist_ok=True)
    report.report = str(write_monitoring_report(settings, report))
    state = report.to_dict()
    write_json_atomically(folder / "state.json", state)
    with open(folder / "history.jsonl", "a", encoding="utf-8") as handle:
        handle.write(json.dumps(state) + "\n")
    alerted = [t.task for t in report.tasks if t.alerts and (
        retrain_on_alert if retrain_on_alert is not None else policies[t.task].retrain_on_alert)]
    if alerted:
        report.retrains = retrain_alerted(settings, report, alerted, as_of, policy_path, trainer, configs, say)
        write_json_atomically(folder / "state.json", report.to_dict())
    return report


def retrain_alerted(settings: Settings, report: MonitorReport, tasks: list[str], as_of: date,
                    policy_path: Path | None, trainer: str, configs: Path | None, say: Callable[[str], None]
                    ) -> list[dict]:
    """Retrain the alerted tasks now, each run tagged with its alerts as the reason (the month's ledger keeps this
    from repeating: a task retrained for the month already is reported, not retrained again)."""
    from monitoring.loop import LoopError, retrain

    out = []
    for task in tasks:
        alerts = next(t.alerts for t in report.tasks if t.task == task)
        reason = "alert: " + "; ".join(f"{a['alert']} ({a['message']})" for a in alerts)
        say(f"{task}: retraining now ({reason[:120]})")
        try:
            done = retrain(settings, as_of, [task], reason=reason[:500], trainer=trainer, policy_path=policy_path,
                           configs=configs, say=say)
        except LoopError as exc:
            out.append({"task": task, "status": "not_run", "message": str(exc)})
            continue
        out.extend({k: t.get(k) for k in ("task", "version", "status", "gate", "message")} for t in done.tasks)
    return out


def monitor_task(settings: Settings, definition, as_of: date, window_days: int, months: int, policy
                 ) -> TaskMonitoring:
    """One task's live figures, drift and alerts (see the module's description)."""
    from experiments.registered import RegistryError, get_alias, task_model_name
    from experiments.registry import CHAMPION
    from experiments.tracking import configure_mlflow
    from features.production import read_inference_log

    kind = definition.kind
    metric, higher = (policy.metric, LIVE_METRICS[kind][1]) if policy.metric else LIVE_METRICS[kind]
    client = configure_mlflow(settings)
    try:
        name = task_model_name(client, definition.name)
    except RegistryError:
        name = definition.model_name
    champion = get_alias(client, name, CHAMPION)
    out = TaskMonitoring(definition.name, kind, name, str(champion.version) if champion else None, metric, higher)
    if champion is None:
        out.notes.append("no champion: nothing is served, nothing to monitor")
        return out
    since = pd.Timestamp(as_of) - pd.DateOffset(months=months) + pd.Timedelta(days=1)
    logged = read_inference_log(settings.logs_dir, definition.name, since=since.to_pydatetime())
    if len(logged):
        logged = logged[pd.to_datetime(logged["time"]) < pd.Timestamp(as_of) + pd.Timedelta(days=1)]
    out.logged = int(len(logged))
    run = client.get_run(champion.run_id)
    test = _test_predictions(client, champion.run_id) if kind == "risk" else None
    out.training = training_figures(client, champion, run, kind, test)
    if not len(logged):
        out.notes.append(f"nothing logged in the {months} months to {as_of}: the service has not scored with "
                         f"{name}")
    else:
        labelled, note = label_logged(settings, definition, logged, as_of, run)
        if note:
            out.notes.append(note)
        out.months = by_month(kind, labelled, definition.data.id_column)
        if kind == "risk":
            out.early = early_outcomes(settings, definition, logged, as_of, run, policy)
    try:
        out.drift = window_drift(settings, client, champion, definition, logged, as_of, window_days,
                                 policy.drift_reference, policy.drift_segments, policy.min_segment_rows,
                                 test["probability"].to_numpy(float) if test is not None else None)
    except RegistryError as exc:
        out.notes.append(f"no drift: {exc}")
    out.alerts = judge(definition.name, kind, out.months, _judged_against(client, out, policy), out.drift, policy,
                       out.early)
    return out


def _judged_against(client, out: TaskMonitoring, policy) -> dict:
    """The training-time figures the newest judged month is compared with: those of the version that scored it
    (a month scored by a champion since replaced is judged against that version, not against its successor)."""
    judged = [m for m in out.months if m.get("labelled", 0) >= policy.min_outcomes]
    versions = judged[-1].get("versions", []) if judged else []
    if len(versions) != 1 or versions[0] == out.champion:
        return out.training
    from mlflow.exceptions import MlflowException

    version = versions[0]
    if version not in out.training_by_version:
        try:
            info = client.get_model_version(out.model, version)
        except MlflowException:  # a version deleted since it scored: judge against the champion
            return out.training
        out.training_by_version[version] = training_figures(client, info, client.get_run(info.run_id), out.kind)
    return out.training_by_version[version]


def training_figures(client, champion, run, kind: str, test: pd.DataFrame | None = None) -> dict:
    """The champion's figures at training, by the live figures' names: recomputed from its logged test
    predictions for risk (so that live and training figures are computed alike; ``test`` when they are at hand),
    its run's test metrics otherwise."""
    figures = {k.removeprefix("test_"): v for k, v in run.data.metrics.items() if k.startswith("test_")}
    if kind == "risk":
        test = test if test is not None else _test_predictions(client, champion.run_id)
        if test is not None:
            label = next((c for c in test.columns if c.startswith("label_")), None)
            if label is not None and test[label].notna().any():
                rows = test.dropna(subset=[label])
                figures |= risk_figures(rows[label].astype(int).to_numpy(), rows["probability"].to_numpy())
    return figures


def _test_predictions(client, run_id: str) -> pd.DataFrame | None:
    import tempfile

    from experiments.risk_run import TEST_PREDICTIONS

    with tempfile.TemporaryDirectory(prefix="salesml-monitor-") as scratch:
        try:
            path = client.download_artifacts(run_id, str(TEST_PREDICTIONS), scratch)
        except Exception:  # noqa: BLE001 - MLflow raises several types for a missing artifact
            return None
        return pd.read_parquet(path)


def run_horizon(run, default: int = 90) -> int:
    """The label horizon (days) a training run was configured with."""
    value = run.data.params.get("config.horizon_days")
    return int(float(value)) if value not in (None, "None") else default


def label_logged(settings: Settings, definition, logged: pd.DataFrame, as_of: date, run
                 ) -> tuple[pd.DataFrame, str | None]:
    """The logged rows joined to their realised outcomes (see the module's description), with ``month``; and a
    note on what could not be labelled."""
    from features.pipeline import FeatureError, build_view
    from features.store import FeatureStore
    from features.views import ViewConfig

    kind, data = definition.kind, definition.data
    if kind == "segments":
        frame = logged.assign(month=month_of_times(logged["time"]))
        return frame[frame["segment"].notna()], None
    if not settings.feature_store_path.exists():
        return logged.iloc[:0].assign(actual=[], month=[]), "no feature store: no outcome can be read"
    horizon = run_horizon(run)
    try:
        with FeatureStore.from_settings(settings, read_only=True) as store:
            # Outcomes are known up to the store's data, not up to the monitoring day: a deal the store has heard
            # nothing of since is open, not "not lost", and a week after its data is unknown, not zero.
            as_of = min(as_of, data_known_until(store, data.events))
            if kind == "risk":
                days = sorted({d for d in pd.to_datetime(logged["time"]).dt.date
                               if d + timedelta(days=horizon) <= as_of})
                if not days:
                    return logged.iloc[:0].assign(actual=[], month=[]), (
                        f"no logged score is {horizon} days older than the store's newest data ({as_of}): no "
                        "outcome has landed")
                built = build_view(store, data.name, as_of, cutoffs=days, config=ViewConfig(horizon_days=horizon),
                                   threads=settings.threads)
                label = data.label.format(h=horizon)
                labelled = label_scores(logged, built.frame, data.id_column, label)
                note = None
                matured = logged[pd.to_datetime(logged["time"]).dt.date.isin(days)]
                if len(labelled) < len(matured):
                    note = (f"{len(matured) - len(labelled)} of {len(matured)} matured scores have no outcome in the "
                            f"{data.name} view (the entity was not open at the day it was scored, or had no id)")
                return labelled, note
            if kind == "demand":
                return _label_demand(store, data, logged, as_of)
            return _label_value(store, data, logged, as_of, horizon, settings.threads)
    except FeatureError as exc:
        return logged.iloc[:0].assign(actual=[], month=[]), f"no outcomes: {exc}"


def early_outcomes(settings: Settings, definition, logged: pd.DataFrame, as_of: date, run, policy) -> dict | None:
    """The losses landed so far among a risk task's newest scores whose horizon has not passed, by segment.

    The day judged is the newest logged day at least ``policy.early_outcome_days`` before the store's data ends and
    less than the horizon before it; its scores are labelled by the task's view built at that day with the days
    elapsed as the horizon (lost so far, or not), and each value of each ``drift_segments`` column the view holds
    gets ``live.early_loss_ratios``. ``None`` when no day qualifies or the store holds no data.
    """
    from features.pipeline import FeatureError, build_view
    from features.store import FeatureStore
    from features.views import ViewConfig
    from monitoring.live import early_loss_ratios

    data = definition.data
    if not policy.drift_segments or not len(logged) or not settings.feature_store_path.exists():
        return None
    horizon = run_horizon(run)
    try:
        with FeatureStore.from_settings(settings, read_only=True) as store:
            known = min(as_of, data_known_until(store, data.events))
            days = sorted({d for d in pd.to_datetime(logged["time"]).dt.date
                           if policy.early_outcome_days <= (known - d).days < horizon})
            if not days:
                return None
            day = days[-1]
            elapsed = (known - day).days
            frame = build_view(store, data.name, known, cutoffs=[day], config=ViewConfig(horizon_days=elapsed),
                               threads=settings.threads).frame
    except FeatureError:
        return None
    scored = logged[pd.to_datetime(logged["time"]).dt.date == day]
    labelled = label_scores(scored, frame, data.id_column, data.label.format(h=elapsed))
    columns = [c for c in policy.drift_segments if c in frame.columns]
    lookup = frame.assign(**{data.id_column: frame[data.id_column].astype(str)}).drop_duplicates(
        data.id_column).set_index(data.id_column)
    ids = labelled[data.id_column].astype(str)
    parts = []
    for column in columns:
        rows = labelled.drop(columns=[column], errors="ignore").assign(**{column: ids.map(lookup[column]).to_numpy()})
        parts += [{"column": column, **r} for r in early_loss_ratios(rows, column)]
    return {"scored_at": f"{day}", "month": f"{day:%Y-%m}", "elapsed_days": int(elapsed),
            "labelled": int(len(labelled)), "losses": int(labelled["actual"].sum()) if len(labelled) else 0,
            "predicted": float(labelled["prediction"].sum()) if len(labelled) else 0.0, "segments": parts}


def data_known_until(store, events) -> date:
    """The day the store's data is complete to: the as-of date of its newest load (ingestion refuses anything
    later, and the load vouches for everything up to it), or the day of its newest event when it records no load.
    """
    from features.pipeline import latest_event

    loads = store.loads()
    if len(loads) and pd.notna(loads["as_of"].max()):
        return pd.Timestamp(loads["as_of"].max()).date()
    return latest_event(store, events)


def _label_demand(store, data, logged: pd.DataFrame, as_of: date) -> tuple[pd.DataFrame, str | None]:
    from features.pipeline import FeatureError, build_view

    periods = pd.to_datetime(logged["period_start"])
    waiting = (logged.iloc[:0].assign(actual=[], month=[]),
               f"no forecast period has ended by the store's newest data ({as_of}): no sales to compare yet")
    if periods.min().date() > as_of:
        return waiting
    if data.source == "view":
        try:
            weeks = build_view(store, data.name, as_of, start=periods.min().date(), end=as_of).frame
        except FeatureError:  # no complete week between the first forecast period and the newest data
            return waiting
        actual = weeks[[data.id_column, data.time_column, data.label]]
    else:
        actual = store.table(data.name).select(data.id_column, data.time_column, data.label).to_pandas()
    actual = actual.rename(columns={data.id_column: "series", data.time_column: "period_start",
                                    data.label: "actual"})
    actual = actual.assign(series=actual["series"].astype(str), period_start=pd.to_datetime(actual["period_start"]))
    left = logged.assign(series=logged["series"].astype(str), period_start=periods)
    joined = left.merge(actual.drop_duplicates(["series", "period_start"]), on=["series", "period_start"])
    return joined.assign(month=month_of_times(joined["time"])), None


def _label_value(store, data, logged: pd.DataFrame, as_of: date, default_horizon: int, threads: int
                 ) -> tuple[pd.DataFrame, str | None]:
    from features.pipeline import build_view
    from features.views import ViewConfig

    start = (pd.to_datetime(logged["as_of"]) if "as_of" in logged.columns
             else pd.to_datetime(logged["time"]).dt.normalize())
    horizon = (pd.to_numeric(logged["horizon_days"], errors="coerce").fillna(default_horizon).astype(int)
               if "horizon_days" in logged.columns else pd.Series(default_horizon, index=logged.index))
    left = logged.assign(cutoff=start.dt.date, _h=horizon)
    parts, waiting = [], 0
    for h, group in left.groupby("_h"):
        days = sorted(d for d in group["cutoff"].unique() if d + timedelta(days=int(h)) <= as_of)
        waiting += int((~group["cutoff"].isin(days)).sum())
        if not days:
            continue
        frame = build_view(store, data.name, as_of, cutoffs=days, config=ViewConfig(horizon_days=int(h)),
                           threads=threads).frame
        labels = frame[[data.id_column, "cutoff", f"label_value_next_{h}d", f"label_churn_{h}d"]].rename(
            columns={f"label_value_next_{h}d": "actual", f"label_churn_{h}d": "_churn"})
        labels = labels.assign(**{data.id_column: labels[data.id_column].astype(str),
                                  "cutoff": pd.to_datetime(labels["cutoff"]).dt.date})
        joined = group.assign(**{data.id_column: group[data.id_column].astype(str)}).merge(
            labels.dropna(subset=["actual"]), on=[data.id_column, "cutoff"])
        parts.append(joined.assign(ordered=1 - joined["_churn"].astype(float)))
    note = f"{waiting} logged values wait for their horizon to pass" if waiting else None
    if not parts:
        return logged.iloc[:0].assign(actual=[], ordered=[], month=[]), note
    labelled = pd.concat(parts, ignore_index=True)
    return labelled.assign(month=month_of_times(labelled["time"])), note


#: Rows the newest training month needs to stand as the drift reference.
MIN_REFERENCE_ROWS = 100


def window_drift(settings: Settings, client, champion, definition, logged: pd.DataFrame, as_of: date,
                 window_days: int, reference_kind: str = "newest_month", segments: Sequence[str] = (),
                 min_segment_rows: int = 100, reference_predictions: np.ndarray | None = None) -> dict | None:
    """Data drift of the last ``window_days`` days against the champion's training data, and the drift of its
    served predictions against its test-time ones.

    ``reference_kind`` ``newest_month`` compares with the newest month the champion was trained on (risk tasks,
    when it holds ``MIN_REFERENCE_ROWS``): features that trend with time in a growing organisation (tenure, a
    rep's closed deals) move away from the whole training sample within months without anything having changed,
    and from the newest month only by what changed since. ``training`` compares with the sampled training rows.
    ``reference_predictions`` are the champion's test-time predictions, which the served ones are compared with.
    Drift is also computed within each value of the ``segments`` columns (``segment_drift``).

    Raises:
        RegistryError: when the champion's run logged no evaluation data.
    """
    from experiments.registered import load_evaluation
    from monitoring.audits import audit_drift
    from monitoring.gate import latest_rows
    from monitoring.policy import DriftPolicy

    evaluation = load_evaluation(client, champion)
    reference, against = evaluation["reference"], "its sampled training rows"
    newest = evaluation["recent"]
    if reference_kind == "newest_month" and definition.kind == "risk" and newest is not None and \
            len(newest) >= MIN_REFERENCE_ROWS:
        reference, against = newest, "the newest month it was trained on"
    start = pd.Timestamp(as_of) - pd.Timedelta(days=window_days - 1)
    recent = logged[pd.to_datetime(logged["time"]) >= start] if len(logged) else logged
    if definition.kind == "risk" and len(recent):
        current, source = recent, f"the {len(recent)} records scored in the last {window_days} days"
    else:
        current, source = latest_rows(settings, definition.name, evaluation["recent"], evaluation["window"])
    numeric, categorical = drift_columns(client, champion, reference, current, definition)
    if not numeric + categorical:
        return None
    served = recent["prediction"].dropna().to_numpy(float) if len(recent) and "prediction" in recent else None
    check = audit_drift(reference, current, numeric, categorical,
                        served if served is not None and len(served) >= 30 and reference_predictions is not None
                        else None, reference_predictions, DriftPolicy(max_drifted_share=1.0, sample_rows=10_000), 0)
    figures = check.figures
    moved = figures.get("prediction_drift", {})
    return {"month": f"{as_of:%Y-%m}", "window_days": window_days, "source": source, "reference": against,
            "reference_rows": figures["reference_rows"], "current_rows": figures["current_rows"],
            "features": figures["features"], "drifted_share": figures["drifted_share"],
            "drifted_features": figures["drifted_features"], "prediction_drifted": bool(moved.get("drifted")),
            "prediction_drift": moved or None,
            "segments": segment_drift(reference, _with_segments(settings, definition, evaluation, current, reference,
                                                               segments),
                                      numeric, categorical, segments, min_segment_rows)}


def _with_segments(settings: Settings, definition, evaluation: dict, current: pd.DataFrame, reference: pd.DataFrame,
                   segments: Sequence[str]) -> pd.DataFrame:
    """``current`` with the segment columns it lacks: a logged record holds the model's features, and a segment
    such as region is often not one of them, so it is looked up by the record's id in the store's newest rows."""
    from monitoring.gate import latest_rows

    missing = [c for c in segments if c in reference.columns and c not in current.columns]
    id_column = definition.data.id_column
    if not missing or id_column not in current.columns:
        return current
    rows, _ = latest_rows(settings, definition.name, evaluation["recent"], evaluation["window"])
    if id_column not in rows.columns:
        return current
    lookup = rows.assign(**{id_column: rows[id_column].astype(str)}).drop_duplicates(id_column).set_index(id_column)
    ids = current[id_column].astype(str)
    return current.assign(**{c: ids.map(lookup[c]).to_numpy() for c in missing if c in lookup.columns})


def segment_drift(reference: pd.DataFrame, current: pd.DataFrame, numeric: list[str], categorical: list[str],
                  segments: Sequence[str], min_rows: int) -> list[dict]:
    """Drift within each value of each segment column both sides hold (a value with fewer than ``min_rows`` rows
    on either side is skipped): ``{"column", "value", "reference_rows", "current_rows", "drifted_share",
    "drifted_features"}`` per segment."""
    from monitoring.audits import audit_drift
    from monitoring.policy import DriftPolicy

    out = []
    for column in segments:
        if column not in reference.columns or column not in current.columns:
            continue
        ref_values, cur_values = reference[column].astype(str), current[column].astype(str)
        for value in sorted(set(cur_values[current[column].notna()])):
            ref_part, cur_part = reference[ref_values == value], current[cur_values == value]
            if min(len(ref_part), len(cur_part)) < min_rows:
                continue
            figures = audit_drift(ref_part, cur_part, [c for c in numeric if c != column],
                                  [c for c in categorical if c != column], None, None,
                                  DriftPolicy(max_drifted_share=1.0, sample_rows=10_000), 0).figures
            out.append({"column": column, "value": value, "reference_rows": int(len(ref_part)),
                        "current_rows": int(len(cur_part)), "drifted_share": figures["drifted_share"],
                        "drifted_features": figures["drifted_features"]})
    return out


def drift_columns(client, champion, reference: pd.DataFrame, current: pd.DataFrame, definition
                  ) -> tuple[list[str], list[str]]:
    """The champion's input columns that both sides hold, numeric and categorical: its features as its artifact
    names them (risk: the booster's features; segments: the scaler's), else the reference's columns that are
    neither keys, times nor labels."""
    from experiments.registered import load_version_model

    model, _ = load_version_model(client, champion.name, str(champion.version))
    both = [c for c in reference.columns if c in current.columns]
    if hasattr(model, "preprocessor"):
        numeric = [c for c in model.features if c in model.preprocessor.numeric]
        categorical = [c for c in model.features if c in model.preprocessor.categorical]
    elif hasattr(model, "scaler"):
        numeric, categorical = list(model.scaler.numeric), list(model.scaler.categorical)
    else:
        keys = {definition.data.id_column, definition.data.time_column, "time", "cutoff", "version", "model",
                "task", "kind", "principal", "prediction"}
        plain = [c for c in both if c not in keys and not c.endswith("_id") and not c.startswith("label_")]
        numeric = [c for c in plain if pd.api.types.is_numeric_dtype(reference[c])
                   and not pd.api.types.is_bool_dtype(reference[c])]
        categorical = [c for c in plain if c not in numeric]
    return [c for c in numeric if c in both], [c for c in categorical if c in both]


def write_monitoring_report(settings: Settings, report: MonitorReport) -> Path:
    """A self-contained HTML report of a monitoring run under ``SALESML_HOME/reports/monitoring``."""
    from monitoring.report import render_page

    folder = settings.home / "reports" / "monitoring"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{report.as_of}.html"
    sections = []
    for t in report.tasks:
        rows = "".join(
            f"<tr><td>{html.escape(m['month'])}</td><td>{', '.join(m.get('versions', []))}</td>"
            f"<td>{m.get('labelled', 0)}</td><td>{_number(m.get(t.metric))}</td>"
            f"<td>{_number(m.get('calibration_error', m.get('coverage_80', m.get('p_alive_calibration_error'))))}"
            "</td></tr>" for m in t.months)
        alerts = "".join(f"<li><b>{html.escape(a['alert'])}</b>: {html.escape(a['message'])}</li>"
                         for a in t.alerts) or "<li>none</li>"
        drift = (f"{t.drift['drifted_share']:.0%} of {t.drift['features']} features drifted "
                 f"({html.escape(t.drift['source'])})" if t.drift else "not computed")
        notes = "".join(f"<li>{html.escape(n)}</li>" for n in t.notes)
        early = ""
        if t.early and t.early.get("segments"):
            cells = "".join(f"<tr><td>{html.escape(p['column'])} {html.escape(p['value'])}</td><td>{p['rows']}</td>"
                            f"<td>{p['losses']}</td><td>{p['expected']:.1f}</td><td>{p['ratio']:.2f}</td>"
                            f"<td>{p['p_value']:.2g}</td></tr>" for p in t.early["segments"])
            early = (f"<h3>Early outcomes</h3><p>scores of {html.escape(t.early['scored_at'])}, "
                     f"{t.early['elapsed_days']} days on: losses so far against each segment's share of the "
                     "predicted risk</p><table><tr><th>segment</th><th>scores</th><th>lost so far</th>"
                     f"<th>expected</th><th>ratio</th><th>p</th></tr>{cells}</table>")
        sections.append(
            f"<h2>{html.escape(t.task)} ({html.escape(t.model)} version {html.escape(str(t.champion))})</h2>"
            f"<p>training-time {html.escape(t.metric)}: {_number(t.training.get(t.metric))}; drift: {drift}</p>"
            f"<h3>Alerts</h3><ul>{alerts}</ul>{f'<ul>{notes}</ul>' if notes else ''}"
            f"<table><tr><th>month</th><th>versions</th><th>labelled</th><th>live {html.escape(t.metric)}</th>"
            f"<th>calibration / coverage</th></tr>{rows}</table>{early}")
    body = (f"<h1>Monitoring as of {html.escape(report.as_of)}</h1><p class=\"meta\">drift window "
            f"{report.window_days} days; {len(report.alerts)} alert(s)</p>{''.join(sections)}")
    path.write_text(render_page(f"Monitoring as of {report.as_of}", body))
    return path


def _number(value) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) and np.isfinite(value) else "-"

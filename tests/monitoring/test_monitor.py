"""Production monitoring on a small simulated organisation: a champion trained at the end of August scores the
open deals at the end of September and of October (logged as the service logs them); monitoring at the end of
November labels those scores from the deals that closed since and judges them."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from experiments.registered import load_version_model
from experiments.tracking import configure_mlflow
from features.ingest import discover_sources, ingest
from features.pipeline import build_view
from features.production import write_log_part
from features.sources.simulator import SimulationConfig, simulate_organisation, write_organisation
from features.store import FeatureStore
from features.views import ViewConfig
from monitoring.loop import retrain
from monitoring.monitor import MonitorError, monitor, parse_window, read_history, read_state
from monitoring.replay import replay_scores, risk_log_columns
from monitoring.review import read_audit_log
from salesml.settings import get_settings
from tests.monitoring.test_loop import CONFIG  # the loop's small config: 30-day horizon, one trial

NAME, TASK, HORIZON = "risk.opportunity_loss", "opportunity_loss", 30
POLICY = """\
default:
  auto_promote: true
  checks:
    performance: {metric: roc_auc, min_value: 0.6, max_degradation: 0.05}
    fairness: {not_applicable: "monitoring's own tests"}
    drift: {not_applicable: "monitoring's own tests"}
    explanations: {not_applicable: "monitoring's own tests"}
  monitoring:
    min_outcomes: 50
    min_segment_rows: 30
    max_calibration_error: %s
"""
TRAINED, SCORED, MONITORED = date(2024, 8, 31), (date(2024, 9, 30), date(2024, 10, 31)), date(2024, 11, 30)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A champion trained as of August, and its scores of the open deals at two month ends in the inference log."""
    root = tmp_path_factory.mktemp("monitor")
    org = simulate_organisation(SimulationConfig(accounts=700, months=12, seed=3))
    write_organisation(org, root / "org")
    settings = get_settings(home=root / "home")
    with FeatureStore.from_settings(settings) as store:
        ingest(discover_sources(root / "org"), store, as_of=MONITORED)
    (root / "configs").mkdir()
    (root / "configs" / f"{TASK}.yaml").write_text(CONFIG)
    for name, allowed in (("policy.yaml", "0.5"), ("strict.yaml", "0.0001")):
        (root / name).write_text(POLICY % allowed)
    trained = retrain(settings, TRAINED, [TASK], configs=root / "configs", policy_path=root / "policy.yaml")
    assert trained.tasks[0]["status"] == "promoted"
    client = configure_mlflow(settings)
    model, _ = load_version_model(client, NAME, "1")
    for day in SCORED:
        at = datetime.combine(day, datetime.min.time()) + timedelta(hours=15)
        assert replay_scores(settings, TASK, day, at)["records"] > 50
        # Two records the view never saw (a typo'd id): scored, but no outcome can be joined to them.
        with FeatureStore.from_settings(settings, read_only=True) as store:
            rows = build_view(store, "opportunity", day, cutoffs=[day], config=ViewConfig(horizon_days=HORIZON)).frame
        stray = rows.head(2).assign(opportunity_id=[f"NOPE-{day}-{k}" for k in range(2)])
        write_log_part(settings.logs_dir, TASK, f"{day}", risk_log_columns(TASK, NAME, "1", model, stray,
                                                                           "opportunity_id", at, "app"))
    # The log as written, read back without salesml's reader: what a hand computation starts from.
    raw = pd.concat([pd.read_parquet(f) for f in sorted((settings.logs_dir / TASK).rglob("*.parquet"))])
    logged = [(day, [json.loads(x)["opportunity_id"] for x in part["inputs"]], part["prediction"].to_numpy())
              for day, part in raw.groupby(raw["time"].dt.date)]
    return {"root": root, "settings": settings, "org": org, "logged": logged}


def _by_hand(org, day: date, ids: list[str], p: np.ndarray) -> float:
    """ROC AUC from the log and the opportunities table: a deal scored on ``day`` is lost when it closed lost
    within the horizon after the end of that day; deals closed by then, or unknown, have no outcome."""
    deals = org.tables["opportunities"].set_index("opportunity_id")
    end = pd.Timestamp(day) + pd.Timedelta(days=1)
    y, q = [], []
    for i, score in zip(ids, p, strict=True):
        if i not in deals.index:
            continue
        deal = deals.loc[i]
        closed = pd.Timestamp(deal["closed_at"]) if pd.notna(deal["closed_at"]) else None
        if closed is not None and closed < end:
            continue
        y.append(int(closed is not None and closed < end + pd.Timedelta(days=HORIZON) and deal["outcome"] == "lost"))
        q.append(score)
    return float(roc_auc_score(y, q)), len(y)


def test_live_auc_of_each_month_equals_the_auc_from_the_log_and_the_closed_deals(served):
    settings, root = served["settings"], served["root"]
    report = monitor(settings, MONITORED, [TASK], policy_path=root / "policy.yaml", retrain_on_alert=False)
    (task,) = report.tasks
    months = {m["month"]: m for m in task.months}
    assert sorted(months) == ["2024-09", "2024-10"]
    assert [day for day, _, _ in served["logged"]] == list(SCORED)
    for day, ids, p in served["logged"]:
        auc, n = _by_hand(served["org"], day, ids, p)
        figures = months[f"{day:%Y-%m}"]
        assert figures["labelled"] == n and n > 50
        assert figures["roc_auc"] == pytest.approx(auc, abs=1e-12)
        assert 0 <= figures["calibration_error"] < 0.5 and figures["versions"] == ["1"]
    assert any("no outcome" in note for note in task.notes)  # the unknown ids, said, not silently dropped
    assert task.training["roc_auc"] > 0.6 and task.champion == "1"
    assert task.drift is not None and task.drift["features"] > 10 and "account_id" not in task.drift["drifted_features"] and 0 <= task.drift["drifted_share"] <= 1
    # Nothing was scored in November: drift falls back on the store's newest rows, and says so.
    assert task.drift["source"].startswith("feature store: its latest data")
    wider = monitor(settings, MONITORED, [TASK], window_days=31, policy_path=root / "policy.yaml",
                    retrain_on_alert=False).tasks[0]
    assert wider.drift["source"].endswith("records scored in the last 31 days")
    assert wider.drift["current_rows"] == len(served["logged"][-1][1])
    # Nothing changed in this organisation: against the newest training month, drift stays under the threshold
    # (against all training rows, features that trend with time made 62% "drift": see the README).
    assert wider.drift["reference"] == "the newest month it was trained on"
    assert wider.drift["drifted_share"] < 0.30 and not any(a["alert"] == "drift" for a in wider.alerts)
    # Region is not a model feature, so not in the log: each record's region comes from the store by its id.
    regions = {s["value"] for s in wider.drift["segments"] if s["column"] == "region"}
    assert len(regions) >= 2 and all(0 <= s["drifted_share"] <= 1 for s in wider.drift["segments"])

    state = read_state(settings)
    assert state["as_of"] == "2024-11-30" and state["tasks"][0]["months"][1]["roc_auc"] == months["2024-10"]["roc_auc"]
    assert Path(state["report"]).is_file() and "2024-10" in Path(state["report"]).read_text()
    assert len(read_history(settings)) >= 1


def test_a_crossed_threshold_alerts_in_the_json_the_audit_log_and_retrains_with_the_reason(served):
    settings, root = served["settings"], served["root"]
    # No live score is calibrated to within 0.0001: the calibration threshold is crossed.
    report = monitor(settings, MONITORED, [TASK], policy_path=root / "strict.yaml", retrain_on_alert=True,
                     configs=root / "configs")
    alerts = [a for a in report.alerts if a["alert"] == "calibration"]
    assert len(alerts) == 1 and alerts[0]["month"] == "2024-10" and alerts[0]["task"] == TASK
    assert alerts[0]["value"] > alerts[0]["threshold"] == 0.0001 and "calibration error" in alerts[0]["message"]
    logged = [e for e in read_audit_log(settings) if e.get("action") == "alert" and e["alert"] == "calibration"]
    assert logged and logged[-1]["version"] == "1" and logged[-1]["value"] == pytest.approx(alerts[0]["value"])
    (rerun,) = report.retrains
    assert rerun["task"] == TASK and rerun["status"] in ("promoted", "awaiting_review", "blocked")
    client = configure_mlflow(settings)
    version = client.get_model_version(NAME, rerun["version"])
    assert version.tags["salesml.retrain.reason"].startswith("alert: calibration")
    assert read_state(settings)["retrains"][0]["version"] == rerun["version"]


def test_monitoring_errors_are_clear(served):
    settings = served["settings"]
    with pytest.raises(MonitorError, match="unknown task"):
        monitor(settings, MONITORED, ["no_such_task"])
    with pytest.raises(MonitorError, match="30d or 4w"):
        parse_window("a month")
    assert parse_window("4w") == 28 and parse_window("30d") == 30
    empty = get_settings(home=served["root"] / "empty")
    with pytest.raises(MonitorError, match="no task has a champion"):
        monitor(empty, MONITORED)

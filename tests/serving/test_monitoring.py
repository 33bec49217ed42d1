"""The monitoring state as the service shows it: gauges and page data."""

from __future__ import annotations

from serving.monitoring import ALERTS, monitoring_gauges, monitoring_page_data

STATE = {"as_of": "2024-11-30", "window_days": 30, "alerts": [{"alert": "drift"}], "tasks": [
    {"task": "opportunity_loss", "model": "risk.opportunity_loss", "champion": "2", "metric": "roc_auc",
     "training": {"roc_auc": 0.8}, "drift": {"drifted_share": 0.4},
     "months": [{"month": "2024-09", "labelled": 300, "roc_auc": 0.78, "versions": ["1"]},
                {"month": "2024-10", "labelled": 200, "roc_auc": 0.74, "versions": ["1", "2"]},
                {"month": "2024-11", "labelled": 0}],
     "alerts": [{"alert": "drift", "message": "40% drifted"}]}]}


def test_gauges_carry_the_newest_labelled_month_the_drift_and_each_alert():
    gauges = {(name, tuple(sorted(labels.items()))): value for name, labels, value in monitoring_gauges(STATE)}
    assert gauges[("salesml_live_metric", (("metric", "roc_auc"), ("task", "opportunity_loss")))] == 0.74
    assert gauges[("salesml_training_metric", (("metric", "roc_auc"), ("task", "opportunity_loss")))] == 0.8
    assert gauges[("salesml_drifted_share", (("task", "opportunity_loss"),))] == 0.4
    assert gauges[("salesml_alert_state", (("task", "opportunity_loss"),))] == 1.0
    fired = {dict(labels)["alert"]: v for (name, labels), v in gauges.items() if name == "salesml_alert"}
    assert set(fired) == set(ALERTS) and fired["drift"] == 1.0 and sum(fired.values()) == 1.0
    assert monitoring_gauges(None) == []


def test_page_data_has_one_point_per_labelled_month_and_the_drift_of_each_run_month():
    history = [{**STATE, "as_of": "2024-10-31", "tasks": [{**STATE["tasks"][0], "drift": {"drifted_share": 0.1}}]},
               {**STATE, "as_of": "2024-11-15"}, STATE]
    (task,) = monitoring_page_data(STATE, history)["tasks"]
    assert [p["month"] for p in task["points"]] == ["2024-09", "2024-10"] and task["training"] == 0.8
    assert task["drift"] == [{"month": "2024-10", "share": 0.1}, {"month": "2024-11", "share": 0.4}]
    assert monitoring_page_data(None, [])["message"].startswith("no monitoring run yet")

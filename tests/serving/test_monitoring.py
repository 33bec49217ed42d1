"""The monitoring state as the service shows it: gauges and page data."""

from __future__ import annotations

import pandas as pd

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


def test_the_boards_score_history_reads_each_new_log_part_once_and_keeps_every_row(tmp_path):
    import json
    from datetime import datetime

    from features.production import write_log_part
    from salesml.settings import get_settings
    from serving import dashboard

    settings = get_settings(home=tmp_path)

    def part(day: str, ids: list[str], band: str) -> None:
        n = len(ids)
        write_log_part(settings.logs_dir, "opportunity_loss", day, {
            "time": [datetime.fromisoformat(f"{day}T12:00:00")] * n, "task": ["opportunity_loss"] * n,
            "kind": ["risk"] * n, "principal": ["app"] * n, "model": ["m"] * n, "version": ["3"] * n,
            "inputs": [json.dumps({"opportunity_id": i}) for i in ids], "prediction": [0.7] * n,
            "outputs": [json.dumps({"opportunity_id": i, "probability": 0.7, "risk_band": band}) for i in ids]})

    part("2025-01-31", ["O1", "O2"], "high")
    first = dashboard.risk_history(settings, "opportunity_loss")
    assert list(first["id"]) == ["O1", "O2"] and set(first["risk_band"]) == {"high"}
    read_before = set(dashboard._HISTORY[(str(settings.logs_dir), "opportunity_loss")][0])
    part("2025-02-28", ["O1"], "low")
    second = dashboard.risk_history(settings, "opportunity_loss")
    assert list(second["id"]) == ["O1", "O2", "O1"] and list(second["risk_band"]) == ["high", "high", "low"]
    assert read_before < dashboard._HISTORY[(str(settings.logs_dir), "opportunity_loss")][0]
    trend = dashboard.at_risk_trend(second, {"O1": "R1", "O2": "R2"},
                                    pd.DataFrame({"opportunity_id": ["O1", "O2"], "amount": [100.0, 50.0]}), None)
    assert [(t["month"], t["count"], t["value"]) for t in trend] == [("2025-01", 2, 150.0), ("2025-02", 0, 0.0)]
    assert dashboard.at_risk_trend(second, {"O1": "R1", "O2": "R2"}, pd.DataFrame(
        {"opportunity_id": ["O1", "O2"], "amount": [100.0, 50.0]}), {"R2"})[0]["value"] == 50.0

"""Live figures and alerts, on small frames whose answers are known."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from monitoring.live import by_month, demand_figures, early_loss_ratios, judge, label_scores, segment_figures
from monitoring.policy import MonitoringPolicy
from training.evaluate import calibration_error


def test_labels_join_on_the_entity_and_the_day_it_was_scored_and_unlanded_labels_are_left_out():
    # The records came with a label of their own (a client sent view rows whole): the store's label wins.
    scores = pd.DataFrame({"opportunity_id": ["a", "b", "c", "a"], "prediction": [0.9, 0.2, 0.5, 0.1],
                           "label_lost_30d": [0, 1, 1, 1],
                           "time": pd.to_datetime(["2024-01-31 10:00", "2024-01-31 11:00", "2024-01-31 12:00",
                                                   "2024-02-29 09:00"])})
    labels = pd.DataFrame({"opportunity_id": ["a", "b", "c", "a"], "label_lost_30d": [1, 0, None, 0],
                           "cutoff": pd.to_datetime(["2024-01-31", "2024-01-31", "2024-01-31", "2024-02-29"])})
    out = label_scores(scores, labels, "opportunity_id", "label_lost_30d")
    assert sorted(zip(out["opportunity_id"], out["month"], out["actual"], strict=True)) == [
        ("a", "2024-01", 1), ("a", "2024-02", 0), ("b", "2024-01", 0)]
    months = by_month("risk", out)
    assert [m["month"] for m in months] == ["2024-01", "2024-02"] and months[0]["roc_auc"] == 1.0


def test_calibration_error_is_zero_for_calibrated_bins_and_the_gap_otherwise():
    y = np.array([0, 1] * 50)
    assert calibration_error(y, np.full(100, 0.5)) == pytest.approx(0.0)
    assert calibration_error(y, np.full(100, 0.8)) == pytest.approx(0.3)


def test_each_crossed_threshold_is_an_alert_with_its_figures():
    policy = MonitoringPolicy(min_outcomes=10)
    risk = [{"month": "2024-03", "labelled": 200, "roc_auc": 0.70, "calibration_error": 0.15},
            {"month": "2024-04", "labelled": 5, "roc_auc": 0.40, "calibration_error": 0.5}]  # too few: not judged
    alerts = judge("t", "risk", risk, {"roc_auc": 0.80}, {"drifted_share": 0.5, "drifted_features": ["x", "y"],
                                                           "prediction_drifted": True, "month": "2024-04"}, policy)
    assert [a["alert"] for a in alerts] == ["live_metric", "calibration", "drift", "prediction_drift"]
    assert alerts[0]["month"] == "2024-03" and alerts[0]["threshold"] == pytest.approx(0.75)
    assert "x, y" in alerts[2]["message"]
    assert judge("t", "risk", risk[:1], {"roc_auc": 0.72}, None,
                 MonitoringPolicy(min_outcomes=10, max_calibration_error=0.2)) == []
    # A change confined to one region: the population barely moves, the region does.
    regional = {"drifted_share": 0.1, "drifted_features": ["x"], "month": "2024-04", "segments": [
        {"column": "region", "value": "EMEA", "reference_rows": 150, "current_rows": 160, "drifted_share": 0.45,
         "drifted_features": ["competitor_news", "discount"]},
        {"column": "region", "value": "NA", "reference_rows": 300, "current_rows": 310, "drifted_share": 0.05,
         "drifted_features": []}]}
    (alert,) = judge("t", "risk", [], {}, regional, policy)
    assert alert["alert"] == "segment_drift" and alert["value"] == 0.45
    assert "region EMEA" in alert["message"] and "competitor_news, discount" in alert["message"]

    demand = [{"month": "2024-03", "labelled": 50, **demand_figures(np.array([10.0] * 50), np.full(50, 1.0),
                                                                    np.full(50, 13.0), np.full(50, 20.0))}]
    found = {a["alert"] for a in judge("d", "demand", demand, {"wape": 0.2}, None, policy)}
    assert found == {"live_metric", "intervals"}  # WAPE 0.30 > 0.22; the interval covered every sale (> 90%)


def test_segment_migration_counts_accounts_whose_segment_changed_since_the_month_before():
    before = pd.DataFrame({"account_id": ["a", "b", "c", "d"], "segment": [0, 0, 1, 1],
                           "time": pd.to_datetime(["2024-01-31"] * 4)})
    now = pd.DataFrame({"account_id": ["a", "b", "c", "e"], "segment": [0, 1, 1, -1],
                        "time": pd.to_datetime(["2024-02-29"] * 4)})
    figures = segment_figures(now, before)
    assert figures["compared"] == 3 and figures["migration_share"] == pytest.approx(1 / 3)
    assert figures["migration"] == {"0->1": 1} and figures["noise_share"] == 0.25
    alerts = judge("s", "segments", [{"month": "2024-02", **figures}], {}, None,
                   MonitoringPolicy(min_outcomes=1, max_migration_share=0.2))
    assert [a["alert"] for a in alerts] == ["live_metric"]


def _early(losses_per_region: dict[str, int], rows: int = 400, p: float = 0.1) -> pd.DataFrame:
    """``rows`` scores of risk ``p`` per region, of which the first ``losses`` were already lost."""
    parts = [pd.DataFrame({"region": region, "prediction": p, "actual": (np.arange(rows) < lost).astype(int)})
             for region, lost in losses_per_region.items()]
    return pd.concat(parts, ignore_index=True)


def test_early_losses_follow_each_regions_share_of_the_predicted_risk():
    even = {r["value"]: r for r in early_loss_ratios(_early({"A": 12, "B": 12, "C": 12, "D": 12}), "region")}
    assert set(even) == set("ABCD") and all(r["ratio"] == pytest.approx(1.0) for r in even.values())
    assert all(r["expected"] == pytest.approx(12.0) and r["p_value"] > 0.4 for r in even.values())
    hit = {r["value"]: r for r in early_loss_ratios(_early({"A": 40, "B": 12, "C": 12, "D": 12}), "region")}
    # 76 losses, a quarter of the predicted risk each: A's 40 are 2.1 times its 19 expected, and very unlikely.
    assert hit["A"]["ratio"] == pytest.approx(40 / 19) and hit["A"]["p_value"] < 1e-5
    assert hit["B"]["ratio"] < 1 and hit["B"]["p_value"] > 0.9
    # A region with too little predicted risk to expect 5 losses is not judged.
    small = early_loss_ratios(_early({"A": 3, "B": 3}, rows=20), "region")
    assert small == []


def test_a_region_losing_far_more_than_its_share_alerts_and_a_chance_excess_does_not():
    policy = MonitoringPolicy()
    for losses, alerts in (({"A": 40, "B": 12, "C": 12, "D": 12}, 1), ({"A": 19, "B": 12, "C": 12, "D": 12}, 0)):
        parts = [{"column": "region", **r} for r in early_loss_ratios(_early(losses), "region")]
        early = {"scored_at": "2025-05-31", "month": "2025-05", "elapsed_days": 30, "segments": parts}
        found = [a for a in judge("t", "risk", [], {}, None, policy, early) if a["alert"] == "early_outcomes"]
        assert len(found) == alerts, (losses, found)
        assert all("region A" in a["message"] and a["value"] > policy.max_early_loss_ratio for a in found)

"""The backtest's pure steps: ground-truth labels, the ROI of flagged deals, the inventory cost of a forecast and
the no-model forecast, on small frames whose answers are worked out by hand."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest

from monitoring.backtest import (
    BacktestConfig,
    caught_deals,
    churn_labels,
    inventory_cost,
    risk_labels,
    seasonal_naive,
    segment_month_figures,
    value_month_figures,
)

DEALS = pd.DataFrame({
    "opportunity_id": ["A", "B", "C", "D"],
    "amount": [100.0, 200.0, 400.0, 800.0],
    "closed_at": pd.to_datetime(["2025-02-20", "2025-02-10", "2025-04-15", None]),
})
# C was recorded won but truly lost (biased labels): ground truth decides.
TRUTH = pd.DataFrame({"opportunity_id": ["A", "B", "C", "D"], "true_outcome": ["lost", "lost", "lost", None]})


def test_labels_come_from_the_true_outcome_within_the_horizon():
    y = risk_labels(DEALS, TRUTH, ["A", "B", "C", "D"], date(2025, 1, 31), horizon=30)
    assert y.tolist() == [1, 1, 0, 0]  # C closes 74 days later; D never closes
    assert risk_labels(DEALS, TRUTH, ["C"], date(2025, 1, 31), horizon=90).tolist() == [1]


def test_an_account_churns_when_it_completes_no_order_within_the_horizon():
    purchases = pd.DataFrame({"account_id": ["a", "a", "b", "c"], "order_value": [10.0, 5.0, 7.0, 3.0],
                              "order_date": pd.to_datetime(["2025-01-20", "2025-02-15", "2025-04-20", "2025-01-31"])})
    # a orders 15 days later; b 79 days later; c only on the day scored, which is not after it; d never.
    y = churn_labels(purchases, ["a", "b", "c", "d"], date(2025, 1, 31), horizon=30)
    assert y.tolist() == [0, 1, 1, 1]
    assert churn_labels(purchases, ["b"], date(2025, 1, 31), horizon=90).tolist() == [0]


def test_value_figures_add_the_ranking_to_monitorings_live_figures():
    actual, predicted = np.array([0.0, 10.0, 30.0, 60.0, 100.0]), np.array([1.0, 5.0, 40.0, 50.0, 90.0])
    out = value_month_figures(actual, predicted, (actual > 0).astype(float), np.array([0.1, 0.9, 0.9, 1.0, 1.0]))
    assert np.isclose(out["wape"], (1 + 5 + 10 + 10 + 10) / 200.0)
    assert np.isclose(out["spearman"], 1.0)  # the same order
    assert np.isclose(out["top20_capture"], 0.5)  # the top account by prediction holds 100 of 200
    assert out["labelled"] == 5


def test_segment_figures_are_label_invariant_and_count_the_unassigned():
    truth = pd.Series(["x", "x", "y", "y", "z", "z"], index=list("abcdef"))
    labels = pd.Series([3, 3, 7, 7, -1, -1], index=list("abcdef"))  # z's accounts unassigned: still one group
    out = segment_month_figures(labels, truth, previous=None)
    assert np.isclose(out["ari"], 1.0) and out["segments"] == 2 and np.isclose(out["noise_share"], 1 / 3)
    assert "stability_ari" not in out
    moved = pd.Series([3, 7, 7, 7, -1, -1], index=list("abcdef"))
    again = segment_month_figures(moved, truth, previous=labels.rename(index=str))
    assert again["ari"] < 1.0 and again["stability_ari"] < 1.0
    renamed = segment_month_figures(labels.replace({3: 0, 7: 1}), truth, previous=labels)
    assert np.isclose(renamed["stability_ari"], 1.0)  # new ids for the same groups: no migration
    assert segment_month_figures(labels.iloc[:0], truth, None)["labelled"] == 0


def test_a_lost_deal_counts_as_caught_only_when_flagged_early_enough():
    scores = pd.DataFrame({
        "opportunity_id": ["A", "B", "C", "A", "D"],
        "day": pd.to_datetime(["2025-01-31", "2025-01-31", "2025-01-31", "2025-02-28", "2025-01-31"]),
        "probability": [0.9, 0.2, 0.8, 0.9, 0.7],
    })
    out = caught_deals(scores, DEALS, TRUTH, threshold=0.5, lead_days=30, first=date(2025, 2, 1),
                       last=date(2025, 4, 30))
    # A: flagged on 31 January, lost 20 days later: too late to act. B: never flagged. C: flagged 74 days ahead.
    assert (out["lost_deals"], out["caught_deals"], out["missed_deals"]) == (3, 1, 2)
    assert out["caught_value"] == 400.0 and out["missed_value"] == 300.0 and out["lost_value"] == 700.0
    assert out["caught_share"] == pytest.approx(400 / 700)
    assert (out["false_alarms"], out["false_alarm_value"]) == (1, 800.0)  # D, still open, was flagged
    assert "at least 30 days" in out["how"]
    lenient = caught_deals(scores, DEALS, TRUTH, threshold=0.5, lead_days=0, first=date(2025, 2, 1),
                           last=date(2025, 4, 30))
    assert lenient["caught_deals"] == 2


def test_the_inventory_rule_costs_shortfalls_and_leftovers():
    weeks = pd.to_datetime(["2025-02-03", "2025-02-10"])
    forecast = pd.DataFrame({"product_id": ["P1", "P1", "P2", "P2"], "day": date(2025, 1, 31),
                             "week_start": list(weeks) * 2, "p50": [5.0, 5.0, 10.0, 10.0]})
    demand = pd.DataFrame({"product_id": ["P1", "P1", "P2", "P2"], "week_start": list(weeks) * 2,
                           "demand_units": [8, 6, 4, 4]})
    out = inventory_cost(forecast, demand, pd.Series({"P1": 10.0, "P2": 2.0}), stockout_cost=0.3, holding_cost=0.1)
    # P1 stocked 10, demanded 14: 4 short at 10 x 0.3; P2 stocked 20, demanded 8: 12 over at 2 x 0.1.
    assert (out["units_short"], out["units_over"]) == (4.0, 12.0)
    assert out["stockout_cost"] == pytest.approx(12.0) and out["holding_cost"] == pytest.approx(2.4)
    assert out["total_cost"] == pytest.approx(14.4)


def test_seasonal_naive_repeats_last_season_or_the_last_value():
    ds = pd.date_range("2024-01-01", periods=6, freq="W-MON")
    history = pd.DataFrame({"unique_id": "S", "ds": ds, "y": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]})
    out = seasonal_naive(history, weeks=3, season=4, freq="W-MON")
    assert out["p50"].tolist() == [3.0, 4.0, 5.0] and out["ds"].iloc[0] == ds[-1] + pd.Timedelta(days=7)
    short = seasonal_naive(history, weeks=2, season=52, freq="W-MON")
    assert short["p50"].tolist() == [6.0, 6.0]


def test_the_config_reads_a_month_and_names_its_month_ends():
    config = BacktestConfig(start="2025-01", months=3)
    assert config.month_ends() == [date(2024, 12, 31), date(2025, 1, 31), date(2025, 2, 28), date(2025, 3, 31)]
    assert config.months_backtested() == ["2025-01", "2025-02", "2025-03"]
    with pytest.raises(ValueError, match="YYYY-MM"):
        BacktestConfig(start="2025-13")
    assert np.isclose(BacktestConfig(start=date(2025, 5, 17)).start.day, 1)

"""Demand audits: baselines, interval coverage, the price response, explanations."""

from __future__ import annotations

import pytest

from monitoring.demand_audits import (
    audit_baselines,
    audit_demand_explanations,
    audit_intervals,
    audit_monotone_price,
)
from monitoring.policy import BaselinesPolicy, ExplanationsPolicy, IntervalsPolicy, MonotonePricePolicy
from tests.training.demand_series import synthetic_demand
from training.demand import DemandConfig, DemandForecaster, make_series_frame, params_from_values

QUICK = {"family": "lightgbm", "lags": "recent", "windows": "none", "transform": "log", "rounds": 80,
         "lgb_learning_rate": 0.1, "lgb_num_leaves": 15, "lgb_min_child_samples": 10,
         "lgb_colsample_bytree": 0.9, "lgb_subsample": 0.9, "lgb_reg_lambda": 1.0}


@pytest.fixture(scope="module")
def model():
    rows, _ = synthetic_demand(series=6, weeks=90, seed=5)
    series = make_series_frame(rows, id_column="product_id", time_column="week_start", target="units",
                               config=DemandConfig(holiday_column=None))
    return DemandForecaster(params_from_values(QUICK, 600), horizon=6, max_horizon=12).fit(series)


def test_baselines_judge_the_ratio_to_the_best_baseline_of_the_run():
    metrics = {"test_wape_mean_window": 0.05, "baseline_seasonal_naive_wape": 0.056, "baseline_auto_ets_wape": 0.07}
    passed = audit_baselines(metrics, BaselinesPolicy(max_ratio=0.95))
    assert passed.status == "pass" and passed.figures["best_baseline"] == "seasonal_naive"
    assert passed.figures["ratio"] == pytest.approx(0.05 / 0.056)
    failed = audit_baselines({**metrics, "test_wape_mean_window": 0.06}, BaselinesPolicy(max_ratio=0.95))
    assert failed.status == "fail" and "1.07 x the best baseline's (seasonal_naive" in failed.reason
    assert audit_baselines({"test_wape_mean_window": 0.05}, BaselinesPolicy()).status == "fail"


def test_intervals_outside_the_band_need_review():
    policy = IntervalsPolicy(min_coverage=0.75, max_coverage=0.85)
    assert audit_intervals({"test_coverage_80": 0.80}, policy).status == "pass"
    wide = audit_intervals({"test_coverage_80": 0.93}, policy)
    assert wide.status == "review" and "93.0%" in wide.reason
    with pytest.raises(ValueError, match="min_coverage is above max_coverage"):
        IntervalsPolicy(min_coverage=0.9, max_coverage=0.8)


def test_the_price_check_passes_a_sign_constrained_model_and_fails_one_that_sells_more_when_dearer(model):
    policy = MonotonePricePolicy()
    passed = audit_monotone_price(model, policy, 6)
    assert passed.status == "pass" and passed.figures["violation_share"] == 0.0
    assert passed.figures["demand_ratio_highest_to_lowest_price"] < 1.0
    broken = DemandForecaster(model.params, horizon=6, max_horizon=12)
    broken.__dict__.update(model.__dict__)
    broken.price_effects_ = {k: {**v, "own": 1.5} for k, v in model.price_effects_.items()}
    failed = audit_monotone_price(broken, policy, 6)
    assert failed.status == "fail" and failed.figures["violation_share"] == 1.0


def test_explanations_rank_the_booster_features_and_list_the_elasticities(model):
    result = audit_demand_explanations(model, ExplanationsPolicy())
    assert result.status == "pass" and result.figures["top"][0] in model.features_
    assert result.figures["elasticity"]["max"] <= 0
    assert len(result.tables["price elasticities"]) == 6

"""The lifetime-value trainer on the simulator: both models judged on the holdout, files, point in time."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest

from features.sources.simulator import SimulationConfig, simulate_organisation
from tests.features.test_views import load_store, truncate_after
from training.value import (
    ClvModel,
    InsufficientValueDataError,
    ValueConfig,
    ValueModel,
    load_value_data,
    split_cutoffs,
    summarise_purchases,
    top_share,
    train_value_model,
)

QUICK = ValueConfig(trials=2, families=["lightgbm"], max_estimators=400, early_stopping_rounds=30)


@pytest.fixture(scope="module")
def value_data():
    org = simulate_organisation(SimulationConfig(accounts=800, months=24, seed=7))
    store = load_store(org.tables)
    try:
        yield load_value_data(store, "customer_value", QUICK), org
    finally:
        store.close()


@pytest.fixture(scope="module")
def trained(value_data, tmp_path_factory):
    data, _ = value_data
    storage = f"sqlite:///{tmp_path_factory.mktemp('value') / 'optuna.db'}"
    return train_value_model(data, QUICK, storage, "value-test")


def test_the_holdout_judges_both_models_beside_the_rfm_baseline_and_the_naive_forecast(trained):
    m = trained.metrics
    assert trained.windows["test_cutoff"] == "2025-08-31"  # the latest month end whose 90 days have happened
    # BG/NBD's repeat purchases in the holdout: close in total, and closer per account than the naive forecast.
    assert m["holdout_purchases_expected"] == pytest.approx(m["holdout_purchases_actual"], rel=0.05)
    assert m["purchases_mae"] < m["purchases_naive_mae"]
    # The registered (probabilistic) model ranks next-period value better than RFM alone.
    assert m["test_spearman"] == m["probabilistic_spearman"]
    assert m["test_spearman"] > m["rfm_baseline_spearman"], m
    assert m["test_top20_capture"] > 0.6
    for name in ("probabilistic", "booster", "rfm_baseline"):
        for key in ("mae", "wape", "spearman", "top10_capture", "top20_capture", "total_ratio"):
            assert np.isfinite(m[f"{name}_{key}"]), (name, key)
    table = trained.calibration
    assert list(table["label"])[-1] == "6+" and table["customers"].sum() == m["customers_fitted"]
    assert trained.tracking["actual"].is_monotonic_increasing
    assert trained.tracking["expected"].iloc[-1] == pytest.approx(m["holdout_purchases_expected"])


def test_value_model_outputs_and_bands(trained):
    model = trained.model
    out = model.predict(model.accounts[:50], 180)
    assert list(out.columns) == ["account_id", "expected_purchases", "expected_spend", "expected_value", "p_alive",
                                 "ltv", "value_band"]
    assert ((out["p_alive"] > 0) & (out["p_alive"] <= 1)).all()
    assert (out["expected_value"] >= 0).all() and (out["ltv"] >= 0).all()
    shorter = model.predict(model.accounts[:50], 30)
    assert (shorter["expected_purchases"] <= out["expected_purchases"] + 1e-12).all()
    every = model.predict(model.accounts)
    shares = every["value_band"].value_counts(normalize=True)
    assert shares["high"] == pytest.approx(0.2, abs=0.02) and shares["low"] == pytest.approx(0.5, abs=0.02)
    with pytest.raises(KeyError):
        model.predict(["no-such-account"])


def test_saved_files_reload_to_the_same_predictions(trained, tmp_path):
    digests = trained.model.save(tmp_path / "model")
    assert set(digests) == {"value.json", "accounts.parquet"}  # no pickle
    loaded = ValueModel.load(tmp_path / "model")
    accounts = list(trained.model.accounts[:100])
    pd.testing.assert_frame_equal(loaded.predict(accounts), trained.model.predict(accounts))


def test_a_booster_is_registered_when_the_config_names_it(value_data, tmp_path):
    data, _ = value_data
    config = QUICK.model_copy(update={"model": "booster", "trials": 1})
    result = train_value_model(data, config, f"sqlite:///{tmp_path / 'o.db'}", "booster")
    assert result.metrics["test_spearman"] == result.metrics["booster_spearman"]
    model = result.model
    digests = model.save(tmp_path / "model")
    assert {"booster.txt", "features.parquet"} <= set(digests)
    loaded = ValueModel.load(tmp_path / "model")
    accounts = list(model.accounts[:100])
    np.testing.assert_allclose(loaded.predict(accounts)["expected_value"], model.predict(accounts)["expected_value"])
    with pytest.raises(ValueError, match="booster of the next 90 days"):
        model.predict(accounts, 30)


def test_summaries_are_point_in_time(small_org):
    """A value estimate as of W reads nothing after W: summaries, the fit and the view rows are unchanged when every
    row after W is deleted."""
    org = small_org
    cutoff = date(2024, 6, 30)
    config = QUICK.model_copy(update={"as_of": cutoff})
    full, past = load_store(org.tables), load_store(truncate_after(org.tables, cutoff))
    try:
        a, b = load_value_data(full, "customer_value", config), load_value_data(past, "customer_value", config)
    finally:
        full.close()
        past.close()
    pd.testing.assert_frame_equal(a.task.frame.reset_index(drop=True), b.task.frame.reset_index(drop=True))
    sa, sb = (summarise_purchases(d.purchases, pd.Timestamp(cutoff)) for d in (a, b))
    pd.testing.assert_frame_equal(sa, sb)
    fa, fb = (ClvModel.fit(s, pd.Timestamp(cutoff), unit_days=7.0) for s in (sa, sb))
    assert fa.parameters() == fb.parameters()


def test_too_short_a_history_is_refused_with_the_reason():
    months = pd.date_range("2025-01-31", periods=5, freq="ME")
    with pytest.raises(InsufficientValueDataError, match="5 labelled month ends"):
        split_cutoffs(months, 90, 2)
    test, valid, train = split_cutoffs(pd.date_range("2024-01-31", periods=12, freq="ME"), 90, 2)
    assert test == pd.Timestamp("2024-12-31") and all(v + pd.Timedelta(days=90) <= test for v in valid)
    assert all(t + pd.Timedelta(days=90) <= valid[0] for t in train)


def test_top_share_is_the_revenue_the_ranking_captures():
    actual = np.array([100.0, 0, 0, 0, 0, 0, 0, 0, 0, 0])
    assert top_share(actual, np.arange(10)[::-1], 0.1) == 1.0
    assert top_share(actual, np.arange(10), 0.1) == 0.0

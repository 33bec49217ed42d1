"""Training building blocks: preprocessing, calibration, native artifacts, search resume, metrics, reasons."""

from __future__ import annotations

import json
import re

import numpy as np
import optuna
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from features.views import ViewConfig, customer_columns, opportunity_columns
from training.calibration import Calibrator, choose_calibrator
from training.evaluate import classification_metrics, early_warning, roc_auc_interval, threshold_at_precision
from training.explain import reason_codes, reasons_from_contributions, sentence_for
from training.models import (
    LIBRARY_VERSION,
    IncompatibleModelError,
    RiskModel,
    fit_estimator,
    make_estimator,
    native_booster,
    verify_digests,
)
from training.preprocess import TabularPreprocessor
from training.search import (
    PRUNING_WARMUP_STEPS,
    ProgressSteps,
    SearchData,
    SearchSettings,
    fit_trial_model,
    make_objective,
    make_pruner,
    open_study,
    params_from_trial,
    run_study,
)


def _toy(n: int = 600, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = pd.DataFrame({"meetings_30d": rng.poisson(3, n).astype(float), "meetings_prev_30d": rng.poisson(3, n),
                      "discount": rng.uniform(0, 0.4, n), "stage": rng.choice(["lead", "proposal", "negotiation"], n)})
    logit = -1 + 0.8 * (x["meetings_prev_30d"] - x["meetings_30d"]) + 4 * x["discount"] + (x["stage"] == "lead")
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return x, y.to_numpy()


def test_preprocessor_round_trips_and_handles_unseen_categories():
    x, _ = _toy()
    pre = TabularPreprocessor(["meetings_30d", "meetings_prev_30d", "discount"], ["stage"]).fit(x)
    again = TabularPreprocessor.from_dict(pre.to_dict())
    unseen = x.head(3).assign(stage=["lead", "mystery", None])
    out = again.transform(unseen)
    assert out["stage"].iloc[0] == pre.categories_["stage"].index("lead")
    assert np.isnan(out["stage"].iloc[1]) and np.isnan(out["stage"].iloc[2])
    pd.testing.assert_frame_equal(pre.transform(x), again.transform(x))
    with pytest.raises(ValueError, match="discount"):
        pre.transform(x.drop(columns="discount"))
    records = unseen.astype(object).where(unseen.notna(), None).to_dict("records")
    np.testing.assert_array_equal(again.transform_records(records), out.to_numpy())
    np.testing.assert_array_equal(pre.transform_records(x.to_dict("records")), pre.transform(x).to_numpy())


def test_calibrators_are_monotone_round_trip_and_the_better_brier_wins():
    rng = np.random.default_rng(1)
    raw = rng.uniform(0, 1, 3000)
    y = (rng.random(3000) < raw**2).astype(int)  # raw scores overstate the risk
    chosen, briers = choose_calibrator(raw, y)
    assert chosen.method == min(briers, key=briers.get)
    calibrated = chosen.predict(raw)
    assert np.mean((calibrated - y) ** 2) < np.mean((raw - y) ** 2)
    again = Calibrator.from_dict(chosen.to_dict())
    np.testing.assert_allclose(again.predict(raw), calibrated)
    grid = np.linspace(0, 1, 50)
    assert np.all(np.diff(again.predict(grid)) >= -1e-12)


def test_isotonic_calibration_keeps_the_booster_ranking():
    rng = np.random.default_rng(2)
    raw = rng.uniform(0, 1, 2000)
    y = (rng.random(2000) < raw**2).astype(int)
    iso = Calibrator("isotonic").fit(raw, y)
    calibrated = iso.predict(raw)
    assert len(np.unique(np.interp(raw, iso.x_, iso.y_))) < 200  # the plain step function ties most scores
    assert np.all(np.diff(iso.predict(np.sort(raw))) > 0)  # the tie-broken one ties none
    assert roc_auc_score(y, calibrated) == roc_auc_score(y, raw)
    assert np.max(np.abs(calibrated - np.interp(raw, iso.x_, iso.y_))) <= 1e-4
    old = iso.to_dict()
    del old["tie_break"]  # an artifact saved before tie-breaking predicts as it did
    np.testing.assert_array_equal(Calibrator.from_dict(old).predict(raw), np.interp(raw, iso.x_, iso.y_))


@pytest.mark.parametrize("family", ["lightgbm", "xgboost"])
def test_native_artifact_gives_identical_predictions_and_checks_digests(tmp_path, family):
    x, y = _toy()
    pre = TabularPreprocessor(["meetings_30d", "meetings_prev_30d", "discount"], ["stage"]).fit(x)
    est = make_estimator(family, {}, threads=1, seed=0, n_estimators=50)
    est = fit_estimator(est, family, pre.transform(x), y, None, ["stage"], 10)
    cal = Calibrator("sigmoid").fit(est.predict_proba(pre.transform(x))[:, 1], y)
    model = RiskModel(family, native_booster(est, family), pre, cal, {"task": "toy", "alert_threshold": 0.5})
    digests = model.save(tmp_path / "m")
    assert not list((tmp_path / "m").glob("*.pkl"))
    loaded = RiskModel.load(tmp_path / "m", expected=digests)
    np.testing.assert_allclose(loaded.predict_proba(x), model.predict_proba(x), rtol=0, atol=1e-12)
    contrib = loaded.contributions(x.head(5))
    assert list(contrib.columns) == pre.feature_names_
    (tmp_path / "m" / "model.json").write_text((tmp_path / "m" / "model.json").read_text().replace("toy", "t0y"))
    with pytest.raises(ValueError, match="model.json"):
        verify_digests(tmp_path / "m", digests)
    p, values = loaded.explain_matrix(pre.transform_records(x.head(50).to_dict("records")))
    np.testing.assert_allclose(p, model.predict_proba(x.head(50)), rtol=0, atol=1e-6)
    np.testing.assert_allclose(values, loaded.contributions(x.head(50)).to_numpy(), rtol=0, atol=1e-9)
    fast, _ = loaded.explain_matrix(pre.transform_records(x.head(50).to_dict("records")), approximate=True)
    np.testing.assert_allclose(fast, p, rtol=0, atol=1e-5)  # path-based contributions keep the same sum (float32)
    reasons = reason_codes(loaded, x.head(4), k=2)
    assert all(1 <= len(r) <= 2 for r in reasons)
    assert {r["direction"] for rs in reasons for r in rs} <= {"raises_risk", "lowers_risk"}


@pytest.mark.parametrize("family", ["lightgbm", "xgboost"])
def test_a_booster_written_by_a_newer_library_is_refused_not_misread(tmp_path, family):
    x, y = _toy()
    pre = TabularPreprocessor(["meetings_30d", "discount"], ["stage"]).fit(x)
    est = fit_estimator(make_estimator(family, {}, threads=1, seed=0, n_estimators=5), family, pre.transform(x), y,
                        None, ["stage"], 5)
    model = RiskModel(family, native_booster(est, family), pre, Calibrator("sigmoid").fit(
        est.predict_proba(pre.transform(x))[:, 1], y), {"task": "toy"})
    model.save(tmp_path / "m")
    spec_file = tmp_path / "m" / "model.json"
    spec = json.loads(spec_file.read_text())
    assert spec["library_version"] == LIBRARY_VERSION[family]
    RiskModel.load(tmp_path / "m")  # the same release reads it
    spec["library_version"] = "99.1.0"
    spec_file.write_text(json.dumps(spec))
    with pytest.raises(IncompatibleModelError, match=rf"written by {family} 99.1.0.*this environment has {family} "
                                                     rf"{re.escape(LIBRARY_VERSION[family])}.*{family}>=99.1.0"):
        RiskModel.load(tmp_path / "m")
    if family == "xgboost":  # saved before artifacts recorded the release: the booster file's own record counts
        del spec["library_version"]
        spec_file.write_text(json.dumps(spec))
        booster = json.loads((tmp_path / "m" / "booster.json").read_text())
        booster["version"] = [99, 1, 0]
        (tmp_path / "m" / "booster.json").write_text(json.dumps(booster))
        with pytest.raises(IncompatibleModelError, match="99.1.0"):
            RiskModel.load(tmp_path / "m")


def test_reason_sentences_are_readable():
    row = pd.Series({"meetings_30d": 1, "meetings_prev_30d": 6, "dm_departures": 1, "discount": 0.25,
                     "stage": "proposal", "days_in_stage": 47.2, "mystery_feature": 3.14159})
    assert sentence_for("meetings_30d", row) == "meetings in the last 30 days fell from 6 to 1"
    assert sentence_for("discount", row) == "discount requested is 25%"
    assert sentence_for("days_in_stage", row) == "47 days in stage proposal"
    assert sentence_for("mystery_feature", row) == "mystery feature is 3.14"
    record = {"dm_departures": None, "mystery_feature": None}  # a request's record, missing values as None
    assert sentence_for("dm_departures", record) == ("an unknown number of decision makers left the account in the "
                                                     "last 90 days")
    assert sentence_for("mystery_feature", record) == "mystery feature is unknown"


def test_every_feature_of_the_views_has_a_sentence_of_its_own():
    config = ViewConfig(activity_windows=[14, 45], trend_days=45, rfm_windows=[60, 180])  # windows come from names
    columns = opportunity_columns(config) + customer_columns(config, ["Office Supplies", "Cloud"])
    features = [c.name for c in columns if c.role in ("feature", "sensitive")]
    generic = [f for f in features if sentence_for(f, {}) == f"{f.replace('_', ' ')} is unknown"]
    assert generic == []
    row = {"emails_in_14d": 1, "emails_out_14d": 3, "meetings_45d": 1, "meetings_prev_45d": 4, "calls_prev_45d": 2,
           "age_days": 272.0, "amount": 45210.0, "annual_revenue": 4.5e7, "is_customer": False,
           "customer_tenure_days": None, "marketing_opt_in": np.bool_(True), "payment_terms": "net 30",
           "share_office_supplies": 0.25, "value_prev_60d": 1234.0, "stage": "proposal", "rep_closed_deals": 1,
           "assoc_rules": 1, "days_since_last_activity": float("nan"), "mystery": 4.5e7, "flag": True}
    expected = {
        "emails_in_14d": "1 e-mail from the customer in the last 14 days",
        "emails_out_14d": "3 e-mails to the customer in the last 14 days",
        "meetings_45d": "meetings in the last 45 days fell from 4 to 1",
        "meetings_trend_45d": "meetings in the last 45 days fell from 4 to 1",
        "calls_prev_45d": "2 calls in the 45 days before the last 45",
        "age_days": "the deal was opened 272 days ago",
        "amount": "the deal is worth 45,210",
        "annual_revenue": "the account's annual revenue is 45,000,000",
        "is_customer": "the account is not a customer yet",
        "customer_tenure_days": "the account is not a customer yet",
        "marketing_opt_in": "the account has opted in to marketing",
        "payment_terms": "the account's payment terms are net 30",
        "share_office_supplies": "25% of recent spend went to office supplies",
        "value_prev_60d": "bought 1,234 in the 60 days before the last 60",
        "stage": "the deal is in stage proposal",
        "rep_closed_deals": "the owner has closed 1 deal so far",
        "assoc_rules": "1 cross-sell rule applies to the account",
        "days_since_last_activity": "no activity on the deal yet",
        "mystery": "mystery is 45,000,000",  # an imported task's own feature: the generic sentence, readable
        "flag": "flag is yes",
    }
    assert {f: sentence_for(f, row) for f in expected} == expected


def test_batch_reasons_are_the_largest_contributions_with_each_rows_own_sentence():
    rng = np.random.default_rng(3)
    names = ["meetings_30d", "discount", "mystery_feature", "dm_departures", "age_days"]
    values = rng.normal(size=(200, len(names)))
    values[0] = [0.0, 0.0, 0.5, 0.0, 0.0]  # a single non-zero contribution gives a single reason
    rows = [{"meetings_30d": i % 4, "meetings_prev_30d": 3, "discount": 0.01 * (i % 30), "mystery_feature": i,
             "dm_departures": 1, "age_days": 10.0} for i in range(200)]
    reasons = reasons_from_contributions(values, names, rows, k=3)
    assert [r["feature"] for r in reasons[0]] == ["mystery_feature"]
    for i in range(1, 200):
        expected = [names[j] for j in np.argsort(-np.abs(values[i]), kind="stable")[:3]]
        assert [r["feature"] for r in reasons[i]] == expected
        for r in reasons[i]:
            assert r["sentence"] == sentence_for(r["feature"], rows[i])
            assert r["direction"] == ("raises_risk" if r["contribution"] > 0 else "lowers_risk")
    assert reasons_from_contributions(values[:, :2], names[:2], rows, k=3)[5][0]["feature"] in names[:2]


def test_metrics_and_threshold_at_precision():
    y = np.array([1, 1, 1, 0, 1, 0, 0, 0, 0, 0])
    p = np.linspace(0.95, 0.05, 10)
    m = classification_metrics(y, p, "test_")
    assert m["test_precision_top_decile"] == 1.0 and m["test_lift_top_decile"] == pytest.approx(2.5)
    t = threshold_at_precision(y, p, 0.75)
    assert (y[p >= t].mean() >= 0.75) and t == pytest.approx(p[4])


def test_roc_auc_interval_is_the_weighted_auc_of_its_draws_and_widens_for_repeated_entities():
    rng = np.random.default_rng(3)
    y = (rng.random(2000) < 0.3).astype(int)
    p = np.round(0.4 * y + rng.random(2000), 2)  # rounded: many tied scores
    # One draw: the interval collapses to that draw's AUC, which must be scikit-learn's weighted AUC.
    weights = np.bincount(np.random.default_rng(11).integers(0, 2000, 2000), minlength=2000)
    low, high = roc_auc_interval(y, p, resamples=1, seed=11)
    assert low == high == pytest.approx(roc_auc_score(y, p, sample_weight=weights), abs=1e-12)

    point = roc_auc_score(y, p)
    low, high = roc_auc_interval(y, p, seed=0)
    assert low < point < high and 0.02 < high - low < 0.08
    small_low, small_high = roc_auc_interval(y[:200], p[:200], seed=0)
    assert small_high - small_low > 2 * (high - low)  # ten times fewer rows: about three times as wide

    # Each entity scored at four cutoffs with the same outcome: drawing rows would pretend to 8,000 independent
    # rows; drawing entities gives back the width of the 2,000 entities.
    entity = np.repeat(np.arange(2000), 4)
    y4, p4 = np.repeat(y, 4), np.repeat(p, 4)
    rows_low, rows_high = roc_auc_interval(y4, p4, seed=0)
    group_low, group_high = roc_auc_interval(y4, p4, groups=entity, seed=0)
    assert group_high - group_low == pytest.approx(high - low, rel=0.25)
    assert group_high - group_low > 1.6 * (rows_high - rows_low)
    assert np.isnan(roc_auc_interval(np.zeros(10), rng.random(10))[0])


def test_early_warning_counts_deals_flagged_thirty_days_before_close():
    outcomes = pd.DataFrame({"opportunity_id": ["a", "b", "c", "d"],
                             "closed_at": pd.to_datetime(["2025-03-20", "2025-03-20", "2025-02-10", "2025-03-01"]),
                             "outcome": ["lost", "lost", "lost", "won"]})
    rows = pd.DataFrame({
        "opportunity_id": ["a", "a", "b", "b", "c", "d"],
        "cutoff": pd.to_datetime(["2025-01-31", "2025-02-28", "2025-01-31", "2025-02-28", "2025-01-31", "2025-01-31"]),
        "probability": [0.9, 0.9, 0.1, 0.9, 0.9, 0.8],
        "label_lost_90d": [1, 1, 1, 1, 1, 0],
    })
    ew = early_warning(rows, outcomes, threshold=0.5, lead_days=30)
    # a and b could be flagged >= 30 days ahead (Jan 31 -> Mar 20); only a was. c closed 10 days after its cutoff.
    assert ew["early_warning_eligible_deals"] == 2 and ew["early_warning_recall_30d"] == 0.5
    assert ew["early_warning_precision"] == pytest.approx(4 / 5)


def test_a_study_resumes_to_its_target(tmp_path):
    x, y = _toy(400)
    pre = TabularPreprocessor(["meetings_30d", "meetings_prev_30d", "discount"], ["stage"]).fit(x)
    data = SearchData.cross_validated(pre.transform(x), y, ["stage"], 3, 0)
    settings = SearchSettings(["lightgbm", "xgboost"], 60, 10, 1, 0)
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = open_study("toy", url, 0, True, heartbeat_seconds=1)
    assert run_study(study, make_objective(data, settings), settings.families, trials=3) == 3
    again = open_study("toy", url, 0, True, heartbeat_seconds=1)
    assert run_study(again, make_objective(data, settings), settings.families, trials=5) == 2
    finished = [t for t in again.trials if t.state != optuna.trial.TrialState.FAIL]
    assert len(finished) == len(again.trials) == 5
    assert run_study(again, make_objective(data, settings), settings.families, trials=5) == 0
    assert {t.params["family"] for t in finished[:2]} == {"lightgbm", "xgboost"}  # default trials first
    # The resumed run draws new parameter sets, not again the random ones of the first run.
    assert len({tuple(sorted(t.params.items())) for t in finished}) == 5


def test_both_pruning_callbacks_report_at_the_same_steps_of_learning_progress(tmp_path):
    x, y = _toy(400)
    pre = TabularPreprocessor(["meetings_30d", "meetings_prev_30d", "discount"], ["stage"]).fit(x)
    data = SearchData.cross_validated(pre.transform(x), y, ["stage"], 3, 0)
    settings = SearchSettings(["lightgbm", "xgboost"], 100, 1000, 1, 0)  # no early stop before round 100
    study = open_study("reports", f"sqlite:///{tmp_path / 'optuna.db'}", 0, True)
    run_study(study, make_objective(data, settings), settings.families, trials=2)
    # Both default trials learn at 0.03: one step per 0.5 of shrinkage is one per 16.7 rounds, 6 in 100 rounds.
    steps = {t.params["family"]: sorted(t.intermediate_values) for t in study.trials}
    assert steps == {"lightgbm": [1, 2, 3, 4, 5, 6], "xgboost": [1, 2, 3, 4, 5, 6]}


def test_trials_with_different_learning_rates_report_at_equal_shrinkage(tmp_path):
    study = open_study("progress", f"sqlite:///{tmp_path / 'optuna.db'}", 0, True)
    reported = {}
    for rate in (0.05, 0.01):
        trial = study.ask()
        progress = ProgressSteps(trial, rate)
        for round_ in range(100):
            progress.report(float(round_), round_)
        study.tell(trial, 0.5)
        reported[rate] = study.trials[-1].intermediate_values
    # Step k is reported at the round where learning rate x rounds reaches k x 0.5: the 10k-th at 0.05, the
    # 50k-th at 0.01 (the values are 0-based round numbers).
    assert reported[0.05] == {k: 10.0 * k - 1 for k in range(1, 11)}
    assert reported[0.01] == {1: 49.0, 2: 99.0}


def test_the_pruner_waits_for_its_warm_up_then_stops_a_trial_below_the_median():
    study = optuna.create_study(direction="maximize", pruner=make_pruner())
    for value in (0.80, 0.81, 0.82, 0.83, 0.84):
        study.add_trial(optuna.trial.create_trial(
            value=value, intermediate_values={s: value - 0.1 + 0.002 * s for s in range(1, 40)}))
    trial = study.ask()
    pruned_at = None
    for step in range(1, 40):
        trial.report(0.5, step)  # far below every completed trial at every step
        if trial.should_prune():
            pruned_at = step
            break
    assert pruned_at == PRUNING_WARMUP_STEPS == 16


def test_the_objective_keeps_the_best_trials_out_of_fold_scores_equal_to_a_refit(tmp_path):
    x, y = _toy(400)
    pre = TabularPreprocessor(["meetings_30d", "meetings_prev_30d", "discount"], ["stage"]).fit(x)
    data = SearchData.cross_validated(pre.transform(x), y, ["stage"], 3, 0)
    settings = SearchSettings(["lightgbm", "xgboost"], 60, 10, 1, 0)
    study = open_study("oof", f"sqlite:///{tmp_path / 'optuna.db'}", 0, True)
    objective = make_objective(data, settings)
    run_study(study, objective, settings.families, trials=4)
    best = study.best_trial
    held = objective.out_of_fold(best.number)
    assert held is not None and objective.out_of_fold(best.number + 100) is None
    family, params = params_from_trial(best.params, float(np.mean(y)))
    refit = np.zeros(len(y))
    for train_idx, valid_idx in data.folds:
        model, _, _ = fit_trial_model(family, params, data, settings, train_idx, valid_idx)
        refit[valid_idx] = model.predict_proba(data.x_train.iloc[valid_idx])[:, 1]
    np.testing.assert_allclose(held[0], refit)  # what the trainer would otherwise fit a second time
    assert make_objective(data, settings).out_of_fold(best.number) is None  # a new process holds nothing

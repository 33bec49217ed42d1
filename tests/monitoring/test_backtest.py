"""The 12-month backtest on a small simulated organisation (fixed seed), against the simulator's ground truth, which
the loop never reads.

A competitor enters a region at month 6: the static champion degrades there, and the monthly loop is back at its
ROC AUC within two retrains and stays ahead. Two of the issue's targets are blocked on this simulator, and their
tests are strict xfails that say why: an alert within the month of the entry, and calibration back within two
retrains. A price shock raises the live WAPE and alerts (the target that WAPE returns within 10% is unreachable
by any forecast at the lower volume). A month whose export rewrites past outcomes is blocked on fairness and the
champion stays. The report is self-contained."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from monitoring.backtest import BacktestConfig, BacktestError, run_backtest
from salesml.settings import get_settings

# The shipped opportunity-loss config (90-day horizon, early warning 30 days before the close) with one trial and
# two labelled months each for test and validation, so that a retraining takes seconds.
CONFIG = """\
task: opportunity_loss
trials: 1
horizon_days: 90
test_cutoffs: 2
validation_cutoffs: 2
max_estimators: 200
families: [lightgbm]
early_warning_precision: 0.65
early_warning_days: 30
"""
ENTRY, REGION = "2025-06", "EMEA"
BACKTEST = BacktestConfig(start="2025-01", months=12, history_months=14, accounts=1000, seed=7,
                          scenarios=[f"competitor_entry@{ENTRY}:{REGION}"], tasks=["opportunity_loss"])


def _backtest(root: Path, config: BacktestConfig, training: str) -> dict:
    """Run ``config`` in a fresh home under ``root``, its task trained with the ``training`` config."""
    (root / "configs").mkdir()
    (root / "configs" / f"{config.tasks[0]}.yaml").write_text(training)
    settings = get_settings(home=root / "home")
    return {"root": root, "settings": settings, "report": run_backtest(settings, config, configs=root / "configs")}


@pytest.fixture(scope="module")
def entry(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return _backtest(tmp_path_factory.mktemp("backtest"), BACKTEST, CONFIG)


def _split(report, metric: str, region: str | None = None, arm: str = "loop") -> tuple[list, list]:
    months = [m["month"] for m in report.months if m["backtested"]]
    values = report.arm_series("opportunity_loss", arm, metric, region)
    at = months.index(ENTRY)
    return values[:at], values[at:]


def test_the_static_champion_degrades_where_the_competitor_entered(entry):
    report = entry["report"]
    before, after = _split(report, "roc_auc", REGION, "static")
    assert np.mean(after) < np.mean(before) - 0.02, (before, after)
    for region in (REGION, None):  # calibration, there and overall (overall ROC AUC barely moves: see the README)
        before, after = _split(report, "calibration_error", region, "static")
        assert np.mean(after) > np.mean(before) + 0.02, (region, before, after)
    # What any model could reach stays high: the scenario changed the problem, it did not make it unlearnable.
    _, ceiling = _split(report, "roc_auc", REGION, "oracle")
    assert min(ceiling) > 0.9


@pytest.mark.xfail(strict=True, reason="blocked: at the end of the entry's month 19% of the features drift within "
                   "its region (9-18% in the months before), the live figures wait for the 90-day horizon, and even "
                   "the losses landed so far do not stand out (EMEA's May-end scores lost 27 deals in June against "
                   "24.2 expected, ratio 1.11, p=0.29): the deals lose weeks after the buyer decides; see the README")
def test_monitoring_alerts_within_the_month_of_the_entry(entry):
    month = next(m for m in entry["report"].months if m["month"] == ENTRY)
    (task,) = month["monitoring"]["tasks"]
    assert task["alerts"], task


def test_early_outcomes_alert_in_the_entry_region_only_after_the_entry(entry):
    """The losses landed among the newest scores, region against region: no alert before the entry, and EMEA
    standing out once its deals lose to the entrant (months before the 90-day live figures can judge them)."""
    months = [m for m in entry["report"].months if m["backtested"]]
    at = [m["month"] for m in months].index(ENTRY)
    for k, month in enumerate(months):
        (task,) = month["monitoring"]["tasks"]
        early = [a for a in task["alerts"] if a["alert"] == "early_outcomes"]
        assert task["early"] and task["early"]["segments"], month["month"]  # judged every month
        if k <= at:
            assert not early, (month["month"], early)
        else:
            assert all(f"region {REGION}" in a["message"] for a in early), (month["month"], early)
    alerted = [m["month"] for m in months if any(a["alert"] == "early_outcomes" for a in
                                                  m["monitoring"]["tasks"][0]["alerts"])]
    first_drift = next(m["month"] for m in months if any(a["alert"] in ("drift", "segment_drift") for a in
                                                          m["monitoring"]["tasks"][0]["alerts"]))
    assert alerted and alerted[0] < first_drift, (alerted, first_drift)


def _recovered(report, metric: str) -> tuple[list, list, float]:
    """The loop's and the static champion's figure from the second month after the entry on (two retrainings,
    at the ends of the entry's month and the next, serve from then), and the loop's pre-entry level."""
    before, after = _split(report, metric, None, "loop")
    _, static = _split(report, metric, None, "static")
    return after[2:], static[2:], float(np.mean(before))


def test_the_loop_is_back_at_its_pre_entry_auc_within_two_retrains_and_stays_ahead_of_the_static_champion(entry):
    report = entry["report"]
    recovered, static, level = _recovered(report, "roc_auc")
    assert max(level - v for v in recovered) <= 0.02, (level, recovered)
    assert all(v > s for v, s in zip(recovered, static, strict=True)), (recovered, static)
    recovered, static, _ = _recovered(report, "calibration_error")
    assert all(v < s for v, s in zip(recovered, static, strict=True)), (recovered, static)


@pytest.mark.xfail(strict=True, reason="blocked: a candidate learns from cutoffs whose 90-day outcomes have landed, "
                   "less its test, validation and embargo windows (the second retrain's champion was tested on "
                   "2025-03..04, calibrated on 2025-01..02; see the premise test), and the gate blocks the "
                   "candidates miscalibrated in the entry's region (the fairness check by region); see the README")
def test_the_loop_is_back_at_its_pre_entry_calibration_within_two_retrains(entry):
    recovered, _, level = _recovered(entry["report"], "calibration_error")
    assert max(v - level for v in recovered) <= 0.02, (level, recovered)


def test_the_premise_of_the_blocked_calibration_target_no_post_entry_outcome_is_learnt_by_the_second_retrain(entry):
    """The champion serving after the second retrain learnt from cutoffs whose 90-day outcomes had landed: the
    newest of them, its test window's end, precedes the entry, so nothing it was fitted or calibrated on saw it."""
    months = {m["month"]: m for m in entry["report"].months if m["backtested"]}
    second = (pd.Period(ENTRY, "M") + 1).strftime("%Y-%m")
    windows = months[second]["trained_on"]["opportunity_loss"]
    assert {"train", "validation", "test", "data_window"} <= set(windows), windows
    assert windows["test"].split("..")[-1] < ENTRY <= second, windows
    assert windows["validation"].split("..")[-1] < windows["test"].split("..")[0], windows
    page = Path(entry["report"].report).read_text()
    assert f"validated {windows['validation']}" in page


def test_every_month_is_reported_with_its_champion_gate_and_roi_and_the_report_is_self_contained(entry):
    report, settings = entry["report"], entry["settings"]
    backtested = [m for m in report.months if m["backtested"]]
    assert [m["month"] for m in backtested] == BACKTEST.months_backtested()
    assert all(m["champions"].get("opportunity_loss") and m["retrain"] for m in backtested)
    assert all(m["delivered"]["rows"] == m["delivered"]["stored"] + m["delivered"]["quarantined"] for m in backtested)
    roi = report.roi["opportunity_loss"]
    assert set(roi) == {"loop", "static", "baseline"}
    for figures in roi.values():
        assert figures["caught_deals"] + figures["missed_deals"] == figures["lost_deals"] > 0
        assert figures["caught_value"] + figures["missed_value"] == pytest.approx(figures["lost_value"])
    page = Path(report.report).read_text()
    assert page.count("<svg") >= 4 and 'id="months"' in page
    assert not re.search(r"""(src|href)=["']https?://""", page)  # nothing fetched: viewable offline
    saved = json.loads((settings.home / "reports" / "backtest" / "backtest.json").read_text())
    assert saved["months"][-1]["month"] == backtested[-1]["month"]


def test_a_backtest_needs_a_fresh_home_and_known_tasks_and_scenarios(entry, tmp_path):
    with pytest.raises(BacktestError, match="fresh home"):
        run_backtest(entry["settings"], BACKTEST)
    fresh = get_settings(home=tmp_path / "fresh")
    with pytest.raises(BacktestError, match="covers opportunity_loss"):
        run_backtest(fresh, BACKTEST.model_copy(update={"tasks": ["sales_periods"]}))
    with pytest.raises(BacktestError, match="invalid scenario"):
        run_backtest(fresh, BACKTEST.model_copy(update={"scenarios": ["meteor@2025-01"]}))


# ------------------------------------------------------------------------------------------------ biased labels

BIASED = BacktestConfig(start="2025-01", months=3, history_months=14, accounts=1500, seed=7,
                        scenarios=["biased_history@2025-02"], tasks=["opportunity_loss"])


def test_a_month_whose_export_rewrites_the_labels_is_blocked_on_fairness_and_the_champion_stays(tmp_path):
    done = _backtest(tmp_path, BIASED, CONFIG)
    settings, report = done["settings"], done["report"]
    months = {m["month"]: m for m in report.months}
    (before,) = months["2025-01"]["retrain"]
    assert before["status"] == "promoted"
    (biased,) = months["2025-02"]["retrain"]
    assert biased["gate"] == "FAIL" and "fairness" in biased["failed_checks"] and biased["status"] == "blocked"
    assert months["2025-02"]["champions"]["opportunity_loss"] == before["version"]
    # The export of that month carried the rewritten deals as changed rows: delivered won at first, lost now.
    first = pd.read_parquet(settings.home / "inbox" / "2024-12-31" / "opportunities.parquet")
    rewritten = pd.read_parquet(settings.home / "inbox" / "2025-02-28" / "opportunities.parquet")
    won = set(first.loc[first["outcome"] == "won", "opportunity_id"])
    assert len(won & set(rewritten.loc[rewritten["outcome"] == "lost", "opportunity_id"])) > 50
    audit = json.loads((settings.home / "reports" / "risk.opportunity_loss" / biased["version"] / "audit.json")
                       .read_text())
    fairness = next(c for c in audit["checks"] if c["name"] == "fairness")
    assert "size_band" in {f["attribute"] for f in fairness["figures"]["failed"]}  # the attribute the bias hit


# ------------------------------------------------------------------------------------------------ a price shock

DEMAND_CONFIG = """\
task: product_demand
horizon: 4
max_horizon: 8
trials: 1
cv_windows: 2
test_windows: 1
calibration_windows: 3
price_columns: [price]
competitor_columns: [competitor_price]
planned_columns: [promotion]
static_columns: [category]
baselines: [seasonal_naive]
"""
SHOCK = "2025-06"
PRICE_SHOCK = BacktestConfig(start="2025-01", months=12, history_months=14, accounts=1000, seed=7,
                             scenarios=[f"price_shock@{SHOCK}"], tasks=["product_demand"])


@pytest.fixture(scope="module")
def shock(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return _backtest(tmp_path_factory.mktemp("shock"), PRICE_SHOCK, DEMAND_CONFIG)


def _demand(report, arm: str, field: str = "wape") -> tuple[list, list]:
    months = [m["month"] for m in report.months if m["backtested"]]
    rows = {r["month"]: r[field] for r in report.arms["product_demand"] if r["arm"] == arm}
    values = [rows[m] for m in months]
    at = months.index(SHOCK)
    return values[:at], values[at:]


def test_a_price_shock_raises_the_live_wape_and_alerts_in_its_month(shock):
    months = {m["month"]: m for m in shock["report"].months if m["backtested"]}
    live = {k: m["monitoring"]["tasks"][0]["live"]["wape"] for k, m in months.items()
            if m["monitoring"]["tasks"][0]["live"]}
    before = [v for k, v in live.items() if k < SHOCK]
    assert live[SHOCK] > max(before), live  # judged at the end of the month: its sales, the May forecasts
    alerts = {a["alert"] for a in months[SHOCK]["monitoring"]["tasks"][0]["alerts"]}
    assert alerts & {"live_metric", "intervals"}, alerts
    # The models read prices and adapt; last year's sales (no model) do not.
    _, loop = _demand(shock["report"], "loop")
    _, naive = _demand(shock["report"], "baseline")
    assert np.mean(naive) > np.mean(loop) + 0.1, (naive, loop)
    roi = shock["report"].roi["product_demand"]
    assert roi["loop"]["total_cost"] < roi["baseline"]["total_cost"]


@pytest.mark.xfail(strict=True, reason="blocked: after the shock the units sold fall by about 40%, and the Poisson "
                   "noise of fewer units raises the WAPE any forecast reaches by about sqrt(1/0.6) = 1.28; see the "
                   "premise test below and the README's backtest figures")
def test_the_retrained_wape_returns_within_ten_percent_of_its_pre_shock_level_within_two_retrains(shock):
    before, after = _demand(shock["report"], "loop")
    assert max(after[2:]) <= 1.10 * np.mean(before), (before, after)


def test_the_premise_of_the_blocked_target_the_shock_cuts_the_units_sold(shock):
    before, after = _demand(shock["report"], "loop", "actual_units")
    assert np.mean(after[1:]) < 0.75 * np.mean(before), (before, after)

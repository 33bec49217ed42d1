"""The 12-month backtest on a small simulated organisation (fixed seed): a competitor enters a region at month 6.

The static champion degrades there, monitoring alerts within the month of the entry, and the monthly loop comes
back; the report is self-contained. The figures are the simulator's ground truth, which the loop never reads."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
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


@pytest.fixture(scope="module")
def entry(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("backtest")
    (root / "configs").mkdir()
    (root / "configs" / "opportunity_loss.yaml").write_text(CONFIG)
    settings = get_settings(home=root / "home")
    report = run_backtest(settings, BACKTEST, configs=root / "configs")
    return {"root": root, "settings": settings, "report": report}


def _split(report, metric: str, region: str | None = None, arm: str = "loop") -> tuple[list, list]:
    months = [m["month"] for m in report.months if m["backtested"]]
    values = report.arm_series("opportunity_loss", arm, metric, region)
    at = months.index(ENTRY)
    return values[:at], values[at:]


def test_the_static_champion_degrades_where_the_competitor_entered(entry):
    report = entry["report"]
    for region in (REGION, None):
        before, after = _split(report, "roc_auc", region, "static")
        assert np.mean(after) < np.mean(before) - 0.02, (region, before, after)
        before, after = _split(report, "calibration_error", region, "static")
        assert np.mean(after) > np.mean(before), (region, before, after)


def test_monitoring_alerts_within_the_month_of_the_entry(entry):
    month = next(m for m in entry["report"].months if m["month"] == ENTRY)
    (task,) = month["monitoring"]["tasks"]
    assert {a["alert"] for a in task["alerts"]} & {"drift", "segment_drift"}, task


def test_the_loop_comes_back_within_two_retrains_and_stays_ahead_of_the_static_champion(entry):
    report = entry["report"]
    for metric, higher in (("roc_auc", True), ("calibration_error", False)):
        before, after = _split(report, metric, None, "loop")
        level = np.mean(before)
        _, static = _split(report, metric, None, "static")
        # Two retrainings after the entry (at the ends of its month and the next) serve from the month after that.
        recovered = after[2:]
        gap = [(level - v) if higher else (v - level) for v in recovered]
        assert max(gap) <= 0.02, (metric, level, recovered)
        ahead = [(v - s) if higher else (s - v) for v, s in zip(recovered, static[2:], strict=True)]
        assert min(ahead) > 0, (metric, recovered, static[2:])


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
        run_backtest(fresh, BACKTEST.model_copy(update={"tasks": ["customer_value"]}))
    with pytest.raises(BacktestError, match="invalid scenario"):
        run_backtest(fresh, BACKTEST.model_copy(update={"scenarios": ["meteor@2025-01"]}))

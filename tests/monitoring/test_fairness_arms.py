"""The fairness check on organisations the issue reported: a clean history passes, a biased one fails on size.

The simulator's seed 8 at 1,200 accounts is the organisation the old gate failed although its model was
calibrated in every region. Together with the seed-7 pair of ``test_gate.py`` (1,500 accounts) the suite runs two
clean/biased pairs on fixed seeds; ``experiments/benchmarks/fairness.py`` runs five.
"""

from __future__ import annotations

import pytest

import monitoring.gate as gate
from salesml.settings import get_settings
from tests.monitoring.test_gate import make_home, train


def _fairness(tmp_path, scenarios: list[str]) -> dict:
    home = make_home(tmp_path, scenarios, seed=8, accounts=1200)
    version = train(home)
    outcome = gate.audit_version(get_settings(home=home), "risk.opportunity_loss", version)
    return next(c for c in outcome.result["checks"] if c["name"] == "fairness")


@pytest.mark.slow
def test_seed_8_clean_organisation_passes_although_its_regions_lose_at_different_rates(tmp_path):
    fairness = _fairness(tmp_path, [])
    assert fairness["status"] == "pass", fairness["reason"]
    region = fairness["figures"]["attributes"]["region"]
    rates = {g["group"]: g["observed_rate"] for g in region["by_group"]}
    assert rates["EMEA"] - rates["APAC"] > 0.05  # a real difference between regions...
    assert region["demographic_parity_ratio"] < 0.8  # ...that the old four-fifths gate failed
    assert all(abs(g["calibration_gap"]) < 0.05 for g in region["by_group"] if g["count"] >= 100)


@pytest.mark.slow
def test_seed_8_biased_history_fails_on_size_band_with_the_figure_that_failed(tmp_path):
    fairness = _fairness(tmp_path, ["biased_history"])
    assert fairness["status"] == "fail"
    failed = fairness["figures"]["failed"]
    assert failed and {f["attribute"] for f in failed} == {"size_band"}, fairness["reason"]
    size = fairness["figures"]["attributes"]["size_band"]
    small = next(g for g in size["by_group"] if g["group"] == "small")
    assert small["calibration_gap"] > 0.05 and "group small is miscalibrated" in fairness["reason"]
    assert f"{small['calibration_gap']:+.3f}" in fairness["reason"]  # the figure, not only the verdict

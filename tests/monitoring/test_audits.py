"""The audit steps on constructed data: the metric the policy names, and fairness that separates bias from real
differences between groups."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from monitoring.audits import (
    CheckResult,
    audit_fairness,
    audit_performance,
    audit_proxies,
    fairness_against_champion,
)
from monitoring.policy import AcknowledgedProxy, DemographicParityPolicy, FairnessPolicy, PerformancePolicy
from training.registry import get_kind

RISK = get_kind("risk")


def test_the_performance_check_computes_the_metric_the_policy_names_in_its_direction():
    y = np.array([0, 0, 1, 1, 0, 1, 0, 1])
    good = np.array([0.1, 0.2, 0.8, 0.9, 0.3, 0.7, 0.2, 0.6])
    weak = np.array([0.6, 0.2, 0.4, 0.9, 0.7, 0.3, 0.2, 0.6])
    policy = PerformancePolicy(min_value=0.6, max_degradation=0.01, min_improvement=0.0)
    assert audit_performance(y, weak, good, policy, RISK.metric("roc_auc")).status == "fail"
    assert audit_performance(y, good, good, policy, RISK.metric("roc_auc")).status == "pass"
    assert audit_performance(y, good, weak, policy.model_copy(update={"min_improvement": 0.5}),
                             RISK.metric("roc_auc")).status == "review"
    assert audit_performance(y, np.full(8, 0.5), None, policy, RISK.metric()).status == "fail"
    # log loss: lower is better, and the bound is a ceiling.
    loss = PerformancePolicy(metric="log_loss", min_value=0.5, max_degradation=0.01)
    better = audit_performance(y, good, weak, loss, RISK.metric("log_loss"))
    assert better.status == "pass" and better.figures["metric"] == "log_loss"
    assert better.figures["candidate"] < better.figures["champion"] and better.figures["improvement"] > 0
    assert audit_performance(y, weak, good, loss, RISK.metric("log_loss")).status == "fail"
    assert "ceiling" in audit_performance(y, np.full(8, 0.99), None, loss, RISK.metric("log_loss")).reason
    pr = audit_performance(y, good, None, PerformancePolicy(metric="pr_auc"), RISK.metric("pr_auc"))
    assert pr.figures["metric"] == "pr_auc" and "PR AUC" in pr.reason


def _groups(seed: int, rates: dict[str, float], n: int = 3000, inflate: dict[str, float] | None = None):
    """Deals of several groups whose true loss rates differ; the model's probability is the truth (calibrated
    in every group) unless ``inflate`` adds to a group's probabilities; outcomes are drawn from the truth."""
    rng = np.random.default_rng(seed)
    groups = rng.choice(list(rates), n)
    base = np.array([rates[g] for g in groups])
    truth = np.clip(base + rng.normal(0, 0.2, n), 0.02, 0.98)
    y = (rng.random(n) < truth).astype(int)
    p = truth + np.array([(inflate or {}).get(g, 0.0) for g in groups])
    frame = pd.DataFrame({"opportunity_id": [f"O{i}" for i in range(n)], "region": groups})
    return frame, y, np.clip(p, 0.01, 0.99)


def test_a_calibrated_model_of_groups_whose_outcomes_really_differ_passes():
    frame, y, p = _groups(1, {"APAC": 0.22, "EMEA": 0.38, "NA": 0.31})
    result = audit_fairness(frame, y, p, 0.35, ["region"], FairnessPolicy(), seed=0, entity="opportunity_id")
    figures = result.figures["attributes"]["region"]
    # What the old gate failed: parity of selection rates and raw error rates both track the real difference.
    assert figures["demographic_parity_ratio"] < 0.8 and figures["equalized_odds_difference"] > 0.1
    assert result.status == "pass", result.reason
    assert abs(figures["calibration"]["gap"]) < 0.05 and figures["amplification"]["amplification"] < 0.1


def test_a_group_whose_risk_is_overstated_fails_calibration_and_amplification_with_its_figures():
    frame, y, p = _groups(2, {"small": 0.31, "mid": 0.31, "enterprise": 0.27}, inflate={"small": 0.12})
    result = audit_fairness(frame, y, p, 0.35, ["region"], FairnessPolicy(), seed=0, entity="opportunity_id")
    assert result.status == "fail"
    failed = {f["criterion"] for f in result.figures["failed"]}
    assert {"calibration", "amplification"} <= failed
    assert "group small is miscalibrated" in result.reason and "widens the gap" in result.reason
    mitigation = result.figures["mitigation"]
    assert mitigation["attribute"] == "region" and "equalized odds" in mitigation["method"]
    assert set(mitigation["thresholds"]) == {"small", "mid", "enterprise"}
    assert mitigation["thresholds"]["small"] > mitigation["thresholds"]["enterprise"]  # small deals need more


def test_a_group_overstated_within_the_calibration_tolerance_fails_on_the_errors_the_model_adds():
    frame, y, p = _groups(3, {"small": 0.3, "mid": 0.25, "enterprise": 0.22}, n=4000, inflate={"small": 0.04})
    result = audit_fairness(frame, y, p, 0.4, ["region"], FairnessPolicy(), seed=0, entity="opportunity_id")
    figures = result.figures["attributes"]["region"]
    assert abs(figures["calibration"]["gap"]) < 0.05  # calibration alone would pass it
    failed = [f for f in result.figures["failed"] if f["criterion"] == "error_rates"]
    assert failed and failed[0]["figure"] > 0.10, result.reason
    by_group = {row["group"]: row for row in figures["by_group"]}
    # Recalibrated on its own outcomes, small's scores select fewer deals: the excess is the model's doing.
    assert by_group["small"]["tpr_excess"] > 0.05 and abs(by_group["enterprise"]["tpr_excess"]) < 0.05
    assert "recalibrated on its outcomes" in result.reason
    clean = audit_fairness(*_groups(3, {"small": 0.3, "mid": 0.25, "enterprise": 0.22}, n=4000), 0.4, ["region"],
                           FairnessPolicy(), seed=0, entity="opportunity_id")
    assert clean.status == "pass", clean.reason


def test_demographic_parity_gates_only_where_the_policy_asks_for_parity_of_outcomes():
    frame, y, p = _groups(3, {"APAC": 0.2, "EMEA": 0.4})
    parity = DemographicParityPolicy(gate=True, reason="leads are allocated evenly across regions")
    result = audit_fairness(frame, y, p, 0.35, ["region"], FairnessPolicy(demographic_parity=parity), seed=0)
    assert result.status == "fail" and "parity is required: leads are allocated evenly" in result.reason
    assert result.figures["mitigation"]["method"].startswith("fairlearn ThresholdOptimizer (demographic parity)")
    assert audit_fairness(frame, y, p, 0.35, ["region"], FairnessPolicy(), seed=0).status == "pass"
    with pytest.raises(ValueError, match="reason"):
        DemographicParityPolicy(gate=True)


def test_gaps_in_small_groups_or_by_chance_are_reported_not_judged():
    frame, y, p = _groups(4, {"A": 0.3, "B": 0.3}, n=150, inflate={"B": 0.08})
    result = audit_fairness(frame, y, p, 0.35, ["region"], FairnessPolicy(), seed=0)
    assert result.figures["attributes"]["region"]["groups_judged"] == 0
    # Nothing could be compared: a validator weighs that, the check does not pass it silently.
    assert result.status == "review" and "could not be judged" in result.reason and "region: 0 group(s)" in result.reason


def test_rows_whose_attribute_is_unknown_make_no_feature_a_proxy():
    rng = np.random.default_rng(1)
    size = pd.Series(rng.choice(["small", "mid", "enterprise"], 600)).astype("object")
    lead = rng.random(600) < 0.3  # leads without an account: no size band, no account facts
    size[lead] = None
    is_customer = pd.Series(np.where(lead, np.nan, 0.0))  # every account a prospect; missing on leads
    features = pd.DataFrame({"is_customer": is_customer, "meetings": rng.poisson(3, 600).astype(float)})
    result = audit_proxies(pd.DataFrame({"size_band": size}), ["size_band"], features, FairnessPolicy())
    assert result.status == "pass", result.reason


def test_acknowledged_proxies_are_listed_with_their_reason_and_do_not_ask_for_review():
    rng = np.random.default_rng(0)
    size = pd.Series(rng.choice(["small", "mid", "enterprise"], 600))
    features = pd.DataFrame({"employee_band": size.map({"small": "1-49", "mid": "50-999", "enterprise": "1000+"}),
                             "meetings": rng.poisson(3, 600).astype(float)})
    frame = pd.DataFrame({"size_band": size})
    flagged = audit_proxies(frame, ["size_band"], features, FairnessPolicy())
    assert flagged.status == "review" and "employee_band~size_band" in flagged.reason
    known = AcknowledgedProxy(feature="employee_band", attribute="size_band", by="vera",
                              reason="the same fact banded twice")
    accepted = audit_proxies(frame, ["size_band"], features, FairnessPolicy(acknowledged_proxies=[known]))
    assert accepted.status == "pass" and "acknowledged: employee_band~size_band" in accepted.reason
    (proxy,) = accepted.figures["acknowledged"]
    assert proxy["strength"] > 0.99 and proxy["reason"] == "the same fact banded twice" and proxy["acknowledged_by"] == "vera"


def _failed(*failures: tuple[str, str, float]) -> CheckResult:
    return CheckResult("fairness", "fail", {"failed": [{"attribute": a, "criterion": c, "figure": f}
                                                       for a, c, f in failures]}, "a reason")


def test_a_fairness_failure_the_champion_shares_at_least_as_badly_asks_for_review_instead_of_blocking():
    candidate = _failed(("region", "calibration", -0.12), ("region", "error_rates", 0.20))
    # After a market change in one region both models miscalibrate it; the candidate less.
    worse_champion = _failed(("region", "calibration", -0.18), ("region", "error_rates", 0.25))
    judged = fairness_against_champion(candidate, worse_champion)
    assert judged.status == "review" and "champion fails the same criteria" in judged.reason
    assert judged.figures["versus_champion"]["region calibration"] == {"candidate": 0.12, "champion": 0.18}
    # A criterion only the candidate fails, or fails worse, still blocks: biased labels teach the candidate a gap
    # the champion does not have.
    assert fairness_against_champion(candidate, _failed(("region", "calibration", -0.18))).status == "fail"
    assert fairness_against_champion(candidate, _failed(("region", "calibration", -0.10),
                                                        ("region", "error_rates", 0.25))).status == "fail"
    passing = CheckResult("fairness", "pass", {"failed": []}, "fine")
    assert fairness_against_champion(candidate, passing).status == "fail"
    assert fairness_against_champion(candidate, None) is candidate
    assert fairness_against_champion(passing, worse_champion) is passing


# ------------------------------------------------------------------------------------------------ drift


@pytest.mark.parametrize("rows", [300, 5000])  # below and above the 1,000 rows where Evidently changes its tests
def test_column_drift_is_evidently_drift_preset_figure_for_figure(rows):
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    from monitoring.audits import column_drift

    rng = np.random.default_rng(0)
    reference = pd.DataFrame({"a": rng.normal(size=rows), "b": rng.poisson(3, rows).astype(float),
                              "c": rng.choice(list("xyz"), rows), "d": rng.choice(list("pq"), rows)})
    current = pd.DataFrame({"a": rng.normal(0.1, size=rows // 2), "b": rng.poisson(3.3, rows // 2).astype(float),
                            "c": rng.choice(list("xyzw"), rows // 2), "d": rng.choice(list("pq"), rows // 2,
                                                                                     p=[0.6, 0.4])})
    current.loc[:5, "a"] = np.nan
    definition = DataDefinition(numerical_columns=["a", "b"], categorical_columns=["c", "d"])
    snapshot = Report([DataDriftPreset()]).run(
        current_data=Dataset.from_pandas(current, data_definition=definition),
        reference_data=Dataset.from_pandas(reference, data_definition=definition)).dict()
    preset = {m["config"]["column"]: m for m in snapshot["metrics"] if m["config"].get("type", "").endswith("ValueDrift")}
    assert set(preset) == set("abcd")
    for column in "abcd":
        method, score, threshold, _ = column_drift(reference[column], current[column], column in "cd")
        config = preset[column]["config"]
        assert (method, threshold) == (config["method"], float(config["threshold"])), column
        assert score == pytest.approx(float(preset[column]["value"]), rel=1e-12), column

"""Value audits: the purchase calibration check and the value policy (the gate against a champion runs end to
end in tests/e2e/test_service.py)."""

from __future__ import annotations

import pandas as pd

from monitoring.policy import CalibrationPolicy, load_policy
from monitoring.value_audits import audit_purchase_calibration

TABLE = pd.DataFrame({"label": ["0", "1", "2+"], "customers": [400, 200, 300], "expected": [0.3, 0.8, 3.0],
                      "actual": [0.1, 0.8, 3.1]})


def test_calibration_judges_the_total_and_each_group_with_enough_purchases():
    metrics = {"holdout_purchases_expected": 1070.0, "holdout_purchases_actual": 1130.0}
    passed = audit_purchase_calibration(metrics, TABLE, CalibrationPolicy())
    # Group 0 is 200% off, but on 40 actual purchases: reported in the table, not judged.
    assert passed.status == "pass" and passed.figures["groups_judged"] == 2, passed.reason
    assert passed.figures["worst_group"] == "2+" and "calibration/holdout" in passed.tables
    strict = audit_purchase_calibration(metrics, TABLE, CalibrationPolicy(min_group_purchases=10))
    assert strict.status == "review" and strict.figures["worst_group"] == "0"
    off = audit_purchase_calibration({**metrics, "holdout_purchases_expected": 1400.0}, TABLE, CalibrationPolicy())
    assert off.status == "review" and "23.9% off" in off.reason
    assert audit_purchase_calibration({}, TABLE, CalibrationPolicy(on_fail="fail")).status == "fail"


def test_the_value_policy_declares_fairness_and_explanations_not_applicable_with_reasons():
    policy = load_policy("customer_value")
    assert policy.kind == "value" and policy.running() == ["performance", "drift", "calibration"]
    assert policy.check("performance").metric == "wape"
    assert "purchase history" in policy.not_applicable()["fairness"]
